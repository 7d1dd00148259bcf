"""Timing helpers for the benchmarks: warm-up, synchronised clocks, medians, peak memory, tables."""
from __future__ import annotations

import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int = 3, warmup: int = 1) -> dict:
    """Median wall time of fn() over `repeats` runs after `warmup` runs (device synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"median_s": statistics.median(times), "times_s": times, "peak_gib": peak}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_report(rows: list[dict], columns: list[str], title: str, out: str | None, meta: dict) -> None:
    """Print a Markdown table and write rows + meta as JSON."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(fmt_cell(r.get(c)) for c in columns) + " |")
    meta = {**meta, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__}
    print("\n" + ", ".join(f"{k}: {v}" for k, v in meta.items()))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


def fmt_cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)

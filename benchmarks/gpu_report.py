"""One table out of the benchmark JSONs of a folder (benchmarks/gpu_check.sh writes them).

    python benchmarks/gpu_report.py <folder>        # -> <folder>/summary.json and <folder>/summary.md

Each `<name>.json` (written by bench_sampling.py or bench_train.py) becomes a block of rows;
the Markdown file is dated and names the device and the torch version.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fmt_cell  # noqa: E402

COLUMNS = ("benchmark", "path", "steps", "median_s", "speedup", "samples_per_s", "peak_gib", "rel_err")


def summarise(folder: Path) -> dict:
    runs = []
    for path in sorted(folder.glob("*.json")):
        if path.name == "summary.json":
            continue
        data = json.loads(path.read_text())
        runs.append({"benchmark": path.stem, "meta": data["meta"], "rows": data["rows"]})
    if not runs:
        raise SystemExit(f"error: {folder}: no benchmark results (*.json) to summarise")
    meta = runs[0]["meta"]
    lines = [f"# GPU check, {meta.get('date', '?')[:10]}: {meta.get('device', '?')}, torch {meta.get('torch', '?')}", ""]
    for run in runs:
        m = run["meta"]
        setting = ", ".join(f"{k} {m[k]}" for k in ("model", "batch", "seconds", "T", "sampler", "w_asr") if k in m)
        # rows with a `path` (sampling, training) share the columns; others (bench_buckets.py) keep their own
        cols = list(COLUMNS[1:]) if all("path" in r for r in run["rows"]) else list(dict.fromkeys(
            k for r in run["rows"] for k in r))
        lines += [f"## {run['benchmark']} ({setting})", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(fmt_cell(r.get(c)) for c in cols) + " |" for r in run["rows"]]
        lines.append("")
    summary = {"meta": meta, "runs": runs}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/gpu_report.py <folder of benchmark JSONs>")
    summarise(Path(sys.argv[1]))

"""The sampling benchmark runs end to end on CPU with tiny models and writes its JSON."""
import json
import math

from benchmarks import bench_sampling


def test_bench_sampling_tiny(tmp_path):
    out = tmp_path / "sampling.json"
    rows = bench_sampling.main(["--tiny", "--device", "cpu", "--seconds", "0.4", "--batch", "2", "--repeats", "1",
                                "--steps", "3", "--T", "8", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["rows"] == rows and data["meta"]["model"] == "tiny" and data["meta"]["T"] == 8
    assert data["meta"]["asr"] and data["meta"]["asr_start"] == round(270 * 8 / 400)
    paths = [r["path"] for r in rows]
    assert paths[0].startswith("reference") and paths[1] == "ancestral (fp32)"
    assert {"ddim (fp32)", "dpm_solver++ 2M (fp32)", "dpm_solver++ 2M (bf16 autocast)"} <= set(paths)
    assert len(rows) == 7 and all(r["median_s"] > 0 and r["speedup"] > 0 for r in rows)
    assert [r["steps"] for r in rows] == [8, 8, 8, 3, 3, 3, 3]
    # the optimized sampler reproduces the reference path; bf16 stays close to fp32
    assert rows[1]["rel_err"] < 1e-5
    bf16 = [r for r in rows if "bf16" in r["path"]]
    assert len(bf16) == 3 and all(0 < r["rel_err"] < 0.1 and math.isfinite(r["rel_err"]) for r in bf16)

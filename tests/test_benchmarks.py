"""The benchmarks run end to end on CPU with a tiny model (so a GPU run is not the first run)."""
import json

from benchmarks import bench_train


def test_bench_train_tiny(tmp_path, tiny_corpus):
    out = tmp_path / "train.json"
    rows = bench_train.main(["--tiny", "--device", "cpu", "--iters", "1", "--repeats", "1", "--batch", "2",
                             "--workers", "0", "--data-root", str(tiny_corpus), "--out", str(out)])
    assert [r["path"] for r in rows][:2] == ["reference (fp32, eager)", "optimized (bf16 autocast)"]
    assert all(r["samples_per_s"] > 0 for r in rows) and len(rows) == 3
    assert json.loads(out.read_text())["meta"]["model"] == "tiny"

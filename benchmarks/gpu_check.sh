#!/usr/bin/env bash
# Every GPU measurement of the project in one command (one NVIDIA GPU, no network needed).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # on a GPU machine: full size, under ~8 minutes
#   bash benchmarks/gpu_check.sh --tiny [OUT_DIR]     # tiny models, seconds (CPU; what CI runs)
#
# 1. the tests marked `cuda` (models on CUDA against CPU, a guided step without host
#    synchronisation, bf16 against fp32 over 400 steps); not run on a machine without CUDA;
# 2. guided sampling (benchmarks/bench_sampling.py): one 3 s clip, one 8 s clip and a batch of
#    32 three-second clips, ancestral 400 steps and DPM-Solver++ 25 steps, both guidances, each
#    against the reference-style path in the same run where it fits the time;
# 3. length buckets (benchmarks/bench_buckets.py): a 2.3 s clip padded to its 3 s bucket, the
#    sampling time per step unpadded and padded and how much the output changes;
# 4. MelGen training steps (benchmarks/bench_train.py), with and without loading from disk
#    (a small random corpus written here first).
# Writes <name>.json per benchmark, summary.json and summary.md (one dated table) into OUT_DIR
# (default benchmarks/results/gpu_check_<date>). Python packages the GPU machine lacks travel as
# wheels: docs/performance.md, "A GPU machine without network".
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0
if [ "${1:-}" = "--tiny" ]; then TINY=1; shift; fi
OUT="${1:-benchmarks/results/gpu_check_$(date +%Y%m%d_%H%M%S)}"
PY=${PYTHON:-python3}
# the full run measures a GPU: without one, say so in one line (not a traceback from torch) and stop
HAVE_CUDA=0
$PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && HAVE_CUDA=1
if [ $TINY = 0 ] && [ $HAVE_CUDA = 0 ]; then
  echo "error: benchmarks/gpu_check.sh: needs a CUDA GPU (PyTorch sees none here); 'bash benchmarks/gpu_check.sh --tiny' runs the same checks on CPU with tiny models" >&2
  exit 2
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [ $HAVE_CUDA = 1 ]; then
  echo "== tests marked cuda"
  set +e
  $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py tests/test_buckets.py 2>&1 | tee "$OUT/tests_cuda.log"
  rc=${PIPESTATUS[0]}
  set -e
  # 5 = no test collected / all deselected: not a failure of this script
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then echo "error: the cuda tests failed (see $OUT/tests_cuda.log)" >&2; exit "$rc"; fi
else   # --tiny on a machine without CUDA: every one of them would skip
  echo "== tests marked cuda: skipped (PyTorch sees no CUDA GPU)" | tee "$OUT/tests_cuda.log"
fi

CORPUS="$OUT/corpus"
$PY benchmarks/bench_corpus.py "$CORPUS" --clips $([ $TINY = 1 ] && echo 4 || echo 64)

if [ $TINY = 1 ]; then
  # tiny: every stage once, no warm-up run (its times mean nothing; tests/test_gpu_check.py runs this)
  S="--tiny --device cpu --repeats 1 --warmup 0 --T 4 --steps 2"
  echo "== sampling (tiny)"
  $PY benchmarks/bench_sampling.py $S --seconds 0.4 --batch 1 --out "$OUT/sampling_1x3s.json"
  $PY benchmarks/bench_sampling.py $S --seconds 0.8 --batch 1 --no-reference --out "$OUT/sampling_1x8s.json"
  $PY benchmarks/bench_sampling.py $S --seconds 0.4 --batch 2 --out "$OUT/sampling_32x3s.json"
  echo "== length buckets (tiny)"
  $PY benchmarks/bench_buckets.py --device cpu --model tiny --T 4 --repeats 1 --seconds 0.3 --bucket 10 \
      --out "$OUT/buckets.json"
  echo "== training (tiny)"
  $PY benchmarks/bench_train.py --tiny --device cpu --iters 1 --repeats 1 --warmup 0 --batch 2 --workers 0 \
      --data-root "$CORPUS" --out "$OUT/train.json"
else
  S="--device cuda --repeats 2 --steps 25"
  echo "== sampling"
  $PY benchmarks/bench_sampling.py $S --seconds 3 --batch 1 --out "$OUT/sampling_1x3s.json"
  $PY benchmarks/bench_sampling.py $S --seconds 8 --batch 1 --no-reference --out "$OUT/sampling_1x8s.json"
  $PY benchmarks/bench_sampling.py $S --seconds 3 --batch 32 --ref-clips 1 --out "$OUT/sampling_32x3s.json"
  echo "== length buckets"
  $PY benchmarks/bench_buckets.py --device cuda --model published --T 400 --sampler dpm_solver --steps 25 \
      --repeats 3 --seconds 2.3 --bucket 25 --full-vocoder --out "$OUT/buckets.json"
  echo "== training"
  $PY benchmarks/bench_train.py --device cuda --iters 20 --repeats 2 --workers 8 --data-root "$CORPUS" \
      --out "$OUT/train.json"
fi
rm -rf "$CORPUS"
$PY benchmarks/gpu_report.py "$OUT"
echo "wrote $OUT/summary.md"

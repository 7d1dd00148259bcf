"""What a segment's length costs: one guided denoising step (MelGen with both guidances and the ASR gradient, the
step every sampler repeats) at the published model size, per second of audio, for several segment lengths.
The ASR's attention grows with the square of the length, MelGen's convolutions linearly; this is what
generate.segment_seconds was chosen with (docs/performance.md, "Segment length").

    python benchmarks/bench_segment_length.py --device cpu --seconds 2.5 5 10 20 40
    python benchmarks/bench_segment_length.py --device cuda --batch 8

Weights are random (the time does not depend on them). Prints one row per length: median seconds of a step
over --repeats (after a warm-up), seconds per second of audio, peak memory (CUDA: GPU; CPU: resident set).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.bench_sampling import build_models, inference_copy, random_inputs  # noqa: E402
from models.diffusion.guidance import Guidance, asr_guidance  # noqa: E402
from models.diffusion.schedule import DiffusionSchedule  # noqa: E402
from utils.config import compose_config  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, nargs="+", default=[2.5, 5, 10, 20, 40])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cfg = compose_config([])
    margs = argparse.Namespace(melgen_ckpt=None, asr_ckpt=None, tiny=False, w_asr=1.5, batch=args.batch)
    melgen, asr = build_models(cfg, margs, device)
    melgen = inference_copy(melgen)
    sch = DiffusionSchedule.from_config(cfg.diffusion, device)
    rows = []
    for seconds in args.seconds:
        margs.seconds = seconds
        mouth, face, tokens, tok_len = random_inputs(cfg, margs, device, int(cfg.asr.vocab_size))
        eps = Guidance(melgen, sch.alpha_bars, mouth, face, w_video=2.0, w_asr=1.5, asr_start=270,
                       grad_fn=asr_guidance(asr, tokens, tok_len))
        x = torch.randn(args.batch, int(cfg.audio.n_mels), mouth.shape[2] * melgen.upsample_factor, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for k in range(args.repeats + 1):
            start = time.perf_counter()
            eps(x, 100)   # a step with the ASR term (t <= asr_start)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if k:
                times.append(time.perf_counter() - start)
        step = sorted(times)[len(times) // 2]
        peak = (torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
        rows.append({"seconds": seconds, "batch": args.batch, "step_s": round(step, 4),
                     "step_s_per_audio_s": round(step / (seconds * args.batch), 4), "peak_gib": round(peak, 2)})
        r = rows[-1]
        print(f"{seconds:5g} s x {args.batch}: {r['step_s']:.3f} s per guided step, {r['step_s_per_audio_s']:.4f} s "
              f"per second of audio, peak {'GPU' if device.type == 'cuda' else 'RSS'} {r['peak_gib']:.2f} GiB",
              flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": str(device), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Length buckets: what padding a clip to its bucket costs in speed, and what it changes in the output.

    python benchmarks/bench_buckets.py                                  # tiny MelGen, CPU: 2.3 s clip vs its 3 s bucket
    python benchmarks/bench_buckets.py --model mini --T 400 --sampler ancestral
    python benchmarks/bench_buckets.py --device cuda --model published --sampler dpm_solver --steps 25

One clip of --seconds (video frames rounded) goes through GenerationCore.generate twice, from the
same per-clip generator: unpadded (generate.bucket_frames=0) and padded to its --bucket (video frames;
25 = 1 s). Random weights (MelGen's zero-initialised output layer drawn at random so eps is not 0), a
small random ASR (the configured size with --model small / published) guiding with a stand-in
tokenizer, a small random HiFi-GAN (--full-vocoder: the published size). Reports:

  timing   time of one Sampler.sample call unpadded and padded, per step (median and fastest of
           --repeats interleaved runs, after the first call of each shape, which captures the steps on
           CUDA and is reported apart), and their ratio (the speed cost of padding);
  output   over the clip's real frames: max and mean |difference| of the log-mel (and of the normalised
           mel the sampler returns), the number of trailing frames where it exceeds 1e-3, and the vocoded
           audio's max |difference| and rel. L2 difference.

--compile additionally times MelGen's denoiser under torch.compile (inside the same sampler) against
eager. Prints a table, writes JSON (--out).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.bench_sampling import TINY_ASR, inference_copy, rel_err  # noqa: E402
from benchmarks.common import device_name, sync, write_report  # noqa: E402
from models.asr.model import build_asr  # noqa: E402
from models.diffusion.samplers import Sampler  # noqa: E402
from models.diffusion.schedule import DiffusionSchedule  # noqa: E402
from models.hifigan.generator import HiFiGANGenerator  # noqa: E402
from models.melgen.checkpoint import build_melgen  # noqa: E402
from pipelines.generation import GenerationCore, bucketed, clip_generator  # noqa: E402
from utils.config import compose_config  # noqa: E402

COLUMNS = ["what", "unpadded", "padded", "ratio"]
TEXT = "the cat sat on a mat"


class CharTokenizer:
    """A stand-in for the BPE tokenizer: one token per letter (ids 1 .. vocab - 1)."""

    def __init__(self, vocab: int):
        self.vocab = int(vocab)

    def encode(self, text: str) -> list[int]:
        return [1 + (ord(c) - ord("a")) % (self.vocab - 1) for c in text if c.isalpha()]


def build(args, device):
    overrides = [f"melgen={args.model}", f"diffusion.T={args.T}"]
    if args.model in ("tiny", "mini"):
        overrides += TINY_ASR          # a small random ASR with the small MelGens; the configured size otherwise
    if not args.full_vocoder:
        overrides.append("vocoder.upsample_initial_channel=16")
    cfg = compose_config(overrides)
    torch.manual_seed(0)
    melgen = build_melgen(cfg)
    torch.nn.init.normal_(melgen.net_diffwave.final_conv[2].conv.weight, std=0.3 if args.model == "tiny" else 0.05)
    melgen = inference_copy(melgen.to(device).eval())
    asr = build_asr(cfg.asr).to(device).eval().requires_grad_(False) if args.w_asr > 0 else None
    vocoder = HiFiGANGenerator(cfg.vocoder).to(device).eval().requires_grad_(False)
    sampler = Sampler(DiffusionSchedule.from_config(cfg.diffusion, device), args.sampler, w_video=2.0,
                      w_asr=args.w_asr, asr_start=round(270 * args.T / 400),
                      steps=args.steps if args.sampler != "ancestral" else None)
    core = GenerationCore(melgen=melgen, vocoder=vocoder, sampler=sampler, asr=asr,
                          tokenizer=CharTokenizer(int(cfg.asr.vocab_size)) if asr is not None else None,
                          asr_cfg=cfg.asr, clamp_min=float(cfg.audio.clamp_min),
                          peak_scale=float(cfg.audio.peak_scale))
    return cfg, core


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="tiny", help="MelGen preset (configs/melgen/): tiny | mini | small | published")
    ap.add_argument("--T", type=int, default=50, help="diffusion.T")
    ap.add_argument("--sampler", default="ancestral", choices=["ancestral", "ddim", "dpm_solver"])
    ap.add_argument("--steps", type=int, default=25, help="ddim / dpm_solver steps")
    ap.add_argument("--seconds", type=float, default=2.3)
    ap.add_argument("--bucket", type=int, default=25, help="bucket size in video frames (25 = 1 s)")
    ap.add_argument("--w-asr", type=float, default=1.5, help="0 = no ASR guidance")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full-vocoder", action="store_true", help="the published HiFi-GAN size (random weights)")
    ap.add_argument("--compile", action="store_true", help="also time MelGen's denoiser under torch.compile")
    ap.add_argument("--out", default="benchmarks/results/buckets.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cfg, core = build(args, device)
    frames = max(1, round(args.seconds * cfg.video.fps))
    padded = bucketed(frames, args.bucket)
    g = torch.Generator().manual_seed(0)
    s, f = cfg.video.mouth_crop, cfg.video.face_size
    mouth = torch.randn(1, 1, frames, s, s, generator=g).to(device)
    face = torch.randn(1, 3, f, f, generator=g).to(device)
    mouth_padded = torch.nn.functional.pad(mouth, (0, 0, 0, 0, 0, padded - frames))
    length = torch.tensor([frames * core.melgen.upsample_factor], device=device)
    grad_fn = core.guidance_gradient([TEXT], length.cpu(), ["clip"], device)
    n_steps = args.T if args.sampler == "ancestral" else core.sampler.steps

    def per_step(m, melgen=None) -> tuple[float, float]:
        """(seconds per step, seconds of the whole call) of one sampling run: the steps after the first
        (the clock read at each step's callback, the device synchronised)."""
        stamps = []

        def tick(i, t, x):
            sync(device)
            stamps.append(time.perf_counter())
        sync(device)
        t0 = time.perf_counter()
        core.sampler.sample(melgen or core.melgen, m, face, grad_fn=grad_fn, lengths=length,
                            generators=[clip_generator(0, "clip", device)], callback=tick)
        return (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1), stamps[-1] - t0

    def timed(label, melgen=None) -> list[dict]:
        first, times = {}, {"unpadded": [], "padded": []}
        for name, m in (("unpadded", mouth), ("padded", mouth_padded)):   # a new shape: captured (CUDA), run once
            first[name] = per_step(m, melgen)[1]
        for _ in range(args.repeats):       # interleaved, so that a busy machine slows both alike
            for name, m in (("unpadded", mouth), ("padded", mouth_padded)):
                times[name].append(per_step(m, melgen)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        return [{"what": f"{label}s per step, median ({n_steps} steps)", "unpadded": med["unpadded"],
                 "padded": med["padded"], "ratio": med["padded"] / med["unpadded"]},
                {"what": f"{label}s per step, fastest run", "unpadded": best["unpadded"], "padded": best["padded"],
                 "ratio": best["padded"] / best["unpadded"]},
                {"what": f"{label}first call of a shape (conditions, capture on CUDA, all steps), s",
                 "unpadded": first["unpadded"], "padded": first["padded"],
                 "ratio": first["padded"] / first["unpadded"]}]

    rows = timed("")

    out = {}
    for name, bucket in (("unpadded", 0), ("padded", args.bucket)):
        core.bucket_frames = bucket
        out[name] = core.generate(mouth, face, None, [TEXT], ids=["clip"],
                                  generators=[clip_generator(0, "clip", device)])
    (mel_u, audio_u), (mel_p, audio_p) = out["unpadded"], out["padded"]
    diff = (mel_p - mel_u).abs()[0]                       # (n_mels, frames): log-mel
    per_frame = diff.amax(dim=0)
    over = (per_frame > 1e-3).nonzero()
    tail = int(per_frame.numel() - over.min()) if over.numel() else 0
    rows += [{"what": "log-mel max |diff| (real frames)", "unpadded": None, "padded": float(diff.max()), "ratio": None},
             {"what": "log-mel mean |diff| (real frames)", "unpadded": None, "padded": float(diff.mean()),
              "ratio": None},
             {"what": "log-mel rel. L2 diff", "unpadded": None, "padded": rel_err(mel_p, mel_u), "ratio": None},
             {"what": f"trailing mel frames with |diff| > 1e-3 (of {per_frame.numel()})", "unpadded": None,
              "padded": tail, "ratio": None},
             {"what": "audio max |diff|", "unpadded": None, "padded": float((audio_p - audio_u).abs().max()),
              "ratio": None},
             {"what": "audio rel. L2 diff", "unpadded": None, "padded": rel_err(audio_p, audio_u), "ratio": None}]

    if args.compile:
        compiled = copy.copy(core.melgen)
        compiled.net_diffwave = torch.compile(core.melgen.net_diffwave, dynamic=False)
        rows += timed("torch.compile denoiser: ", compiled)

    meta = {"device": device_name(device), "model": args.model, "T": args.T, "sampler": args.sampler,
            "steps": n_steps, "w_asr": args.w_asr, "clip_frames": frames, "bucket": args.bucket,
            "padded_frames": padded, "mel_frames": frames * core.melgen.upsample_factor, "repeats": args.repeats,
            "weights": "random"}
    write_report(rows, COLUMNS, f"Length bucket: a {frames}-frame clip padded to {padded} frames", args.out, meta)
    return rows


if __name__ == "__main__":
    main()

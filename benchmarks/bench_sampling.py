"""Guided sampling speed: the reference-style path vs the optimized samplers, bf16, DDIM and DPM-Solver++.

    python benchmarks/bench_sampling.py --tiny                                  # CPU smoke run (seconds)
    python benchmarks/bench_sampling.py --device cuda --seconds 3 --batch 1     # full model, one 3 s clip
    python benchmarks/bench_sampling.py --device cuda --seconds 3 --batch 32 --ref-clips 2

Rows (w_video 2, w_asr 1.5 with an ASR, asr_start 270 scaled to diffusion.T):
  reference   models/diffusion/reference.py: fp32, visual features recomputed in every forward,
              separate conditional / unconditional calls, clip by clip. With --batch B it is timed on
              --ref-clips clips and scaled to B (the row says so).
  ancestral   models/diffusion/samplers.py (all T steps) over the batched Guidance, fp32 and bf16 autocast.
  ddim / dpm_solver at --steps step counts (models/diffusion/samplers.py), fp32 and bf16.
Columns: median time of a whole batch (after a warm-up run), speedup over the reference, peak GPU
memory (CUDA), and for bf16 rows the rel_err ||bf16 - fp32|| / ||fp32|| of the final mel from the same
noise. The fp32 ancestral row's rel_err compares clip 0 with the reference path from the same noise.
Weights are random unless --melgen-ckpt / --asr-ckpt are given (speed does not depend on them; the
bf16 rel_err does). Prints one table, writes JSON (--out).
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import device_name, time_call, write_report  # noqa: E402
from models.diffusion.reference import reference_sample  # noqa: E402
from utils.config import compose_config  # noqa: E402
from models.diffusion.schedule import DiffusionSchedule  # noqa: E402
from models.melgen.checkpoint import build_melgen, load_melgen  # noqa: E402
from models.weight_norm import fold_weight_norm  # noqa: E402
from models.asr.model import build_asr, load_asr_checkpoint  # noqa: E402
from models.diffusion.guidance import asr_guidance  # noqa: E402
from models.diffusion.samplers import Sampler  # noqa: E402

TINY_MELGEN = ["melgen=tiny"]
TINY_ASR = ["asr.vocab_size=20", "asr.stem_filters=8", "asr.dims=[16,24,32]", "asr.num_blocks=[1,1,1]",
            "asr.num_heads=2", "asr.conv_kernel=5", "asr.ff_ratio=2", "asr.step_embed_dim_in=16",
            "asr.step_embed_dim_mid=32", "asr.step_embed_dim_out=32"]
TINY_T = 20
COLUMNS = ["path", "steps", "median_s", "speedup", "peak_gib", "rel_err", "rel_err_vs"]


class SeededNoise:
    """The step noise of one run as a lazy sequence: item k is drawn from its own seed (same on every call)."""

    def __init__(self, shape, seed: int, device: torch.device, count: int):
        self.shape, self.seed, self.device, self.count = tuple(shape), int(seed), device, int(count)

    def __len__(self):
        return self.count

    def __getitem__(self, k: int) -> torch.Tensor:
        if not 0 <= k < self.count:
            raise IndexError(k)
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + k)
        return torch.randn(self.shape, generator=g, device=self.device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30))


def build_models(cfg, args, device):
    torch.manual_seed(0)
    if args.melgen_ckpt:
        melgen = load_melgen(args.melgen_ckpt, cfg, map_location=device)
    else:
        melgen = build_melgen(cfg)
        # the zero-initialised output layer would predict eps = 0 (every sampler trivially equal)
        torch.nn.init.normal_(melgen.net_diffwave.final_conv[2].conv.weight, std=0.3 if args.tiny else 0.05)
    melgen = melgen.to(device).eval()
    asr = None
    if args.w_asr > 0:
        asr = load_asr_checkpoint(args.asr_ckpt, cfg.asr) if args.asr_ckpt else build_asr(cfg.asr)
        asr = asr.to(device).eval().requires_grad_(False)   # as the pipeline loads it (models/builders.py)
    return melgen, asr


def inference_copy(melgen):
    """MelGen as the pipeline runs it (models.builders.load_melgen): no parameter gradients, weight norm
    folded once. The reference path keeps the original's form: g * v / ||v|| (one fused op) in every call."""
    return fold_weight_norm(copy.deepcopy(melgen).requires_grad_(False))


def random_inputs(cfg, args, device, vocab: int):
    g = torch.Generator().manual_seed(0)
    frames = max(1, round(args.seconds * cfg.video.fps))
    s, f = cfg.video.mouth_crop, cfg.video.face_size
    mouth = torch.randn(args.batch, 1, frames, s, s, generator=g).to(device)
    face = torch.randn(args.batch, 3, f, f, generator=g).to(device)
    n_tok = max(1, min(frames // 2, round(6 * args.seconds)))  # about 6 BPE pieces per second of speech
    tokens = torch.randint(1, vocab, (args.batch, n_tok), generator=g).to(device)
    tok_len = torch.full((args.batch,), n_tok, dtype=torch.long, device=device)
    return mouth, face, tokens, tok_len


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true",
                    help=f"tiny MelGen and ASR, diffusion.T={TINY_T} (CPU smoke test); default on CPU")
    ap.add_argument("--full", action="store_true", help="the full-size models even on CPU")
    ap.add_argument("--seconds", type=float, default=3.0, help="clip length")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, nargs="+", default=None,
                    help="step counts for ddim / dpm_solver (default 25 50; tiny: 5 10)")
    ap.add_argument("--T", type=int, default=None, help=f"diffusion.T (default: config; tiny: {TINY_T})")
    ap.add_argument("--w-video", type=float, default=2.0)
    ap.add_argument("--w-asr", type=float, default=1.5, help="0 = no ASR guidance")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed runs before the timed ones (0: none, for smoke runs whose times mean nothing)")
    ap.add_argument("--ref-clips", type=int, default=1, help="clips the reference path is timed on (scaled to --batch)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference path")
    ap.add_argument("--melgen-ckpt", default=None)
    ap.add_argument("--asr-ckpt", default=None)
    ap.add_argument("--out", default="benchmarks/results/sampling.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    args.tiny = args.tiny or (device.type == "cpu" and not args.full)
    overrides = (TINY_MELGEN + TINY_ASR) if args.tiny else []
    T = args.T or (TINY_T if args.tiny else None)
    if T:
        overrides = overrides + [f"diffusion.T={T}"]
    cfg = compose_config(overrides)
    T = int(cfg.diffusion.T)
    steps_list = [n for n in (args.steps or ([5, 10] if args.tiny else [25, 50])) if 1 <= n <= T]
    asr_start = round(270 * T / 400)
    sch = DiffusionSchedule.from_config(cfg.diffusion, device)
    melgen, asr = build_models(cfg, args, device)
    fast = inference_copy(melgen)
    mouth, face, tokens, tok_len = random_inputs(cfg, args, device, int(cfg.asr.vocab_size))
    grad_fn = asr_guidance(asr, tokens, tok_len) if asr is not None else None
    b, frames = mouth.shape[0], mouth.shape[2]
    length = frames * melgen.upsample_factor
    w = dict(w_video=args.w_video, w_asr=args.w_asr, asr_start=asr_start)

    rows, outputs = [], {}
    ref_s = None
    if not args.no_reference:
        n_ref = max(1, min(args.ref_clips, b))
        x_T_ref = SeededNoise((1, 80, length), 7, device, b)
        ref_out = {}

        def reference():
            with torch.device(device):  # reference_sample makes its step tensors on the default device
                for i in range(n_ref):
                    gf = asr_guidance(asr, tokens[i:i + 1], tok_len[i:i + 1]) if asr is not None else None
                    ref_out[i] = reference_sample(melgen, sch, mouth[i:i + 1], face[i:i + 1], w_video=args.w_video,
                                                  w_asr=args.w_asr, asr_start=asr_start, grad_fn=gf,
                                                  x_T=x_T_ref[i], step_noise=SeededNoise((1, 80, length), 100 + i,
                                                                                         device, T - 1))
        r = time_call(reference, device, args.repeats, warmup=args.warmup)
        ref_s = r["median_s"] * b / n_ref
        name = "reference (fp32, features every step, cond/uncond separate)"
        if n_ref < b:
            name += f" [timed on {n_ref} clip(s), x{b / n_ref:g}]"
        rows.append({"path": name, "steps": T, "median_s": ref_s, "speedup": 1.0, "peak_gib": r["peak_gib"]})
        # the optimized sampler on clip 0 from the reference's noise: the two paths must agree
        x0 = Sampler(sch, "ancestral", **w).sample(fast, mouth[:1], face[:1], x_T=x_T_ref[0],
                                                   step_noise=SeededNoise((1, 80, length), 100, device, T - 1),
                                                   grad_fn=asr_guidance(asr, tokens[:1], tok_len[:1])
                                                   if asr is not None else None)
        opt_vs_ref = rel_err(x0, ref_out[0])
    else:
        opt_vs_ref = None

    variants = [("ancestral (fp32)", T, Sampler(sch, "ancestral", **w), None),
                ("ancestral (bf16 autocast)", T, Sampler(sch, "ancestral", **w, bf16=True), "ancestral (fp32)")]
    for n in steps_list:
        for label, kind in (("ddim", "ddim"), ("dpm_solver++ 2M", "dpm_solver")):
            fp32 = f"{label} (fp32)"
            variants.append((fp32, n, Sampler(sch, kind, **w, steps=n), None))
            variants.append((f"{label} (bf16 autocast)", n, Sampler(sch, kind, **w, steps=n, bf16=True), fp32))
    for name, n, sampler, compare in variants:
        out = {}

        def run():
            g = torch.Generator(device=device).manual_seed(0)  # the same noise on every call and in every row
            out["x"] = sampler.sample(fast, mouth, face, grad_fn=grad_fn, generator=g)
        r = time_call(run, device, args.repeats, warmup=args.warmup)
        outputs[(name, n)] = out["x"]
        row = {"path": name, "steps": n, "median_s": r["median_s"],
               "speedup": ref_s / r["median_s"] if ref_s else None, "peak_gib": r["peak_gib"]}
        if compare is not None:
            row["rel_err"], row["rel_err_vs"] = rel_err(out["x"], outputs[(compare, n)]), compare
        elif name.startswith("ancestral") and opt_vs_ref is not None:
            row["rel_err"], row["rel_err_vs"] = opt_vs_ref, "reference (clip 0, same noise)"
        rows.append(row)
    meta = {"device": device_name(device), "model": "tiny" if args.tiny else "full", "batch": b,
            "seconds": args.seconds, "mel_frames": length, "T": T, "w_video": args.w_video, "w_asr": args.w_asr,
            "asr_start": asr_start, "asr": asr is not None, "repeats": args.repeats,
            "weights": "checkpoint" if args.melgen_ckpt else "random"}
    write_report(rows, COLUMNS, "Guided sampling: time per batch", args.out, meta)
    return rows


if __name__ == "__main__":
    main()

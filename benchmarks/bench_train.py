"""MelGen training throughput: reference-style step vs the optimized step, and with data loading.

    python benchmarks/bench_train.py --tiny --iters 3               # CPU smoke run (CI-sized)
    python benchmarks/bench_train.py --device cuda --iters 50       # full model on a GPU
    python benchmarks/bench_train.py --device cuda --data-root data/synthetic   # + loading from disk

Reference-style step: float32, eager. Optimized: bf16 autocast, channels-last not used
(1-D convolutions dominate), optionally torch.compile (--compile). Prints one table, writes JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import device_name, time_call, write_report  # noqa: E402
from dataloaders.lrs_dataset import MelGenTrainDataset  # noqa: E402
from models.diffusion.schedule import DiffusionSchedule, melgen_training_loss  # noqa: E402
from models.melgen.checkpoint import build_melgen  # noqa: E402
from trainers.base import make_loader  # noqa: E402
from utils.config import compose_config  # noqa: E402
from utils.distributed import DistInfo  # noqa: E402

TINY = ["melgen=tiny"]


def make_step(model, opt, sch, batch, bf16: bool, device):
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        with ctx:
            loss = melgen_training_loss(model, sch, batch["mel"], batch["mouthroi"], batch["face_image"], 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def random_batch(cfg, bs, device):
    s, f = cfg.video.mouth_crop, cfg.video.face_size
    w = cfg.train.window_frames
    return {"mel": torch.rand(bs, 80, 4 * w, device=device) * 2 - 1,
            "mouthroi": torch.randn(bs, 1, w, s, s, device=device),
            "face_image": torch.randn(bs, 3, f, f, device=device)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke test)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20, help="timed iterations per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed runs before the timed ones (0: none, for smoke runs whose times mean nothing)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile on the optimized step")
    ap.add_argument("--data-root", default=None, help="corpus in the LRS3 layout: also time loading from disk")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/train.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cfg = compose_config(TINY if args.tiny else [])
    sch = DiffusionSchedule.from_config(cfg.diffusion, device)
    rows = []
    variants = [("reference (fp32, eager)", False, False), ("optimized (bf16 autocast)", True, False)]
    if args.compile:
        variants.append(("optimized + torch.compile", True, True))
    base = None
    for name, bf16, comp in variants:
        torch.manual_seed(0)
        model = build_melgen(cfg).to(device).train()
        net = torch.compile(model) if comp else model
        opt = torch.optim.Adam(model.parameters(), lr=2e-4)
        step = make_step(net, opt, sch, random_batch(cfg, args.batch, device), bf16, device)
        r = time_call(lambda: [step() for _ in range(args.iters)], device, args.repeats, warmup=args.warmup)
        sps = args.batch * args.iters / r["median_s"]
        base = base or sps
        rows.append({"path": name, "samples_per_s": sps, "speedup": sps / base, "peak_gib": r["peak_gib"]})
    if args.data_root:
        dcfg = compose_config((TINY if args.tiny else []) + [f"dataset.root={args.data_root}",
                                                       f"train.batch_size_per_gpu={args.batch}",
                                                       f"train.num_workers={args.workers}"])
        loader = iter(make_loader(MelGenTrainDataset(dcfg), args.batch, args.workers, int(dcfg.seed),
                                  DistInfo(device=device)))
        torch.manual_seed(0)
        model = build_melgen(dcfg).to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=2e-4)

        def loaded_steps():
            for _ in range(args.iters):
                b = {k: v.to(device, non_blocking=True) for k, v in next(loader).items()}
                make_step(model, opt, sch, b, True, device)()
        r = time_call(loaded_steps, device, args.repeats, warmup=args.warmup)
        sps = args.batch * args.iters / r["median_s"]
        rows.append({"path": f"optimized + data from disk ({args.workers} workers)", "samples_per_s": sps,
                     "speedup": sps / base, "peak_gib": r["peak_gib"]})
    write_report(rows, ["path", "samples_per_s", "speedup", "peak_gib"], "MelGen training throughput",
                 args.out, {"device": device_name(device), "batch": args.batch, "model": "tiny" if args.tiny else "full"})
    return rows


if __name__ == "__main__":
    main()

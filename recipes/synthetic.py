"""Train and evaluate the whole system on the project's synthetic corpus ("Try it without LRS3").

    python recipes/synthetic.py --work_dir exp_synthetic --size small --n_clips 3200   # on a GPU
    python recipes/synthetic.py --work_dir /tmp/tiny --size tiny --n_clips 12 \
        --melgen_iters 4 --asr_iters 4 --judge_iters 4 --vocoder_iters 4 --device cpu   # smoke test
    python recipes/synthetic.py ... --stages generate evaluate     # only some stages

Training runs in chunks of --chunk_minutes (default 10), each resuming from the last
checkpoint; re-running the recipe continues where it stopped. Results: <work_dir>/results.md.
Extra key=value arguments are Hydra overrides passed to every script.
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.errors import exit_on_user_error  # noqa: E402
from recipes.synthetic_recipe import STAGES, MELGEN_SIZES, RecipeSettings, run_recipe  # noqa: E402


@exit_on_user_error
def main(argv=None) -> int:
    d = RecipeSettings(work_dir=Path("exp_synthetic"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--work_dir", type=Path, default=d.work_dir)
    ap.add_argument("--size", choices=list(MELGEN_SIZES), default=d.size)
    ap.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    for name in ("n_clips", "seed", "workers", "melgen_iters", "asr_iters", "judge_iters", "vocoder_iters",
                 "batch_size", "vocab_size"):
        ap.add_argument(f"--{name}", type=int, default=getattr(d, name))
    ap.add_argument("--n_test", type=int, default=None, help="generate at most this many test clips")
    ap.add_argument("--chunk_minutes", type=float, default=d.chunk_minutes)
    ap.add_argument("--corrupt_fraction", type=float, default=d.corrupt_fraction)
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--mean_face", type=Path, default=d.mean_face)
    ap.add_argument("--judge_input", choices=["wav", "mel"], default=d.judge_input,
                    help="the judge reads the vocoded audio, or the generated mel before the vocoder")
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]   # Hydra key=value, anywhere
    args, extra = ap.parse_known_args([a for a in argv if a not in overrides])
    extra += overrides
    bad = [o for o in extra if "=" not in o]
    if bad:
        ap.error(f"unrecognised arguments: {' '.join(bad)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = RecipeSettings(**{k: v for k, v in vars(args).items() if k != "stages"}, extra=extra)
    settings.work_dir = settings.work_dir.resolve()
    settings.mean_face = settings.mean_face.resolve()
    run_recipe(settings, args.stages)
    return 0


if __name__ == "__main__":
    sys.exit(main())

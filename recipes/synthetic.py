"""Train and evaluate the whole system on the project's synthetic corpus ("Try it without LRS3").

    python recipes/synthetic.py --work_dir exp_synthetic --size small --n_clips 3200   # on a GPU
    python recipes/synthetic.py --work_dir exp_cpu --size cpu --n_clips 1200 --workers 2 --loader_workers 0 \
        --threads 1 --parallel --train_minutes 78 --melgen_iters 3000 --asr_iters 3000 --judge_iters 1500 \
        --n_test 48 --vocab_size 64                                   # a 2-core CPU (docs/synthetic.md)
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
from recipes.synthetic_recipe import STAGES, run_recipe  # noqa: E402
from recipes.synthetic_settings import ASR_SIZES, MEAN_FACE_NAME, MELGEN_SIZES, RecipeSettings  # noqa: E402


@exit_on_user_error
def main(argv=None) -> int:
    d = RecipeSettings(work_dir=Path("exp_synthetic"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 epilog="extra key=value arguments are Hydra overrides (configs/config.yaml) passed "
                                        "to every script, e.g. diffusion.T=40 generate.asr_start=25")
    ap.add_argument("--work_dir", type=Path, default=d.work_dir,
                    help="folder for everything the recipe writes (corpus, checkpoints, generated audio, results.md); "
                         "re-running with the same folder continues where it stopped")
    ap.add_argument("--size", choices=list(MELGEN_SIZES), default=d.size,
                    help="model sizes: full (published), small (a GPU, hours), cpu (a 2-core CPU, about an hour "
                         "for everything: 50 diffusion steps, 48-pixel mouth crops, Griffin-Lim), mini (a larger "
                         "CPU model), tiny (tests, seconds)")
    ap.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES), metavar="STAGE",
                    help=f"run only these stages, in recipe order ({', '.join(STAGES)})")
    int_help = {
        "n_clips": "clips in the synthetic corpus (split into pretrain / trainval / test)",
        "seed": "seed of the corpus and of training",
        "workers": "worker processes for corpus building and data preparation",
        "melgen_iters": "MelGen training iterations",
        "asr_iters": "guidance-ASR training iterations",
        "judge_iters": "training iterations of the judge (the separate recogniser used only for scoring)",
        "vocoder_iters": "HiFi-GAN training iterations",
        "lipreader_iters": "lip-reader training iterations (stage lipreader; 0: no lip reader)",
        "batch_size": "clips sampled together when generating the test split",
        "vocab_size": "pieces of the SentencePiece tokenizer trained on the corpus transcripts",
    }
    for name, text in int_help.items():
        ap.add_argument(f"--{name}", type=int, default=getattr(d, name), help=text)
    ap.add_argument("--n_test", type=int, default=None, help="generate at most this many test clips (None: all)")
    ap.add_argument("--chunk_minutes", type=float, default=d.chunk_minutes,
                    help="each training run stops (with a checkpoint) after this many minutes and the next resumes")
    ap.add_argument("--corrupt_fraction", type=float, default=d.corrupt_fraction,
                    help="fraction of words replaced in the corrupted guidance texts (stand-in for lip-reading errors)")
    ap.add_argument("--device", default=d.device, help="auto (CUDA when there is a GPU), cpu or cuda")
    ap.add_argument("--mean_face", type=Path, default=d.mean_face,
                    help="68-landmark mean face for mouth cropping; the published file is fetched to this path "
                         f"when it is missing and named {MEAN_FACE_NAME}")
    ap.add_argument("--judge_input", choices=["auto", "wav", "mel"], default=d.judge_input,
                    help="the judge reads the vocoded audio, or the generated mel before the vocoder "
                         "(auto: the mel with Griffin-Lim, the audio with HiFi-GAN)")
    ap.add_argument("--grammar", choices=["grid", "free", "homophene", "homophene_context"], default=d.grammar,
                    help="sentences of the corpus: grid (GRID's six-word commands over 51 words, e.g. 'place blue "
                         "at f two now'), free (eight templates over about 200 words), homophene (six slots of "
                         "words that look alike on the lips, e.g. bat/pat/mat, on one mouth track per group) or "
                         "homophene_context (a key word first that selects the members, as context does; scored "
                         "like grid and free for now)")
    ap.add_argument("--audio_clips", type=int, default=d.audio_clips,
                    help="utterances without video (speech only, cheap) for the recognisers: two thirds train the "
                         "guidance ASR, one third the judge, each beside the video corpus's training clips")
    ap.add_argument("--asr_size", choices=list(ASR_SIZES), default=None,
                    help="size of the guidance ASR (default: --size)")
    ap.add_argument("--asr_max_t", type=int, default=None,
                    help="the guidance ASR trains on noisy mels x_t with t < this (default: every step of the "
                         "diffusion; generate.asr_start + 1 covers exactly the steps it guides)")
    ap.add_argument("--sweep_clips", type=int, default=d.sweep_clips,
                    help="on this many test clips: a w_asr sweep (0, 0.5, 1.5, 3), asr_start at the best weight, "
                         "and DDIM / DPM-Solver++ at 10 and 25 steps with and without guidance (0: none of these)")
    ap.add_argument("--publish", action="store_true",
                    help="the report stage also writes docs/results/synthetic_<grammar>_<size>.json, FLAC samples "
                         "under docs/samples/synthetic_<grammar>/, the figures under docs/images/, and the trained "
                         "models as the model set model_sets/synthetic/ (configs/models/synthetic.yaml, "
                         "models=synthetic) with one test clip as examples/synthetic_clip.mp4")
    ap.add_argument("--publish_root", type=Path, default=None,
                    help="where --publish writes (default: this repository)")
    ap.add_argument("--test_speakers", type=int, default=d.test_speakers,
                    help="speakers seen only in the test split (0: test = held-out sentences of the training "
                         "speakers)")
    ap.add_argument("--vocoder", choices=["auto", "hifigan", "griffinlim"], default=d.vocoder,
                    help="hifigan: train one (vocoder stage); griffinlim: no training, Griffin-Lim over the "
                         "inverse mel; auto: griffinlim for --size cpu, hifigan otherwise")
    ap.add_argument("--loader_workers", type=int, default=None,
                    help="data-loader workers of the training scripts (default: --workers)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads per script (OMP_NUM_THREADS); 1 is much faster on a CPU shared with other jobs")
    ap.add_argument("--parallel", action="store_true",
                    help="train the judge, the guidance ASR and MelGen (and HiFi-GAN) as concurrent processes")
    ap.add_argument("--train_minutes", type=float, default=None,
                    help="wall-clock cap of training in this call: with --parallel of each lane (MelGen; the "
                         "recognisers one after the other), else of each stage; the newest checkpoint is used when "
                         "it is reached (results.json records the iterations)")
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

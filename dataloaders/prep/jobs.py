"""Shared machinery of the per-video batch jobs (extract_audio_from_video.py, extract_mouthcrops.py).

A job takes every `.mp4` of one split (or of all splits) of a videos folder and writes one
output file per video at the same relative path under an output folder. Files already
done are skipped unless prep.overwrite is set; each video goes through a worker
`worker(src, dst, prep) -> error line | None`, in a process pool when prep.num_workers > 1
(`auto`: min(4, usable cores)); the workers end when the job's process dies (even by SIGKILL).
Failures are logged and counted, and the job goes on with the others.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from utils.config import compose_config
from utils.errors import LipVoicerError
from utils.processes import die_with_parent, resolve_workers

log = logging.getLogger(__name__)


def prep_settings(cfg) -> dict:
    """cfg.prep of a full config as a plain dict (picklable for worker processes); a prep config as is."""
    return OmegaConf.to_container(cfg.prep, resolve=True) if hasattr(cfg, "prep") else dict(cfg)


def resolve_split_dirs(ds_dir: str | Path, split: str | None) -> tuple[Path, list[str]]:
    """(videos root, split sub-directories). ds_dir may be the videos/ folder or the dataset root."""
    root = Path(ds_dir)
    if not root.is_dir():
        raise LipVoicerError(f"{root}: dataset directory not found")
    if split and not (root / split).is_dir() and (root / "videos" / split).is_dir():
        root = root / "videos"
    elif not split and (root / "videos").is_dir():
        root = root / "videos"
    if split:
        if not (root / split).is_dir():
            raise LipVoicerError(f"{root / split}: split directory not found")
        return root, [split]
    splits = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not splits:
        raise LipVoicerError(f"{root}: no split directories found")
    return root, splits


def list_videos(root: Path, splits: list[str]) -> list[Path]:
    """Every .mp4 under root/<split> for each split; a split without videos is an error."""
    videos = []
    for split in splits:
        found = sorted((root / split).rglob("*.mp4"))
        found = [v for v in found if not v.name.startswith(".")]  # temporary files of other jobs
        if not found:
            raise LipVoicerError(f"{root / split}: no .mp4 videos in split '{split}'")
        videos.extend(found)
    return videos


def plan_jobs(ds_dir, out_dir, split: str | None, suffix: str, overwrite: bool) -> tuple[list[tuple[str, str]], int]:
    """((video, output) pairs still to do, number of videos): output = out_dir/<relative path><suffix>."""
    root, splits = resolve_split_dirs(ds_dir, split)
    videos = list_videos(root, splits)
    out_dir = Path(out_dir)
    jobs = []
    for v in videos:
        dst = out_dir / v.relative_to(root).with_suffix(suffix)
        if overwrite or not dst.is_file():
            jobs.append((str(v), str(dst)))
    return jobs, len(videos)


def run_batch(jobs: list[tuple[str, str]], worker, extra, num_workers: int, desc: str,
              progress: bool = True) -> int:
    """Run worker(src, dst, extra) over jobs in a process pool; logs failures, returns their count."""
    failed = 0
    # log lines (a failed file) are printed above the bar, not glued to it
    with logging_redirect_tqdm(), tqdm(total=len(jobs), desc=desc, unit="file", dynamic_ncols=True,
                                       disable=not progress) as bar:
        if num_workers > 1 and len(jobs) > 1:
            # "spawn": a forked child of a process that has already run MediaPipe (its graph threads)
            # can crash; fresh interpreters cannot. die_with_parent: a killed job leaves no workers behind.
            with ProcessPoolExecutor(min(num_workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                for err in pool.map(worker, [j[0] for j in jobs], [j[1] for j in jobs], [extra] * len(jobs)):
                    bar.update(1)
                    if err:
                        failed += 1
                        log.error(err)
        else:
            for src, dst in jobs:
                err = worker(src, dst, extra)
                bar.update(1)
                if err:
                    failed += 1
                    log.error(err)
    return failed


def failure_line(video, work) -> str | None:
    """Run work(); None when it succeeds, else the one line a batch job logs for this video before going on."""
    try:
        work()
        return None
    except LipVoicerError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - a batch job reports the file and goes on
        return f"{video}: unexpected {type(e).__name__}: {e}"


def run_video_job(ds_dir, out_dir, split: str | None, prep: dict, suffix: str, worker,
                  desc: str) -> tuple[int, int, int]:
    """(written, skipped, failed): worker over the videos of ds_dir not yet done under out_dir."""
    jobs, n_videos = plan_jobs(ds_dir, out_dir, split, suffix, bool(prep.get("overwrite")))
    workers = resolve_workers(prep.get("num_workers", "auto"), "prep.num_workers")
    failed = run_batch(jobs, worker, prep, workers, desc, bool(prep.get("progress", True)))
    return len(jobs) - failed, n_videos - len(jobs), failed


def parse_args(argv, description: str, default_out: str):
    """(--ds_dir/--split/--out_dir/--workers arguments, composed config with the key=value overrides)."""
    ap = argparse.ArgumentParser(description=description,
                                 epilog="extra key=value arguments are Hydra overrides (configs/config.yaml)")
    ap.add_argument("--ds_dir", help="videos directory (or dataset root holding videos/); default dataset.videos_dir")
    ap.add_argument("--split", help="split sub-directory (e.g. pretrain, trainval, test, main); default: all")
    ap.add_argument("--out_dir", help=f"output root; default {default_out}")
    ap.add_argument("--workers", help="worker processes (prep.num_workers; auto = min(4, usable cores))")
    args, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        ap.error(f"unrecognised arguments: {' '.join(bad)}")
    cfg = compose_config(overrides)
    if args.workers is not None:
        cfg.prep.num_workers = args.workers
    return args, cfg

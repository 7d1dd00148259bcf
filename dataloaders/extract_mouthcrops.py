"""Mouth crops for every video of a dataset split: `<out_dir>/<same relative path>.npz` (key `data`, uint8 T x 96 x 96).

    python dataloaders/extract_mouthcrops.py --ds_dir data/LRS3/videos --split test --out_dir data/LRS3/mouth_rois
    python dataloaders/extract_mouthcrops.py dataset=synthetic              # every split of dataset.videos_dir
    python dataloaders/extract_mouthcrops.py --ds_dir ... prep.detector=retinaface_fan prep.num_workers=8

Per video: frames at 25 fps (other rates are resampled first), face landmarks per frame
(prep.detector), then dataloaders/prep/mouth_crop.py (interpolation of missed frames, 12-frame
smoothing, alignment to the mean face, 96 x 96 crop around the mouth). Files already
done are skipped (prep.overwrite=true recomputes them); every file is written under a
temporary name and renamed. A video that cannot be used (no face, corrupt, no video
stream, shorter than prep.min_seconds) is logged with the reason and counted; the job
goes on with the others and exits with status 1 when any failed.

Other modules import `video_frames(path, cfg)` and `mouth_crops_from_video(path, cfg)`.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from utils.config import compose_config
from utils.errors import LipVoicerError, exit_on_user_error
from utils.files import atomic_write

log = logging.getLogger("extract_mouthcrops")


def _get(cfg, key, default):
    """cfg.prep.<key> from a full config, a prep config or a plain dict."""
    prep = cfg.get("prep", cfg) if hasattr(cfg, "get") else cfg
    value = prep.get(key, default) if hasattr(prep, "get") else default
    return default if value is None else value


def video_frames(path: str | Path, cfg=None) -> np.ndarray:
    """uint8 RGB frames (T, H, W, 3) at prep.fps (25), refusing clips shorter than prep.min_seconds."""
    from dataloaders.video_io import read_video_at_fps

    fps = float(_get(cfg or {}, "fps", 25))
    min_seconds = float(_get(cfg or {}, "min_seconds", 1.0))
    frames = read_video_at_fps(path, fps)
    if len(frames) < int(round(min_seconds * fps)):
        raise LipVoicerError(f"{path}: clip is {len(frames) / fps:.2f} s long; at least {min_seconds:g} s "
                             f"({int(round(min_seconds * fps))} frames at {fps:g} fps) is needed")
    return frames


_STATE: dict = {}


def _detector(cfg):
    from dataloaders.prep.face_detection import make_detector

    key = ("detector", str(_get(cfg, "detector", "mediapipe")))
    if key not in _STATE:
        prep = cfg.get("prep", cfg) if hasattr(cfg, "get") else cfg
        _STATE[key] = make_detector(prep)
    return _STATE[key]


def _mean_face(cfg):
    from dataloaders.prep.mouth_crop import load_mean_face

    path = str(_get(cfg, "mean_face_path", "checkpoints/20words_mean_face.npy"))
    key = ("mean_face", path)
    if key not in _STATE:
        _STATE[key] = load_mean_face(path)
    return _STATE[key]


def mouth_crops_from_frames(frames: np.ndarray, cfg, source: str = "clip") -> np.ndarray:
    """(T, crop, crop) uint8 mouth crops of RGB frames already at 25 fps."""
    from dataloaders.prep.mouth_crop import crop_mouths

    landmarks = _detector(cfg).detect_video(frames)
    if all(lm is None for lm in landmarks):
        raise LipVoicerError(f"{source}: no face detected in any frame")
    return crop_mouths(frames, landmarks, _mean_face(cfg), crop_size=int(_get(cfg, "crop_size", 96)),
                       window=int(_get(cfg, "smoothing_window", 12)), warp_size=int(_get(cfg, "warp_size", 256)),
                       source=source)


def mouth_crops_from_video(path: str | Path, cfg) -> np.ndarray:
    """(T, 96, 96) uint8 greyscale mouth crops of a video, T = frames at 25 fps.

    cfg: the project config (or its `prep` part, or a dict with the same keys).
    Raises LipVoicerError naming the file and the reason when the video cannot be used.
    """
    return mouth_crops_from_frames(video_frames(path, cfg), cfg, source=str(path))


def save_npz(path: Path, data: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, data=data)

    atomic_write(path, write)


def crop_one(video: str, out: str, cfg) -> str | None:
    """Write the .npz of one video; returns an error line or None."""
    try:
        import cv2

        cv2.setNumThreads(1)
        save_npz(Path(out), mouth_crops_from_video(video, cfg))
        return None
    except LipVoicerError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - a batch job reports the file and goes on
        return f"{video}: unexpected {type(e).__name__}: {e}"


# ----------------------------------------------------------------------------- batch jobs
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


def run_batch(jobs: list[tuple[str, str]], worker, extra, num_workers: int, desc: str,
              progress: bool = True) -> int:
    """Run worker(src, dst, extra) over jobs in a process pool; logs failures, returns their count."""
    from tqdm import tqdm

    failed = 0
    bar = tqdm(total=len(jobs), desc=desc, unit="file", dynamic_ncols=True, disable=not progress)
    if num_workers > 1 and len(jobs) > 1:
        # "spawn": a forked child of a process that has already run MediaPipe (its graph threads)
        # can crash; fresh interpreters cannot.
        with ProcessPoolExecutor(min(num_workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
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
    bar.close()
    return failed


def extract_mouthcrops(ds_dir, out_dir, split: str | None, cfg) -> tuple[int, int, int]:
    """(written, skipped, failed) for the videos of one split (or all splits) of ds_dir."""
    from omegaconf import OmegaConf

    prep = OmegaConf.to_container(cfg.prep, resolve=True) if hasattr(cfg, "prep") else dict(cfg)
    from dataloaders.prep.face_detection import check_backend

    _mean_face(prep)  # a missing mean face or detector package stops the job before it starts
    check_backend(str(prep.get("detector", "mediapipe")))
    root, splits = resolve_split_dirs(ds_dir, split)
    videos = list_videos(root, splits)
    out_dir = Path(out_dir)
    jobs = []
    for v in videos:
        dst = out_dir / v.relative_to(root).with_suffix(".npz")
        if prep.get("overwrite") or not dst.is_file():
            jobs.append((str(v), str(dst)))
    skipped = len(videos) - len(jobs)
    failed = run_batch(jobs, crop_one, prep, int(prep.get("num_workers", 1)), "mouth crops",
                       bool(prep.get("progress", True)))
    return len(jobs) - failed, skipped, failed


def parse_args(argv, description: str, default_out: str):
    ap = argparse.ArgumentParser(description=description,
                                 epilog="extra key=value arguments are Hydra overrides (configs/config.yaml)")
    ap.add_argument("--ds_dir", help="videos directory (or dataset root holding videos/); default dataset.videos_dir")
    ap.add_argument("--split", help="split sub-directory (e.g. pretrain, trainval, test, main); default: all")
    ap.add_argument("--out_dir", help=f"output root; default {default_out}")
    ap.add_argument("--workers", type=int, help="worker processes (prep.num_workers)")
    args, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        ap.error(f"unrecognised arguments: {' '.join(bad)}")
    cfg = compose_config(overrides)
    if args.workers is not None:
        cfg.prep.num_workers = args.workers
    return args, cfg


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args, cfg = parse_args(argv, "Mouth crops (.npz) for every video of a split.", "dataset.mouthrois_dir")
    ds_dir = args.ds_dir or cfg.dataset.videos_dir
    out_dir = args.out_dir or cfg.dataset.mouthrois_dir
    done, skipped, failed = extract_mouthcrops(ds_dir, out_dir, args.split, cfg)
    print(f"extract_mouthcrops: {done} written, {skipped} already done, {failed} failed -> {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

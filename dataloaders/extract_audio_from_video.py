"""16 kHz mono .wav for every video of a dataset split, at the same relative paths.

    python dataloaders/extract_audio_from_video.py --ds_dir data/LRS3/videos --split test --out_dir data/LRS3/audios
    python dataloaders/extract_audio_from_video.py dataset=synthetic           # every split of dataset.videos_dir

`<ds_dir>/<split>/<speaker>/<clip>.mp4` -> `<out_dir>/<split>/<speaker>/<clip>.wav` (PCM 16-bit,
prep.sampling_rate). Files already done are skipped (prep.overwrite=true recomputes
them); each file is written under a temporary name and renamed. A video that cannot be
used (corrupt, no audio stream, shorter than prep.min_seconds) is logged with the reason
and counted; the job goes on and exits with status 1 when any failed. Then compute the
mels with `python dataloaders/wav2mel.py`.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.extract_mouthcrops import list_videos, parse_args, resolve_split_dirs, run_batch
from utils.errors import LipVoicerError, exit_on_user_error
from utils.files import atomic_write

log = logging.getLogger("extract_audio_from_video")


def extract_one(video: str, out: str, prep: dict) -> str | None:
    """Write the .wav of one video; returns an error line or None."""
    import soundfile as sf

    from dataloaders.video_io import read_audio

    sr = int(prep.get("sampling_rate", 16000))
    min_seconds = float(prep.get("min_seconds", 1.0))
    out = Path(out)
    try:
        wav = read_audio(video, sr)
        if len(wav) < min_seconds * sr:
            raise LipVoicerError(f"{video}: audio is {len(wav) / sr:.2f} s long; at least {min_seconds:g} s is needed")
        atomic_write(out, lambda tmp: sf.write(str(tmp), wav, sr, subtype="PCM_16", format="WAV"))
        return None
    except LipVoicerError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - a batch job reports the file and goes on
        return f"{video}: unexpected {type(e).__name__}: {e}"


def extract_audio(ds_dir, out_dir, split: str | None, cfg) -> tuple[int, int, int]:
    """(written, skipped, failed) for the videos of one split (or all splits) of ds_dir."""
    from omegaconf import OmegaConf

    prep = OmegaConf.to_container(cfg.prep, resolve=True) if hasattr(cfg, "prep") else dict(cfg)
    root, splits = resolve_split_dirs(ds_dir, split)
    videos = list_videos(root, splits)
    out_dir = Path(out_dir)
    jobs = []
    for v in videos:
        dst = out_dir / v.relative_to(root).with_suffix(".wav")
        if prep.get("overwrite") or not dst.is_file():
            jobs.append((str(v), str(dst)))
    skipped = len(videos) - len(jobs)
    failed = run_batch(jobs, extract_one, prep, int(prep.get("num_workers", 1)), "audio",
                       bool(prep.get("progress", True)))
    return len(jobs) - failed, skipped, failed


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args, cfg = parse_args(argv, "16 kHz mono .wav for every video of a split.", "dataset.audios_dir")
    ds_dir = args.ds_dir or cfg.dataset.videos_dir
    out_dir = args.out_dir or cfg.dataset.audios_dir
    done, skipped, failed = extract_audio(ds_dir, out_dir, args.split, cfg)
    print(f"extract_audio_from_video: {done} written, {skipped} already done, {failed} failed -> {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

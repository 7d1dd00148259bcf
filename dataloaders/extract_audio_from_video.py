"""16 kHz mono .wav for every video of a dataset split, at the same relative paths.

    python dataloaders/extract_audio_from_video.py --ds_dir data/LRS3/videos --split test --out_dir data/LRS3/audios
    python dataloaders/extract_audio_from_video.py dataset=synthetic           # every split of dataset.videos_dir

`<ds_dir>/<split>/<speaker>/<clip>.mp4` -> `<out_dir>/<split>/<speaker>/<clip>.wav` (PCM 16-bit,
prep.sampling_rate). Files already done are skipped (prep.overwrite=true recomputes
them); each file is written under a temporary name and renamed. A video that cannot be
used (corrupt, no audio stream, shorter than prep.min_seconds) is logged with the reason
and counted; the job goes on and exits with status 1 when any failed. Then compute the
mels with `python dataloaders/wav2mel.py`.

The work is in dataloaders/prep/audio_extraction.py.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.prep.audio_extraction import extract_audio
from dataloaders.prep.jobs import parse_args
from utils.errors import exit_on_user_error


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

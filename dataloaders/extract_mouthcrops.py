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
goes on with the others and exits with status 1 when any failed. prep.num_workers (default
auto = min(4, usable cores)) worker processes; they end when this process dies, even by SIGKILL.

The work is in dataloaders/prep/mouthcrops.py (`video_frames`, `mouth_crops_from_video`, ...).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.native_output import quiet_native_logging  # noqa: E402

quiet_native_logging()  # before MediaPipe is imported (here and, through the environment, in the workers)

from dataloaders.prep.jobs import parse_args  # noqa: E402
from dataloaders.prep.mouthcrops import extract_mouthcrops  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402


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

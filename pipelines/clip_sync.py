"""LSE-C / LSE-D of a test clip for evaluate.py: the generated speech and the ground truth, each on the clip's
own video (evaluate.lse; docs/evaluate.md).

The papers mux the generated audio into the test video and run syncnet_python on the result; muxing and
extracting again changes nothing but the audio codec's loss, so here the generated wav is paired with the
video's frames directly (its 16-bit samples from the first frame on, as an extracted wav would be). Per clip:

1. the video `<video_id>.mp4` is found in evaluate.gt_videos_dir, or by default beside the ground-truth
   transcript (the split's folders under dataset.videos_dir);
2. SyncNet's face crops of its chosen face track (dataloaders/prep/syncnet_crop.py) and their lip embeddings,
   computed once;
3. the generated and the ground-truth audio, cut to the track's frames, scored on them (pipelines/sync_scores.py).

A clip that cannot be scored (no video, no face, fewer than 6 frames of video or audio) gets NaN and one
warning line naming the file and the reason; the reasons are kept for the summary.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from dataloaders.mfcc import int16_samples
from dataloaders.prep.syncnet_crop import syncnet_crops_from_video
from pipelines.sync_scores import SAMPLES_PER_FRAME, SyncScorer, build_sync_scorer
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

KEYS = ("lse_c", "lse_d", "lse_offset", "gt_lse_c", "gt_lse_d", "gt_lse_offset")
MODES = ("auto", "true", "false")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def lse_mode(value, key: str = "evaluate.lse") -> str:
    """evaluate.lse / syncnet.video_report (`key`, for the message) as auto | true | false (booleans accepted)."""
    mode = str(value).lower() if value is not None else "auto"
    if mode not in MODES:
        raise LipVoicerError(f"{key}={value}: use auto (LSE-C / LSE-D when the SyncNet weights are there), "
                             "true (required) or false")
    return mode


def nan_scores() -> dict:
    return {k: math.nan for k in KEYS}


class ClipSync:
    """video_id, generated wav, ground-truth wav -> the six LSE values of KEYS (NaN where not computable)."""

    def __init__(self, scorer: SyncScorer, video_dirs: Sequence[Path], prep_cfg, sampling_rate: int = 16000):
        if int(sampling_rate) != 16000:
            raise LipVoicerError(f"audio.sampling_rate={sampling_rate}: SyncNet scores 16 kHz audio")
        self.scorer, self.video_dirs, self.prep = scorer, [Path(d) for d in video_dirs], prep_cfg
        self.failed: dict[str, str] = {}

    def settings(self) -> dict:
        """JSON-able: what scored the clips, and the clips that could not be scored with the reason."""
        return {"syncnet": getattr(self.scorer, "weights", None), "vshift": self.scorer.vshift,
                "video_dirs": [str(d) for d in self.video_dirs], "n_failed": len(self.failed),
                "failed": dict(list(self.failed.items())[:50])}

    def find_video(self, video_id: str) -> Path | None:
        for d in self.video_dirs:
            for suffix in VIDEO_SUFFIXES:
                p = d / f"{video_id}{suffix}"
                if p.is_file():
                    return p
        return None

    def _fail(self, video_id: str, reason: str) -> dict:
        log.warning("%s; LSE-C / LSE-D of this clip recorded as NaN", reason)
        self.failed[video_id] = reason
        return nan_scores()

    def __call__(self, video_id: str, generated: np.ndarray, reference: np.ndarray) -> dict:
        video = self.find_video(video_id)
        if video is None:
            where = ", ".join(str(d / f"{video_id}.mp4") for d in self.video_dirs)
            return self._fail(video_id, f"{video_id}: no video to score LSE-C / LSE-D on (looked for {where})")
        try:
            crops = syncnet_crops_from_video(video, self.prep)
        except LipVoicerError as e:
            return self._fail(video_id, str(e))
        lips = self.scorer.lip_embeddings(crops.crops)
        out = {}
        a, b = crops.first * SAMPLES_PER_FRAME, (crops.first + len(crops.crops)) * SAMPLES_PER_FRAME
        for prefix, wav, what in (("", generated, "generated audio"), ("gt_", reference, "ground-truth audio")):
            try:
                s = self.scorer.score(crops.crops, int16_samples(wav)[a:b], lips=lips,
                                      source=f"{video} with the {what}")
            except LipVoicerError as e:
                log.warning("%s; recorded as NaN", e)
                self.failed.setdefault(video_id, str(e))
                out.update({f"{prefix}lse_c": math.nan, f"{prefix}lse_d": math.nan, f"{prefix}lse_offset": math.nan})
                continue
            out.update({f"{prefix}lse_c": s.lse_c, f"{prefix}lse_d": s.lse_d, f"{prefix}lse_offset": float(s.offset)})
        return out


def build_clip_sync(cfg, video_dirs: Sequence[Path], device) -> ClipSync | None:
    """The LSE scorer evaluate.lse asks for: None for false, or for auto without the weights file (one warning line);
    with true a missing weights file is one LipVoicerError naming it and the command that fetches it."""
    mode = lse_mode(cfg["evaluate"].get("lse", "auto"), "evaluate.lse")
    if mode == "false":
        return None
    from models.builders import syncnet_checkpoint_path

    path = syncnet_checkpoint_path(cfg)
    if mode == "auto" and not path.is_file():
        log.warning("no LSE-C / LSE-D: SyncNet weights %s not found (python download_checkpoints.py --only "
                    "syncnet_v2; evaluate.lse=false hides this line)", path)
        return None
    return ClipSync(build_sync_scorer(cfg, device), video_dirs, cfg["prep"], int(cfg["audio"]["sampling_rate"]))

"""LSE-C / LSE-D of each generated segment of a video, for the report of inference_real_video.py and the web demo
(syncnet.video_report; docs/evaluate.md): a user sees whether the new speech is in sync with the lips.

    sync = prepare_segment_sync(cfg, device)                  # before sampling: None, or the weights checked
    add_segment_sync(report, sync, video_path, video, audio)  # after: report["segments"][i]["sync"], report["lse"]

Each generated segment is scored as evaluate.py scores a clip (pipelines/sync_scores.py): SyncNet's face crops
framed from that segment's own face track (its boxes over the segment's frames, gaps interpolated, 13-frame
median; dataloaders/prep/syncnet_crop.py) with the soundtrack's 16-bit samples of the same frames. The video is
decoded once more; each segment's crops are held only until its last frame (at most generate.segment_seconds
of 224 x 224 crops per segment being scored). A segment that cannot be scored gets {"error": reason}; the
run itself never fails for it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataloaders.mfcc import int16_samples
from dataloaders.prep.mouth_crop import fill_missing
from dataloaders.prep.syncnet_crop import MIN_TRACK, OUT_SIZE, SMOOTHING, face_crop, framing
from dataloaders.video_io.decode import iter_video_frames
from models.builders import syncnet_checkpoint_path
from pipelines.clip_sync import lse_mode
from pipelines.sync_scores import SAMPLES_PER_FRAME, SyncScorer, build_sync_scorer
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)
EXPLAINED = ("SyncNet (syncnet_v2.model) on each generated segment's face and its new speech, scored as the papers' "
             "LSE-C / LSE-D: higher LSE-C and lower LSE-D = more in sync; offset in video frames (docs/evaluate.md)")


@dataclass
class SegmentSync:
    scorer: SyncScorer
    weights: str


def prepare_segment_sync(cfg, device) -> SegmentSync | None:
    """syncnet.video_report: None for false, and for auto without the weights (one info line); with true a
    missing or wrong weights file is one LipVoicerError (before any sampling)."""
    mode = lse_mode(cfg["syncnet"].get("video_report", "auto") if "syncnet" in cfg else "auto", "syncnet.video_report")
    if mode == "false":
        return None
    path = syncnet_checkpoint_path(cfg)
    if mode == "auto" and not path.is_file():
        log.info("no LSE-C / LSE-D in the report: SyncNet weights %s not found (python download_checkpoints.py "
                 "--only syncnet_v2)", path)
        return None
    return SegmentSync(build_sync_scorer(cfg, device), str(path))


def _segment_boxes(track, start: int, stop: int) -> np.ndarray | None:
    """(stop - start, 4) boxes of a track over the frames start .. stop - 1 (gaps and ends filled), None without any."""
    by_frame = dict(zip(track.frames, track.faces))
    boxes = fill_missing([by_frame[t].box if t in by_frame else None for t in range(start, stop)])
    return None if boxes is None else np.stack(boxes)


def segment_scores(sync: SegmentSync, video_path: Path, video, audio: np.ndarray, fps: float = 25.0,
                   max_seconds: float | None = None) -> dict[int, dict]:
    """{segment index: {"lse_c", "lse_d", "offset", "windows"} or {"error": reason}} for every generated segment."""
    out: dict[int, dict] = {}
    plans = {}
    for i in video.generated:
        g = video.segments[i]
        boxes = _segment_boxes(video.tracks[g.track], g.start, g.stop)
        if boxes is None or len(boxes) < MIN_TRACK:
            out[i] = {"error": f"the face is tracked over {0 if boxes is None else len(boxes)} frames; SyncNet's "
                               f"framing (a {SMOOTHING}-frame median) needs at least {MIN_TRACK}"}
            continue
        plans[i] = (g.start, g.stop, framing(boxes), np.empty((g.stop - g.start, OUT_SIZE, OUT_SIZE, 3), np.uint8))
    samples = int16_samples(audio)
    ends = {}
    for i, (a, b, _, _) in plans.items():
        ends.setdefault(b - 1, []).append(i)
    last = max((b for a, b, _, _ in plans.values()), default=0)
    for t, frame in enumerate(iter_video_frames(video_path, fps, max_seconds=max_seconds)):
        if t >= last:
            break
        for i, (a, b, f, crops) in plans.items():
            if a <= t < b:
                crops[t - a] = face_crop(frame, *f[t - a])
        for i in ends.get(t, ()):
            a, b, _, crops = plans[i]
            try:
                s = sync.scorer.score(crops, samples[a * SAMPLES_PER_FRAME:b * SAMPLES_PER_FRAME],
                                      source=f"{video_path} {a / fps:.2f}-{b / fps:.2f} s")
                out[i] = s.as_dict()
            except LipVoicerError as e:
                out[i] = {"error": str(e)}
            plans[i] = (a, b, None, None)   # its crops are no longer needed
    for i in plans:
        out.setdefault(i, {"error": "the video decoded to fewer frames than the segment needs"})
    return out


def add_segment_sync(report: dict, sync: SegmentSync | None, video_path: Path, video, audio: np.ndarray,
                     fps: float = 25.0, max_seconds: float | None = None) -> None:
    """report["segments"][i]["sync"] for every generated segment and report["lse"] (what scored them, the mean
    over the scored segments); nothing when sync is None."""
    if sync is None:
        return
    began = time.perf_counter()
    scores = segment_scores(sync, Path(video_path), video, audio, fps, max_seconds)
    for i, s in scores.items():
        report["segments"][i]["sync"] = s
        if "error" in s:
            log.warning("%s: LSE-C / LSE-D of the segment %.2f-%.2f s not computed: %s", video_path,
                        video.segments[i].start / fps, video.segments[i].stop / fps, s["error"])
    good = [s for s in scores.values() if "error" not in s]
    report["lse"] = {"syncnet": sync.weights, "vshift": sync.scorer.vshift, "segments_scored": len(good),
                     "mean_lse_c": round(float(np.mean([s["lse_c"] for s in good])), 4) if good else None,
                     "mean_lse_d": round(float(np.mean([s["lse_d"] for s in good])), 4) if good else None,
                     "seconds": round(time.perf_counter() - began, 3), "about": EXPLAINED}

"""A whole video, streamed, into speech segments with their mouth crops and each face's identity image.

    video = analyse_segments("talk.mp4", cfg, settings, identity_size=224)
    video.segments            # dataloaders/prep/segments.py: Segment, in time order
    video.crops[i]            # (frames + extend, 96, 96) uint8 mouth crops of generated segment i
    video.identities[track]   # uint8 RGB face-centred square of each track that has a generated segment

Passes over the file (frames are never all held at full resolution):

0. decode only (no pictures made): a truncated file, or a raw stream past max_seconds, is refused
   before any detection; the bars get their total;
1. decode + detect: every face of every frame with a small mouth patch (its motion), its lip opening
   and, every HUMAN_STRIDE frames, whether dlib's detector confirms it as a human face (when the
   settings ask for those checks: dataloaders/prep/dlib_faces.py), and every frame to the shot
   detector; then tracks per shot and the segments (plan_segments);
2. decode + crop: each generated segment's mouth crops from its own face's smoothed landmarks
   (dataloaders/prep/mouth_crop.py), and the identity image of every face that gets speech, from
   the frame where its detection scores highest, and its identity descriptor (dlib's face-recognition
   ResNet, the mean over up to DESCRIPTOR_FRAMES of its frames with speech), which
   pipelines/speaker.py matches across shots. Only the crops of segments are kept (96 x 96 bytes per
   frame), never frames.

A video shorter than min_seconds, or with no face in any frame, raises LipVoicerError naming the
file; a video whose segments are all silent is the caller's to refuse (it knows the reasons).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataloaders.face_image import face_square
from dataloaders.prep.dlib_faces import DlibFaces
from dataloaders.prep.face_tracking import Track, track_summary
from dataloaders.prep.mouth_crop import MouthCropper, prepare_landmarks
from dataloaders.prep.mouth_motion import detect_with_mouths
from dataloaders.prep.mouthcrops import _detector, _get, _mean_face, _too_short
from dataloaders.prep.segments import Segment, SegmentSettings, plan_segments
from dataloaders.prep.shots import ShotDetector
from dataloaders.video_io.decode import open_video_stream
from utils.errors import LipVoicerError
from dataloaders.progress import frame_bar

log = logging.getLogger(__name__)

HUMAN_STRIDE = 5        # frames between two human-face checks of a face (dlib's HOG detector, ~5 ms a face)
DESCRIPTOR_FRAMES = 5   # frames whose identity descriptors are averaged per face track (~0.1 s each on a CPU)


@dataclass
class SegmentedVideo:
    frames: int                          # at 25 fps
    shots: list[tuple[int, int]]
    tracks: list[Track]
    segments: list[Segment]
    crops: dict[int, np.ndarray]         # segment index -> mouth crops (frames + extend)
    identities: dict[int, np.ndarray]    # track index -> identity image
    identity_frames: dict[int, int]      # track index -> the frame it comes from
    stats: dict                          # JSON-able detection facts
    descriptors: dict = None             # track index -> (128,) identity descriptor (None without dlib checks)

    @property
    def generated(self) -> list[int]:
        return [i for i, g in enumerate(self.segments) if g.generated]


def _detect_pass(frames, detector, shots: ShotDetector, total, progress, looker: DlibFaces | None) -> list:
    faces_per_frame = []
    with frame_bar(total, "face detection", progress) as bar:
        for t, frame in enumerate(frames):
            faces = detect_with_mouths(detector, frame)
            if looker is not None:
                for face in faces:
                    looker.look(frame, face, check_human=t % HUMAN_STRIDE == 0)
            faces_per_frame.append(faces)
            shots.add(frame)
            bar.update(1)
    return faces_per_frame


def _crop_pass(frames, cfg, video: SegmentedVideo, source: str, identity_size, total, progress, fps: float,
               looker: DlibFaces | None) -> None:
    """Fill video.crops, video.identities and (with a looker) video.descriptors (pass 2)."""
    todo = video.generated
    ranges = {i: (video.segments[i].start, video.segments[i].stop + video.segments[i].extend) for i in todo}
    crop_size = int(_get(cfg, "crop_size", 96))
    window = int(_get(cfg, "smoothing_window", 12))
    landmarks, croppers = {}, {}
    for i in todo:
        g, (a, b) = video.segments[i], ranges[i]
        track = video.tracks[g.track]
        by_frame = dict(zip(track.frames, track.faces))
        lms = prepare_landmarks([by_frame[t].keypoints if t in by_frame else None for t in range(a, b)], window,
                                source)
        landmarks[i] = lms
        croppers[i] = MouthCropper(_mean_face(cfg), lms[0].shape[0], crop_size, int(_get(cfg, "warp_size", 256)),
                                   source)
        video.crops[i] = np.empty((b - a, crop_size, crop_size), np.uint8)
    wanted = {}  # frame -> [(track, box)] for identity images
    described = {}  # frame -> [(track, face)] for identity descriptors
    for tid in sorted({video.segments[i].track for i in todo}):
        track = video.tracks[tid]
        spans = [ranges[i] for i in todo if video.segments[i].track == tid]
        inside = [j for j, t in enumerate(track.frames) if any(a <= t < b for a, b in spans)]
        best = max(inside, key=lambda j: (track.faces[j].score, -j))  # the first of equal scores
        video.identity_frames[tid] = track.frames[best]
        wanted.setdefault(track.frames[best], []).append((tid, track.faces[best].box))
        if looker is not None:
            picks = np.unique(np.linspace(0, len(inside) - 1, min(DESCRIPTOR_FRAMES, len(inside))).round().astype(int))
            for j in picks:
                described.setdefault(track.frames[inside[j]], []).append((tid, track.faces[inside[j]]))
    found: dict[int, list] = {}
    with frame_bar(total, "mouth cropping", progress) as bar:
        for t, frame in enumerate(frames):
            if t >= video.frames:
                break
            for i in todo:
                a, b = ranges[i]
                if a <= t < b:
                    video.crops[i][t - a] = croppers[i](frame, landmarks[i][t - a])
            for tid, box in wanted.get(t, ()):
                if identity_size is not None:
                    video.identities[tid] = face_square(frame, box, out_size=identity_size)
            for tid, face in described.get(t, ()):
                found.setdefault(tid, []).append(looker.descriptor(looker.chip(frame, face)))
            bar.update(1)
    if looker is not None:
        video.descriptors = {tid: np.mean(vs, axis=0) for tid, vs in found.items()}
    for i in todo:
        if len(croppers[i].scales) != ranges[i][1] - ranges[i][0]:
            raise LipVoicerError(f"{source}: the video decoded to fewer frames the second time than the first")
        upscale = float(np.median(croppers[i].scales))
        video.segments[i].extra["mouth_upscale"] = round(upscale, 3)
        limit = _get(cfg, "max_mouth_upscale", None)
        if limit is not None and upscale > float(limit):
            log.warning("%s: the face of the segment %.2f-%.2f s is small: its mouth crops are magnified %.1fx (more "
                        "than prep.max_mouth_upscale=%g) and will be blurry", source, video.segments[i].start / fps,
                        video.segments[i].stop / fps, upscale, float(limit))


def analyse_segments(path: str | Path, cfg, settings: SegmentSettings, *, identity_size: int | None = None,
                     shot_threshold: float = 27.0, min_shot_frames: int = 15, max_seconds: float | None = None,
                     limit_name: str = "generate.max_seconds", progress=False,
                     face_checks: bool | None = None) -> SegmentedVideo:
    """The passes of the module text over `path`. cfg: the project config or its prep part (detector, mean
    face, crop settings); settings: the segment rules; shot_threshold, min_shot_frames: the shot detector's.
    face_checks: run dlib's models (lips, human face, identity); None: when the settings use them."""
    if face_checks is None:
        face_checks = settings.min_human_fraction > 0 or settings.min_lip_activity > 0
    fps = float(_get(cfg, "fps", 25))
    source = str(path)
    stream = open_video_stream(path, fps, max_seconds=max_seconds, limit_name=limit_name, progress=progress)
    min_seconds = settings.min_frames / fps
    if stream.header_seconds is not None and stream.header_seconds < min_seconds - 0.5 / fps:
        raise _too_short(source, stream.header_seconds, min_seconds, fps)
    total = stream.count()
    quiet = open_video_stream(path, fps, max_seconds=max_seconds, limit_name=limit_name)
    shots = ShotDetector(shot_threshold, min_shot_frames, fps)
    looker = DlibFaces() if face_checks else None
    faces_per_frame = _detect_pass(quiet, _detector(cfg), shots, total, progress, looker)
    n = len(faces_per_frame)
    if n < settings.min_frames:
        raise _too_short(source, n / fps, min_seconds, fps)
    if not any(faces_per_frame):
        raise LipVoicerError(f"{source}: no face detected in any frame")
    spans = shots.spans()
    segments, tracks = plan_segments(spans, faces_per_frame, settings)
    stats = {"detector": str(_get(cfg, "detector", "mediapipe")), "frames": n,
             "frames_with_any_face": sum(bool(f) for f in faces_per_frame),
             "shots": [[int(a), int(b)] for a, b in spans]}
    stats["face_fraction"] = round(stats["frames_with_any_face"] / n, 4)
    video = SegmentedVideo(n, spans, tracks, segments, {}, {}, {}, stats)
    if video.generated:
        _crop_pass(quiet, cfg, video, source, identity_size, n, progress, fps, looker)
    summary = track_summary(tracks, None)["tracks"]
    for tid, info in enumerate(summary):
        info["shot"] = next(s for s, (a, b) in enumerate(spans) if a <= tracks[tid].first < b)
        info["identity_frame"] = video.identity_frames.get(tid)
    stats["tracks"] = summary
    return video

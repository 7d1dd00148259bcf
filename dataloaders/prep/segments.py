"""A video as speech segments: shots, the speaking face of each shot, long stretches cut at pauses.

LipVoicer's models work on clips of a few seconds; a real video is cut into those clips here:

1. shots (dataloaders/prep/shots.py): a cut to another camera or scene ends every face track;
2. face tracks within each shot (dataloaders/prep/face_tracking.py); only human faces may speak: a
   track whose detections dlib's HOG detector confirms in fewer than `min_human_fraction` of the
   checked frames (a cartoon, an animal, a face-like pattern) is silent, "not a human face"
   (dataloaders/prep/dlib_faces.py); which of the human ones speak (`prep.track`): `speaking` (default) keeps the face whose mouth moves most
   (dataloaders/prep/mouth_motion.py) among those at least half as long as the longest; `all`
   keeps every face whose mouth moves at least SPEAKING_RATIO times as much as the most active
   one's (each gets its own segments); `longest`, `largest`, `frontal`, `prep.track_index` as in
   data preparation, per shot;
3. a kept face covers the frames from its first to its last detection in the shot, stretched to
   the shot's edges when it is missing there for at most `max_gap_frames`; that stretch must pass
   the checks of a single clip (at least min_frames long, the face found in min_face_fraction of
   its frames, never lost for more than max_gap_frames in a row), else it is a silent segment with
   the reason;
4. within the stretch, only where the lips move as in speech (dataloaders/prep/lip_activity.py: lip
   activity at least `min_lip_activity`); a still, listening or smiling stretch is silent, "the
   mouth does not move as in speech";
5. a speaking run longer than max_frames is cut at the quietest place (lowest mouth motion, a pause)
   between half of max_frames and max_frames from the last cut, leaving no piece shorter than
   min_frames, so no segment is cut mid-word where a pause exists;
6. every frame no kept face covers is part of a silent segment (no face there).

    settings = SegmentSettings(min_frames=25, max_frames=375, min_face_fraction=0.6, max_gap_frames=15)
    segments, tracks = plan_segments(shots, faces_per_frame, settings)

Segments come in time order (a frame may be in two `generated` segments only with prep.track=all).
Pieces of one stretch carry `extend`: frames generated past their end for a crossfade with the next.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dataloaders.prep.face_tracking import MIN_LENGTH_FRACTION, Track, build_tracks, choose_track
from dataloaders.prep.lip_activity import lip_activity, speech_runs, track_lips
from dataloaders.prep.mouth_motion import mean_motion, quietest_frame, track_motion
from dataloaders.prep.mouthcrops import longest_gap

# prep.track=all: a face speaks when its mouth moves at least this fraction of the most active face of the
# shot (measured on the synthetic corpus's faces side by side: a still face 0.34 of the speaking one)
SPEAKING_RATIO = 0.5
GENERATED, SILENT = "generated", "silent"


@dataclass
class SegmentSettings:
    min_frames: int                      # generate.min_seconds in frames: shorter stretches are silent
    max_frames: int                      # generate.segment_seconds in frames: longer ones are cut at pauses
    min_face_fraction: float = 0.0
    max_gap_frames: int | None = None
    rule: str = "speaking"
    index: int | None = None
    min_iou: float = 0.2
    max_keypoint_distance: float = 0.5
    max_gap: int = 12                    # prep.track_max_gap: frames a track may miss and continue
    overlap_frames: int = 1              # frames a piece is generated past its end (crossfade with the next)
    fps: float = 25.0
    min_human_fraction: float = 0.0      # generate.min_human_fraction: 0 = no human-face check
    min_lip_activity: float = 0.0        # generate.min_lip_activity: 0 = every stretch of a kept face speaks
    speech_bridge: int = 12              # silences of at most this many frames inside speech stay speech


@dataclass
class Segment:
    start: int                           # first frame
    stop: int                            # frame after the last
    shot: int
    track: int | None                    # index into the video's tracks (None: no face)
    status: str                          # GENERATED | SILENT
    reason: str = ""
    face_fraction: float = 0.0
    motion: float = 0.0
    extend: int = 0                      # frames generated past `stop` (crossfade with the next piece)
    speaker: int | None = None
    text: str = ""
    text_source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return self.stop - self.start

    @property
    def generated(self) -> bool:
        return self.status == GENERATED

    def report(self, fps: float) -> dict:
        return {"start_s": round(self.start / fps, 3), "end_s": round(self.stop / fps, 3), "shot": self.shot,
                "track": self.track, "speaker": self.speaker, "status": self.status, "reason": self.reason,
                "face_fraction": round(self.face_fraction, 4), "text": self.text, "text_source": self.text_source}


def shot_tracks(shots: list[tuple[int, int]], faces_per_frame: list, s: SegmentSettings) -> list[list[Track]]:
    """The face tracks of each shot, frames numbered in the whole video (no track crosses a cut)."""
    out = []
    for a, b in shots:
        tracks = build_tracks(faces_per_frame[a:b], s.min_iou, s.max_keypoint_distance, s.max_gap)
        for tr in tracks:
            tr.frames = [t + a for t in tr.frames]
        out.append(tracks)
    return out


def is_human(track: Track, s: SegmentSettings) -> bool:
    """The track passes the human-face check (or was not checked)."""
    fraction = track.human_fraction
    return s.min_human_fraction <= 0 or fraction is None or fraction >= s.min_human_fraction


def not_human_reason(track: Track, s: SegmentSettings) -> str:
    checked = [f.human for f in track.faces if f.human is not None]
    return (f"not a human face: dlib's face detector confirms it in {sum(checked)} of {len(checked)} checked frames "
            f"({100.0 * (track.human_fraction or 0.0):.0f} %, below generate.min_human_fraction="
            f"{s.min_human_fraction:g})")


def speaking_tracks(tracks: list[Track], s: SegmentSettings) -> tuple[list[Track], str]:
    """The tracks of one shot that get speech (prep.track), and why none does when the list is empty.
    Only human faces (is_human) are candidates."""
    if not tracks:
        return [], "no face in this shot"
    if s.index is None:
        tracks = [tr for tr in tracks if is_human(tr, s)]
        if not tracks:
            return [], "not a human face"
    if s.index is not None:
        if s.index >= len(tracks):
            return [], (f"prep.track_index={s.index}, but this shot has {len(tracks)} face "
                        f"track{'s' if len(tracks) != 1 else ''}")
        return [tracks[s.index]], ""
    if s.rule in ("longest", "largest", "frontal", "speaking"):
        return [choose_track(tracks, s.rule)], ""
    longest = max(tr.length for tr in tracks)
    pool = [tr for tr in tracks if tr.length >= MIN_LENGTH_FRACTION * longest]
    top = max(tr.motion for tr in pool)
    return [tr for tr in pool if tr.motion >= SPEAKING_RATIO * top], ""


def stretch(track: Track, shot: tuple[int, int], s: SegmentSettings) -> tuple[int, int]:
    """[start, stop) a kept face covers in its shot: its detections, stretched to the shot's edges when
    it is missing there for at most max_gap_frames (no limit: always)."""
    a, b = shot
    start, stop = track.first, track.last + 1
    reach = s.max_gap_frames
    if reach is None or start - a <= reach:
        start = a
    if reach is None or b - stop <= reach:
        stop = b
    return start, stop


def check_stretch(track: Track, start: int, stop: int, s: SegmentSettings) -> tuple[str, float]:
    """(why the stretch cannot be generated or "", the fraction of its frames with the face)."""
    found = np.zeros(stop - start, bool)
    for t in track.frames:
        if start <= t < stop:
            found[t - start] = True
    n, k = len(found), int(found.sum())
    fraction = k / n if n else 0.0
    if n < s.min_frames:
        return (f"the face is on screen for {n / s.fps:.2f} s, less than generate.min_seconds="
                f"{s.min_frames / s.fps:g}"), fraction
    if fraction < s.min_face_fraction:
        return (f"a face is found in only {k} of {n} frames ({100.0 * fraction:.0f} %), below "
                f"generate.min_face_fraction={s.min_face_fraction:g}"), fraction
    gap, at = longest_gap(list(found))
    if s.max_gap_frames is not None and gap > s.max_gap_frames:
        return (f"the face is lost for {gap} frames in a row (frames {start + at}-{start + at + gap - 1}, "
                f"{gap / s.fps:.2f} s), more than generate.max_gap_frames={s.max_gap_frames}"), fraction
    return "", fraction


def cut_points(motion: np.ndarray, max_frames: int, min_frames: int) -> list[int]:
    """Where a stretch of len(motion) frames is cut (offsets from its start): while more than max_frames
    are left, at the quietest frame between max(max_frames // 2, min_frames) and max_frames after the
    last cut, leaving at least min_frames after it."""
    n, pos, cuts = len(motion), 0, []
    while n - pos > max_frames:
        lo = pos + max(max_frames // 2, min_frames, 1)
        hi = min(pos + max_frames, n - min_frames)
        cut = pos + max_frames if hi < lo else quietest_frame(motion, lo, hi + 1)
        cuts.append(cut)
        pos = cut
    return cuts


def _face_fraction(track: Track, start: int, stop: int) -> float:
    return sum(1 for t in track.frames if start <= t < stop) / max(stop - start, 1)


def plan_segments(shots: list[tuple[int, int]], faces_per_frame: list, s: SegmentSettings
                  ) -> tuple[list[Segment], list[Track]]:
    """(segments in time order, the video's face tracks: shot by shot, each shot's in build_tracks' order);
    see the module text. faces_per_frame: every frame's faces (with mouth patches for the motion)."""
    segments: list[Segment] = []
    all_tracks: list[Track] = []
    for shot_i, (shot, tracks) in enumerate(zip(shots, shot_tracks(shots, faces_per_frame, s))):
        base = len(all_tracks)
        all_tracks += tracks
        kept, why_none = speaking_tracks(tracks, s)
        covered = np.zeros(shot[1] - shot[0], bool)
        if not kept and tracks and why_none == "not a human face":
            kept_silent = max(tracks, key=lambda tr: tr.length)   # the face-like thing the detector followed
            start, stop = stretch(kept_silent, shot, s)
            covered[start - shot[0]:stop - shot[0]] = True
            segments.append(Segment(start, stop, shot_i, base + tracks.index(kept_silent), SILENT,
                                    not_human_reason(kept_silent, s), _face_fraction(kept_silent, start, stop)))
        for tr in kept:
            tid = base + next(k for k, other in enumerate(tracks) if other is tr)
            start, stop = stretch(tr, shot, s)
            covered[start - shot[0]:stop - shot[0]] = True
            reason, fraction = check_stretch(tr, start, stop, s)
            motion = track_motion(tr, start, stop)
            if reason:
                segments.append(Segment(start, stop, shot_i, tid, SILENT, reason, fraction, mean_motion(motion)))
                continue
            segments += _speech_segments(tr, tid, shot_i, start, stop, motion, s)
        segments += _silent_runs(covered, shot[0], shot_i, why_none or "no face in these frames")
    segments.sort(key=lambda g: (g.start, g.track if g.track is not None else -1))
    return segments, all_tracks


def _speech_segments(tr: Track, tid: int, shot_i: int, start: int, stop: int, motion: np.ndarray,
                     s: SegmentSettings) -> list[Segment]:
    """The segments of a kept face's checked stretch: silent where the lips do not move as in speech
    (s.min_lip_activity), speech elsewhere, cut at pauses into pieces of at most s.max_frames."""
    out = []
    if s.min_lip_activity > 0:
        activity = lip_activity(track_lips(tr, start, stop))
        runs = speech_runs(activity, s.min_lip_activity, s.min_frames, s.speech_bridge)
    else:
        activity, runs = None, [(0, stop - start, True)]
    for r0, r1, speaks in runs:
        if not speaks:
            known = activity[r0:r1][np.isfinite(activity[r0:r1])]
            level = f"{float(np.median(known)):.3f}" if len(known) else "unknown"
            out.append(Segment(start + r0, start + r1, shot_i, tid, SILENT,
                               f"the mouth does not move as in speech (lip activity {level}, below "
                               f"generate.min_lip_activity={s.min_lip_activity:g})",
                               _face_fraction(tr, start + r0, start + r1), mean_motion(motion[r0:r1])))
            continue
        edges = [r0] + [r0 + c for c in cut_points(motion[r0:r1], s.max_frames, s.min_frames)] + [r1]
        for j, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            more = j + 2 < len(edges)
            out.append(Segment(start + a, start + b, shot_i, tid, GENERATED, "",
                               _face_fraction(tr, start + a, start + b), mean_motion(motion[a:b]),
                               extend=s.overlap_frames if more else 0))
    return out


def _silent_runs(covered: np.ndarray, offset: int, shot: int, reason: str) -> list[Segment]:
    runs, start = [], None
    for i, c in enumerate(list(covered) + [True]):
        if not c and start is None:
            start = i
        elif c and start is not None:
            runs.append(Segment(offset + start, offset + i, shot, None, SILENT, reason))
            start = None
    return runs

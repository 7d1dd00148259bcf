"""One face per clip: detections linked into tracks over time, one track chosen, never two mixed.

A clip can show several faces (an interview, a crowd, a face on a screen behind the speaker).
Taking the largest face of each frame switches between people whenever their sizes cross, and
landmark smoothing then blends two faces into one crop. Here the faces of every frame
(`detector.detect_frame`, dataloaders/prep/face_detection.py) are linked into tracks:

* a detection continues a track when its box overlaps the track's last box by at least
  `prep.track_min_iou` (IoU) and its keypoints lie, on average, within
  `prep.track_max_keypoint_distance` face sizes (sqrt of the box area) of the track's last
  keypoints; several candidates are paired by the lowest total cost (1 - IoU + keypoint
  distance), so two faces never swap tracks;
* a track missing for up to `prep.track_max_gap` frames is continued when its face is found
  again (the missed frames get no landmarks and are interpolated later); after a longer gap
  the face starts a new track;
* a detection that continues no track starts one.

Then one track is kept (`prep.track`):

* `speaking` (default): the face whose mouth moves most (dataloaders/prep/mouth_motion.py: the
  detection pass gives every face a small mouth patch), among tracks at least half as long as the
  longest one; faces without mouth patches all count as still, and the longest of them is kept;
* `longest`: found in the most frames (ties: the larger face);
* `largest`: the largest mean face size;
* `frontal`: the highest mean frontality (nose tip centred between the eyes, Face.frontality);
  `largest` and `frontal` consider only tracks at least half as long as the longest one, so a
  few frames of a passer-by or a false detection are never chosen;
* `all` (inference_real_video.py only): every speaking face gets its own speech segments
  (pipelines/segments.py); data preparation keeps one face per clip and refuses it;
* `prep.track_index=i` (an integer) picks the i-th track instead, tracks numbered from 0 in order
  of their first frame, then from left to right (the box centre in that frame); track_summary
  lists them, so a run can be repeated with another index.

    tracks = build_tracks([detector.detect_frame(f) for f in frames])
    track = choose_track(tracks, rule="longest")
    landmarks = track_landmarks(track, len(frames))     # keypoints of that track, None where it was not found
    info = track_summary(tracks, track)                 # JSON-able summary for logs and reports
    landmarks, info = track_video(detector, frames, prep_cfg)   # all of the above
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dataloaders.prep.faces import Face, box_iou
from dataloaders.prep.mouth_motion import detect_with_mouths, mean_motion, track_motion
from dataloaders.progress import frame_bar
from utils.errors import LipVoicerError

RULES = ("speaking", "longest", "largest", "frontal", "all")
# defaults of the prep.track_* keys (configs/prep/default.yaml)
MIN_IOU = 0.2
MAX_KEYPOINT_DISTANCE = 0.5
MAX_GAP = 12
# `largest` and `frontal` choose among tracks at least this fraction of the longest track's length
MIN_LENGTH_FRACTION = 0.5


@dataclass
class Track:
    """One face over time: its detections in increasing frame order."""
    frames: list[int] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    chosen_by: str = ""   # set by choose_track: the rule, or "index <i>"

    def add(self, frame: int, face: Face) -> None:
        self.frames.append(frame)
        self.faces.append(face)

    @property
    def length(self) -> int:
        return len(self.frames)

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    @property
    def last_face(self) -> Face:
        return self.faces[-1]

    @property
    def mean_size(self) -> float:
        return float(np.mean([f.size for f in self.faces])) if self.faces else 0.0

    @property
    def mean_frontality(self) -> float:
        return float(np.mean([f.frontality for f in self.faces])) if self.faces else 0.0

    @property
    def motion(self) -> float:
        """Mean mouth motion over the track (0 without mouth patches; mouth_motion.track_motion)."""
        return mean_motion(track_motion(self, self.first, self.last + 1)) if self.faces else 0.0

    @property
    def human_fraction(self) -> float | None:
        """The share of the checked detections that dlib's HOG detector confirms as a human face (None: none
        was checked; dataloaders/prep/dlib_faces.py)."""
        checked = [f.human for f in self.faces if f.human is not None]
        return float(np.mean(checked)) if checked else None

    @property
    def mean_score(self) -> float:
        return float(np.mean([f.score for f in self.faces])) if self.faces else 0.0


def keypoint_distance(a: Face, b: Face) -> float:
    """Mean distance between corresponding keypoints of two faces, in face sizes (the larger of the two);
    infinite for different layouts (4 against 68 points)."""
    ka, kb = np.asarray(a.keypoints, dtype=np.float64), np.asarray(b.keypoints, dtype=np.float64)
    if ka.shape != kb.shape:
        return float("inf")
    scale = max(a.size, b.size, 1e-6)
    return float(np.linalg.norm(ka - kb, axis=1).mean() / scale)


def _link_cost(track_face: Face, face: Face, min_iou: float, max_keypoint_distance: float) -> float | None:
    """1 - IoU + keypoint distance, or None when the pair may not be linked."""
    iou = box_iou(track_face.box, face.box)
    if iou < min_iou:
        return None
    dist = keypoint_distance(track_face, face)
    if dist > max_keypoint_distance:
        return None
    return (1.0 - iou) + dist


def _assign(costs: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs of finite cost with the lowest total cost, as many pairs as possible."""
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415 - SciPy loads only when tracking

    finite = np.isfinite(costs)
    if not finite.any():
        return []
    big = (costs[finite].max() + 1.0) * (min(costs.shape) + 1)  # any real pair beats a forbidden one
    rows, cols = linear_sum_assignment(np.where(finite, costs, big))
    return [(r, c) for r, c in zip(rows, cols) if finite[r, c]]


def build_tracks(faces_per_frame: list[list[Face]], min_iou: float = MIN_IOU,
                 max_keypoint_distance: float = MAX_KEYPOINT_DISTANCE, max_gap: int = MAX_GAP) -> list[Track]:
    """Link the faces of consecutive frames into tracks (see the module text). Returns the tracks in
    index order: by first frame, then left to right (box centre in that frame)."""
    tracks: list[Track] = []
    for t, faces in enumerate(faces_per_frame):
        faces = list(faces or [])
        live = [tr for tr in tracks if t - tr.last - 1 <= max_gap]
        costs = np.full((len(live), len(faces)), np.inf)
        for i, tr in enumerate(live):
            for j, face in enumerate(faces):
                cost = _link_cost(tr.last_face, face, min_iou, max_keypoint_distance)
                if cost is not None:
                    costs[i, j] = cost
        taken = set()
        for i, j in _assign(costs) if live and faces else []:
            live[i].add(t, faces[j])
            taken.add(j)
        for j, face in enumerate(faces):
            if j not in taken:
                tracks.append(Track(frames=[t], faces=[face]))
    return sorted(tracks, key=lambda tr: (tr.first, float(tr.faces[0].center[0])))


def choose_track(tracks: list[Track], rule: str = "longest", index: int | None = None) -> Track | None:
    """The track to crop (see the module text); None when there is no track at all (no face in the clip).
    index (prep.track_index): the index-th track of `tracks` (build_tracks' order) instead of the rule."""
    if rule not in RULES:
        raise LipVoicerError(f"prep.track: unknown rule '{rule}' (use {' | '.join(RULES)})")
    if index is not None and (isinstance(index, bool) or not isinstance(index, (int, np.integer))):
        raise LipVoicerError(f"prep.track_index: {index!r} is not a track number (an integer from 0, or null)")
    if rule == "all":
        raise LipVoicerError("prep.track=all: data preparation keeps one face per clip (all gives every speaking "
                             "face its own segments in inference_real_video.py); use speaking, longest, largest or "
                             "frontal")
    if not tracks:
        return None
    if index is not None:
        if not 0 <= int(index) < len(tracks):
            raise LipVoicerError(f"prep.track_index={int(index)}, but the clip has {len(tracks)} face "
                                 f"track{'s' if len(tracks) != 1 else ''} (0..{len(tracks) - 1}, numbered by "
                                 f"first frame, then left to right)")
        chosen = tracks[int(index)]
        chosen.chosen_by = f"index {int(index)}"
        return chosen
    longest = max(tr.length for tr in tracks)
    if rule == "longest":
        key = lambda tr: (tr.length, tr.mean_size)  # noqa: E731
        pool = tracks
    else:
        pool = [tr for tr in tracks if tr.length >= MIN_LENGTH_FRACTION * longest]
        if rule == "largest":
            key = lambda tr: (tr.mean_size, tr.length)  # noqa: E731
        elif rule == "speaking":
            key = lambda tr: (round(tr.motion, 6), tr.length, tr.mean_size)  # noqa: E731
        else:
            key = lambda tr: (tr.mean_frontality, tr.length)  # noqa: E731
    chosen = max(pool, key=key)  # max keeps the first of equals: the earlier / left-most track
    chosen.chosen_by = rule
    return chosen


def _per_frame(track: Track | None, n_frames: int, attribute: str) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = [None] * int(n_frames)
    if track is not None:
        for t, face in zip(track.frames, track.faces):
            if 0 <= t < n_frames:
                out[t] = getattr(face, attribute)
    return out


def track_landmarks(track: Track | None, n_frames: int) -> list[np.ndarray | None]:
    """Per frame the keypoints of `track` only, None in frames where it has no detection."""
    return _per_frame(track, n_frames, "keypoints")


def track_boxes(track: Track | None, n_frames: int) -> list[np.ndarray | None]:
    """Per frame the box of `track` only (x0, y0, x1, y1), None where it has no detection."""
    return _per_frame(track, n_frames, "box")


def track_summary(tracks: list[Track], chosen: Track | None, n_frames: int | None = None) -> dict:
    """JSON-able summary: how many tracks, which one was chosen (index in `tracks`) and how, how many
    frames it covers, and per track its frames, mean size, frontality and score."""
    index = next((i for i, tr in enumerate(tracks) if tr is chosen), None)
    info = {
        "n_tracks": len(tracks),
        "chosen": index,
        "rule": chosen.chosen_by if chosen is not None else None,
        "frames_in_chosen": chosen.length if chosen is not None else 0,
        "tracks": [{"first": tr.first, "last": tr.last, "frames": tr.length, "mean_size": round(tr.mean_size, 1),
                    "frontality": round(tr.mean_frontality, 3), "score": round(tr.mean_score, 3),
                    "mouth_motion": round(tr.motion, 4),
                    "human_fraction": None if tr.human_fraction is None else round(tr.human_fraction, 3),
                    "centre": [round(float(v), 1) for v in tr.faces[0].center]}
                   for tr in tracks],
    }
    if n_frames is not None:
        info["n_frames"] = int(n_frames)
        info["chosen_fraction"] = round(info["frames_in_chosen"] / n_frames, 4) if n_frames else 0.0
    return info


def tracking_settings(prep_cfg) -> dict:
    """The validated prep.track* settings: rule, index, min_iou, max_keypoint_distance, max_gap.
    A bad value raises a LipVoicerError naming its key."""
    get = prep_cfg.get if hasattr(prep_cfg, "get") else (lambda k, d=None: d)

    def number(key, default, lo, hi, kind=float):
        value = get(key, default)
        value = default if value is None else value
        try:
            if isinstance(value, bool):
                raise ValueError
            number_ = kind(value)
            if kind is int and number_ != float(value):
                raise ValueError
        except (TypeError, ValueError):
            raise LipVoicerError(f"prep.{key}: {value!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not lo <= number_ <= hi:
            raise LipVoicerError(f"prep.{key}: {number_} is outside {lo}..{hi}")
        return number_

    rule = str(get("track", "speaking"))
    if rule not in RULES:
        raise LipVoicerError(f"prep.track: unknown rule '{rule}' (use {' | '.join(RULES)})")
    index = get("track_index", None)
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or int(index) < 0:
            raise LipVoicerError(f"prep.track_index: {index!r} is not a track number (an integer from 0, or null)")
        index = int(index)
    return {"rule": rule, "index": index,
            "min_iou": number("track_min_iou", MIN_IOU, 0.0, 1.0),
            "max_keypoint_distance": number("track_max_keypoint_distance", MAX_KEYPOINT_DISTANCE, 0.0, float("inf")),
            "max_gap": number("track_max_gap", MAX_GAP, 0, 10**9, int)}


def detect_faces(detector, frames, progress=False) -> list[list[Face]]:
    """detector.detect_frame over the frames, each face with its mouth patch (progress: a bar, dataloaders.progress.frame_bar)."""
    out = []
    with frame_bar(len(frames), "face detection", progress) as bar:
        for frame in frames:
            out.append(detect_with_mouths(detector, frame))
            bar.update(1)
    return out


def track_video(detector, frames, prep_cfg=None, progress=False) -> tuple[list[np.ndarray | None], dict]:
    """(per-frame keypoints of the one chosen face track, None where it has no detection; track_summary
    plus `boxes`, that track's per-frame boxes as lists or None) for RGB frames, with the prep.track*
    settings of prep_cfg. No face in the clip: all None and chosen None."""
    settings = tracking_settings(prep_cfg or {})
    faces = detect_faces(detector, frames, progress=progress)
    tracks = build_tracks(faces, settings["min_iou"], settings["max_keypoint_distance"], settings["max_gap"])
    chosen = choose_track(tracks, settings["rule"], settings["index"])
    info = track_summary(tracks, chosen, n_frames=len(frames))
    info["frames_with_any_face"] = sum(bool(f) for f in faces)
    info["boxes"] = [None if b is None else [round(float(v), 2) for v in b] for b in track_boxes(chosen, len(frames))]
    return track_landmarks(chosen, len(frames)), info

"""One face track per clip (dataloaders/prep/face_tracking.py): faces linked over time by box overlap
and keypoint distance, one track chosen (longest / largest / frontal / by index), never two mixed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataloaders.prep.faces import Face
from dataloaders.prep.face_tracking import (build_tracks, choose_track, track_landmarks, track_summary,
                                            tracking_settings)
from utils.errors import LipVoicerError


def face_at(cx: float, cy: float, side: float = 100.0, score: float = 0.9, nose_shift: float = 0.0) -> Face:
    """A face box centred at (cx, cy) with MediaPipe-like keypoints (right eye, left eye, nose, mouth);
    nose_shift moves the nose along the eye line (in half eye distances: a turned head)."""
    h = side / 2
    eye = side * 0.2
    kps = np.array([[cx - eye, cy - 0.15 * side], [cx + eye, cy - 0.15 * side],
                    [cx + nose_shift * eye, cy + 0.05 * side], [cx, cy + 0.25 * side]])
    return Face(box=np.array([cx - h, cy - h, cx + h, cy + h]), score=score, keypoints=kps)


def switches(sides: list) -> int:
    known = [s for s in sides if s is not None]
    return sum(a != b for a, b in zip(known, known[1:]))


# ----------------------------------------------------------------------------- the two-face clip
@pytest.fixture(scope="module")
def two_faces():
    pytest.importorskip("mediapipe")
    from dataloaders.prep.face_detection import make_detector
    from tests.test_face_detection import two_face_clip

    frames, middle = two_face_clip()
    det = make_detector({"detector": "mediapipe"})
    faces = [det.detect_frame(f) for f in frames]
    det.close()
    return frames, middle, faces


def test_two_faces_side_by_side_one_track(two_faces):
    """The largest face per frame switches between the two people; one track never does."""
    from dataloaders.prep.faces import largest

    frames, middle, faces = two_faces
    n = len(frames)
    assert sum(len(f) == 2 for f in faces) >= 0.9 * n   # both faces found in (nearly) every frame
    before = [None if largest(f) is None else int(largest(f).center[0] > middle[t]) for t, f in enumerate(faces)]
    tracks = build_tracks(faces)
    track = choose_track(tracks, "longest")
    landmarks = track_landmarks(track, n)
    after = [None if k is None else int(k[:, 0].mean() > middle[t]) for t, k in enumerate(landmarks)]
    print(f"[two faces, {n} frames] chosen face switches: largest per frame {switches(before)}, "
          f"one track {switches(after)}; tracks {len(tracks)}, frames in the chosen one {track.length}")
    assert switches(before) >= 4
    assert switches(after) == 0
    assert len(tracks) == 2 and track.length >= 0.9 * n
    # by index: 0 is the left face (both appear in frame 0; left to right), 1 the right one
    for index, side in ((0, 0), (1, 1)):
        chosen = choose_track(tracks, index=index)
        lm = track_landmarks(chosen, n)
        assert {int(k[:, 0].mean() > middle[t]) for t, k in enumerate(lm) if k is not None} == {side}
        assert track_summary(tracks, chosen)["rule"] == f"index {index}"
    with pytest.raises(LipVoicerError, match=r"prep.track_index=2, but the clip has 2 face tracks \(0\.\.1, "
                                             r"numbered by first frame, then left to right\)"):
        choose_track(tracks, index=2)


def test_track_video_end_to_end(two_faces):
    from dataloaders.prep.face_tracking import track_video
    from tests.test_face_detection import two_face_clip

    pytest.importorskip("mediapipe")
    from dataloaders.prep.face_detection import make_detector

    frames, middle = two_face_clip(12)
    det = make_detector({"detector": "mediapipe"})
    landmarks, info = track_video(det, frames, {"track": "longest", "track_index": 1})
    det.close()
    assert len(landmarks) == len(frames)
    assert all(k is None or k[:, 0].mean() > middle[0] for k in landmarks)
    assert info["n_tracks"] == 2 and info["chosen"] == 1 and info["rule"] == "index 1"
    assert info["n_frames"] == 12 and info["frames_in_chosen"] == sum(k is not None for k in landmarks)
    assert len(info["boxes"]) == 12 and all(b is None or b[0] > middle[0] - 20 for b in info["boxes"])
    json.dumps(info)


# ----------------------------------------------------------------------------- linking rules
def test_short_miss_bridged_long_gap_starts_new_track():
    walk = [[face_at(100 + 2 * t, 100)] for t in range(20)]
    gapped = [f if not 8 <= t < 12 else [] for t, f in enumerate(walk)]   # 4 frames without the face
    tracks = build_tracks(gapped, max_gap=5)
    assert len(tracks) == 1
    lm = track_landmarks(tracks[0], 20)
    assert [t for t, k in enumerate(lm) if k is None] == [8, 9, 10, 11]
    split = build_tracks(gapped, max_gap=3)
    assert [(tr.first, tr.last) for tr in split] == [(0, 7), (12, 19)]
    assert choose_track(split, "longest") is split[0]   # 8 frames against 8: the earlier one


def test_faces_never_swap_tracks_when_they_pass_close():
    """Two faces next to each other: each detection goes to the track it overlaps, even when the list
    order of the detections changes from frame to frame."""
    frames = []
    for t in range(10):
        a, b = face_at(100 + t, 100), face_at(180 - t, 100)
        frames.append([a, b] if t % 2 else [b, a])
    tracks = build_tracks(frames)
    assert len(tracks) == 2
    assert [round(f.center[0]) for f in tracks[0].faces] == [100 + t for t in range(10)]
    assert [round(f.center[0]) for f in tracks[1].faces] == [180 - t for t in range(10)]


def test_keypoint_distance_separates_overlapping_faces():
    """A face that jumps to a box overlapping the old one but with its keypoints far away (another
    face in front) is not linked; with a loose keypoint threshold it is."""
    first = face_at(100, 100)
    other = face_at(100, 100)
    other.keypoints = other.keypoints + np.array([35.0, 0.0])   # same box, keypoints 0.35 face sizes away
    assert len(build_tracks([[first], [other]], max_keypoint_distance=0.2)) == 2
    assert len(build_tracks([[first], [other]], max_keypoint_distance=0.5)) == 1
    far = face_at(300, 100)
    assert len(build_tracks([[first], [far]])) == 2   # no overlap: a new track


def test_rules_largest_and_frontal():
    n = 20
    frames = []
    for t in range(n):
        faces = [face_at(100, 100, side=80, nose_shift=0.0),            # frontal, small
                 face_at(300, 100, side=140, nose_shift=0.7)]           # turned, large
        if t < 3:
            faces.append(face_at(500, 100, side=200))                  # a large face for 3 frames only
        frames.append(faces)
    tracks = build_tracks(frames)
    assert len(tracks) == 3
    assert choose_track(tracks, "largest").faces[0].center[0] == 300   # the 3-frame face is too short
    assert choose_track(tracks, "frontal").faces[0].center[0] == 100
    assert choose_track(tracks, "longest").faces[0].center[0] == 300   # equal length: the larger face
    assert choose_track([], "longest") is None and choose_track([], index=3) is None
    info = track_summary(tracks, choose_track(tracks, "frontal"), n_frames=n)
    assert info["n_tracks"] == 3 and info["chosen"] == 0 and info["rule"] == "frontal"
    assert info["frames_in_chosen"] == 20 and info["chosen_fraction"] == 1.0
    assert [t["frames"] for t in info["tracks"]] == [20, 20, 3]
    assert info["tracks"][0]["frontality"] == 1.0 and info["tracks"][1]["frontality"] == pytest.approx(0.3)
    json.dumps(info)
    assert track_landmarks(None, 3) == [None, None, None]


def test_tracking_settings_from_the_config():
    from tests.helpers import compose_cfg

    cfg = compose_cfg()
    s = tracking_settings(cfg.prep)
    assert s == {"rule": "speaking", "index": None, "min_iou": 0.2, "max_keypoint_distance": 0.5, "max_gap": 12}
    assert tracking_settings(compose_cfg(["prep.track=frontal", "prep.track_index=1"]).prep)["index"] == 1


@pytest.mark.parametrize("override, message", [
    ({"track": "biggest"}, r"prep.track: unknown rule 'biggest' \(use speaking \| longest \| largest \| frontal \| all\)"),
    ({"track_index": -1}, r"prep.track_index: -1 is not a track number \(an integer from 0, or null\)"),
    ({"track_index": "two"}, r"prep.track_index: 'two' is not a track number"),
    ({"track_min_iou": 1.5}, r"prep.track_min_iou: 1.5 is outside 0.0..1.0"),
    ({"track_max_gap": 2.5}, r"prep.track_max_gap: 2.5 is not an integer"),
    ({"track_max_keypoint_distance": "far"}, r"prep.track_max_keypoint_distance: 'far' is not a number"),
])
def test_bad_tracking_settings_name_the_key(override, message):
    with pytest.raises(LipVoicerError, match=message):
        tracking_settings(override)


def test_choose_track_errors():
    tracks = build_tracks([[face_at(100, 100)]])
    with pytest.raises(LipVoicerError, match=r"prep.track: unknown rule 'oldest'"):
        choose_track(tracks, "oldest")
    with pytest.raises(LipVoicerError, match=r"prep.track_index=1, but the clip has 1 face track \(0\.\.0,"):
        choose_track(tracks, index=1)
    with pytest.raises(LipVoicerError, match=r"prep.track_index: True is not a track number"):
        choose_track(tracks, index=True)

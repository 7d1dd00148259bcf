"""Face detection per frame (dataloaders/prep/face_detection.py): MediaPipe's two models combined in
every frame, on clips built to show where one model alone fails.

The clips are rendered from the synthetic corpus's face (dataloaders/synthetic/corpus.py: the
astronaut photograph with a moving mouth), cut out as an oval and placed on a plain background at a
chosen size and position, so that a test knows where each face is. tests/test_face_tracking.py uses
the same builders.
"""
from __future__ import annotations

import numpy as np
import pytest

from utils.errors import LipVoicerError

pytest.importorskip("mediapipe")

BACKGROUND = (96, 104, 112)


# ----------------------------------------------------------------------------- clip builders
def face_layer(face_px: float, cx: float, cy: float, size: tuple[int, int], t: int = 0, angle: float = 0.0):
    """(RGB float32 (H, W, 3), alpha (H, W)) of one face: the astronaut's head, FACE_SPAN photograph pixels
    scaled to face_px, centred at (cx, cy) in an H x W frame, mouth shape changing with t."""
    import cv2

    from dataloaders.synthetic.corpus import FACE_CENTRE, FACE_SPAN, _face

    model = _face()
    photo = model.render(np.array([0.4 + 0.4 * np.sin(t / 2.5), 1.0, 0.2, 0.5]))
    mask = np.zeros(photo.shape[:2], np.float32)
    fx, fy = FACE_CENTRE
    cv2.ellipse(mask, (int(fx), int(fy - 5)), (105, 135), 0, 0, 360, 1.0, -1)   # head and neck
    mask = cv2.GaussianBlur(mask, (0, 0), 4)
    s = face_px / FACE_SPAN
    a = np.deg2rad(angle)
    c, sn = np.cos(a) * s, np.sin(a) * s
    m = np.array([[c, -sn, cx - (c * fx - sn * fy)], [sn, c, cy - (sn * fx + c * fy)]])
    h, w = size
    rgb = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return rgb, alpha


def true_keypoints(face_px: float, cx: float, cy: float, angle: float = 0.0) -> np.ndarray:
    """Where face_layer puts the photograph's right eye, left eye and mouth centre (3, 2)."""
    from dataloaders.synthetic.corpus import ASTRONAUT_EYES, FACE_CENTRE, FACE_SPAN, MOUTH_CENTRE

    s = face_px / FACE_SPAN
    a = np.deg2rad(angle)
    c, sn = np.cos(a) * s, np.sin(a) * s
    fx, fy = FACE_CENTRE
    m = np.array([[c, -sn, cx - (c * fx - sn * fy)], [sn, c, cy - (sn * fx + c * fy)]])
    return np.array([ASTRONAUT_EYES[0], ASTRONAUT_EYES[1], MOUTH_CENTRE]) @ m[:, :2].T + m[:, 2]


def keypoint_error(face, truth: np.ndarray) -> float:
    """Mean distance of a MediaPipe face's eyes and mouth centre from the truth, in eye distances."""
    return float(np.linalg.norm(face.keypoints[[0, 1, 3]] - truth, axis=1).mean() / np.linalg.norm(truth[1] - truth[0]))


def compose(size: tuple[int, int], faces: list[dict], t: int = 0) -> np.ndarray:
    """One uint8 RGB frame of size (H, W) with the given faces (dicts of face_layer's face_px, cx, cy,
    angle) drawn in order on the plain background."""
    frame = np.empty(size + (3,), np.float32)
    frame[:] = BACKGROUND
    for f in faces:
        rgb, alpha = face_layer(f["face_px"], f["cx"], f["cy"], size, t, f.get("angle", 0.0))
        frame = frame * (1 - alpha[..., None]) + rgb * alpha[..., None]
    return np.clip(frame, 0, 255).astype(np.uint8)


def sway(t: int, amount: float = 1.0) -> dict:
    """Slow head motion: a few pixels of shift and degrees of roll."""
    return {"dx": amount * 6 * np.sin(t / 5), "dy": amount * 5 * np.sin(t / 7), "angle": amount * 4 * np.sin(t / 6)}


def closeup_clip(n: int = 40) -> np.ndarray:
    """A tight close-up: 224 x 224 frames, the face size breathing around where MediaPipe's full-range
    model stops finding it. On LRS3 that happens already at its typical 157 px face; the rendered face
    is found up to a box of about 200 px, so here the box (short-range model) is about 190-235 px."""
    frames = []
    for t in range(n):
        m = sway(t)
        face = {"face_px": 480 + 40 * np.sin(t / 3.0), "cx": 112 + m["dx"], "cy": 118 + m["dy"], "angle": m["angle"]}
        frames.append(compose((224, 224), [face], t))
    return np.stack(frames)


def wide_clip(n: int = 30, face_px: float = 100, truth: list | None = None) -> np.ndarray:
    """A wide shot: 360 x 640 frames, one small face (face_px 100: a box of about 45 px) off-centre;
    truth: a list to receive each frame's true_keypoints."""
    frames = []
    for t in range(n):
        m = sway(t)
        face = {"face_px": face_px, "cx": 420 + m["dx"], "cy": 150 + m["dy"], "angle": m["angle"]}
        frames.append(compose((360, 640), [face], t))
        if truth is not None:
            truth.append(true_keypoints(face["face_px"], face["cx"], face["cy"], face["angle"]))
    return np.stack(frames)


def two_face_clip(n: int = 50) -> tuple[np.ndarray, list[float]]:
    """Two faces side by side in 224 x 448 frames whose sizes take turns being the larger (about
    every 8 frames); returns the frames and the x of the frame's middle (left face: x below it)."""
    frames = []
    for t in range(n):
        grow = 0.1 * np.sin(2 * np.pi * t / 16.0)
        left = {"face_px": 190 * (1 + grow), "cx": 112 + 2 * np.sin(t / 4), "cy": 112, "angle": 2 * np.sin(t / 5)}
        right = {"face_px": 190 * (1 - grow), "cx": 336 + 2 * np.sin(t / 3), "cy": 115, "angle": -2 * np.sin(t / 6)}
        frames.append(compose((224, 448), [left, right], t))
    return np.stack(frames), [224.0] * n


# ----------------------------------------------------------------------------- the rules compared
def old_rule(det, frames) -> list:
    """The keypoints of each frame as the previous rule found them (still MediaPipeDetector.detect_video):
    the full-range model over the whole clip, the short-range one only when the first found no face in
    any frame; the largest face per frame."""
    return det.detect_video(frames)


def fraction(faces) -> float:
    return sum(f is not None and (not isinstance(f, list) or len(f) > 0) for f in faces) / len(faces)


@pytest.fixture(scope="module")
def detector():
    from dataloaders.prep.face_detection import make_detector

    det = make_detector({"detector": "mediapipe"})
    yield det
    det.close()


def test_closeup_detected_in_every_frame_with_both_models(detector):
    """The tight close-up: the full-range model finds the face in some frames only, so the old rule
    (which then never tries the short-range model) interpolates the rest; per frame, both models
    together find it in every frame, keeping the short-range detection (made for large faces)."""
    frames = closeup_clip()
    before = fraction(old_rule(detector, frames))
    per_frame = [detector.detect_frame(f) for f in frames]
    after = fraction(per_frame)
    print(f"[close-up 224 px, {len(frames)} frames] detected: old rule {before:.0%}, per-frame rule {after:.0%}")
    assert before < 0.8
    assert after == 1.0
    assert all(len(faces) == 1 for faces in per_frame)
    sources = {faces[0].source for faces in per_frame}
    assert "short_range" in sources
    boxes = np.array([faces[0].box for faces in per_frame])
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert 185 < sides.min() and sides.max() < 245
    # one face track over the whole clip, whichever model found the face in a frame
    from dataloaders.prep.face_tracking import build_tracks

    assert [t.length for t in build_tracks(per_frame)] == [len(frames)]


def test_wide_shot_detected_in_every_frame(detector):
    """A small face in a wide frame: the full-range model finds it, the short-range one alone would not;
    the per-frame rule keeps the full-range detections (no regression from running both)."""
    frames = wide_clip()
    before = fraction(old_rule(detector, frames))
    short_only = fraction([detector.detect_image(f, detector.SHORT_RANGE) for f in frames])
    per_frame = [detector.detect_frame(f) for f in frames]
    after = fraction(per_frame)
    print(f"[wide shot 640 x 360, {len(frames)} frames] detected: old rule {before:.0%}, short-range alone "
          f"{short_only:.0%}, per-frame rule {after:.0%}")
    assert after >= 0.95 and after >= before
    assert short_only < 0.5
    for faces in per_frame:
        if faces:
            x0, y0, x1, y1 = faces[0].box
            assert 380 < (x0 + x1) / 2 < 460 and 110 < (y0 + y1) / 2 < 190
            assert faces[0].source == "full_range"
    from dataloaders.prep.face_tracking import build_tracks

    assert [t.length for t in build_tracks(per_frame)] == [sum(bool(f) for f in per_frame)]


def test_where_both_models_find_the_face_the_one_made_for_its_size_is_kept(detector):
    """A face of about 90 px in a 640 px wide frame: both models find it, the short-range one with
    keypoints about 3 times further off; the full-range detection is kept. In a close-up it is the
    other way round (short-range kept, closer to the truth)."""
    truth = []
    frames = wide_clip(12, face_px=200, truth=truth)
    kept, other = [], []
    for frame, tr in zip(frames, truth):
        full = detector.detect_image(frame, detector.FULL_RANGE)
        short = detector.detect_image(frame, detector.SHORT_RANGE)
        assert full and short
        faces = detector.detect_frame(frame)
        assert len(faces) == 1 and faces[0].source == "full_range"
        kept.append(keypoint_error(full[0], tr))
        other.append(keypoint_error(short[0], tr))
    print(f"[face of ~90 px in 640 x 360] keypoint error (eye distances): full-range (kept) {np.mean(kept):.3f}, "
          f"short-range {np.mean(other):.3f}")
    assert np.mean(kept) < 0.15 and np.mean(other) > 2 * np.mean(kept)
    kept, other = [], []
    for t in range(0, 12, 2):   # the close-up's frames where both find the face
        m = sway(t)
        face = {"face_px": 400, "cx": 112 + m["dx"], "cy": 118 + m["dy"], "angle": m["angle"]}
        frame, tr = compose((224, 224), [face], t), true_keypoints(**face)
        full = detector.detect_image(frame, detector.FULL_RANGE)
        faces = detector.detect_frame(frame)
        assert full and faces[0].source == "short_range"
        kept.append(keypoint_error(faces[0], tr))
        other.append(keypoint_error(full[0], tr))
    assert np.mean(kept) < np.mean(other)


def test_better_detection_kept_and_duplicates_merged():
    from dataloaders.prep.faces import Face, box_iou, box_overlap, merge_detections

    def face(box, score, source):
        return Face(box=np.array(box, float), score=score, keypoints=np.zeros((4, 2)), source=source)

    a = face([10, 10, 110, 110], 0.7, "full_range")
    b = face([15, 18, 105, 112], 0.9, "short_range")   # the same face, better score
    c = face([200, 10, 260, 70], 0.6, "full_range")    # another face
    part = face([5, 30, 60, 85], 0.65, "full_range")   # an eye and a cheek of the first face taken for a face
    assert box_iou(a.box, b.box) > 0.5 and box_iou(a.box, c.box) == 0.0 and box_iou(b.box, part.box) < 0.5
    assert box_overlap(b.box, part.box) > 0.8
    merged = merge_detections([a, c, part], [b])
    assert [f.source for f in merged] == ["short_range", "full_range"] and merged[0] is b and merged[1] is c
    assert merge_detections([], []) == []
    assert a.size == pytest.approx(100.0) and np.allclose(a.center, [60, 60])


def test_frontality_of_both_layouts():
    from dataloaders.prep.faces import frontality

    frontal = np.array([[40.0, 50], [80, 50], [60, 70], [60, 90]])
    turned = frontal.copy()
    turned[2, 0] = 75   # nose tip 3/4 of the way to the left eye
    assert frontality(frontal) == pytest.approx(1.0)
    assert frontality(turned) == pytest.approx(0.25)
    pts = np.zeros((68, 2))
    pts[36:42] = [40, 50]
    pts[42:48] = [80, 50]
    pts[30] = [60, 70]
    assert frontality(pts) == pytest.approx(1.0)
    assert frontality(np.zeros((5, 2))) == 0.0


def test_blank_frames_give_no_face(detector):
    blank = np.full((128, 128, 3), 128, np.uint8)
    assert detector.detect_frame(blank) == []
    assert detector.n_points == 4


def test_backend_names_and_errors(monkeypatch):
    import importlib.util

    from dataloaders.prep import face_detection
    from dataloaders.prep.face_detection import check_backend, make_detector

    check_backend("mediapipe")
    with pytest.raises(LipVoicerError, match=r"unknown face detector 'dlib' \(prep.detector: mediapipe \| "
                                             r"face_alignment \| retinaface_fan\)"):
        check_backend("dlib")
    with pytest.raises(LipVoicerError, match="unknown face detector 'fan'"):
        make_detector({"detector": "fan"})
    real = importlib.util.find_spec
    monkeypatch.setattr(face_detection.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("face_alignment", "mediapipe") else real(name, *a))
    with pytest.raises(LipVoicerError, match=r"pip install --no-deps face-alignment==1\.5\.0 numba \(--no-deps: "
                                             r"its opencv-python requirement would clash"):
        check_backend("face_alignment")
    with pytest.raises(LipVoicerError, match=r"pip install mediapipe==0\.10\.21"):
        check_backend("mediapipe")

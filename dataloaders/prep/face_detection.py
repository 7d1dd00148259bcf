"""Face detection and landmarks for mouth cropping.

Three backends, chosen by `prep.detector` (docs/data.md, "Face detector backends"):

* `mediapipe` (default; `pip install mediapipe==0.10.21`, models inside the wheel):
  MediaPipe's face detector gives, per face, a box and 4 keypoints used here in this
  order: right eye, left eye, nose tip, mouth centre (the subject's right eye is on
  the image's left). `detect_frame` runs both of its models on every frame, the
  full-range one (faces up to ~5 m: small faces in wide shots) and the short-range one
  (faces within ~2 m: close-ups), and keeps, for each face, the detection of the model
  made for its size (the one with the more accurate keypoints: docs/data.md).
* `face_alignment`: the `face-alignment` package from PyPI (S3FD or RetinaFace boxes +
  FAN 68-point landmarks in the iBUG layout, dataloaders/prep/fan_landmarks.py), the kind of
  landmarks the published models' training crops were made with. Installed without its
  dependencies: `pip install --no-deps face-alignment==1.5.0 numba`.
* `retinaface_fan`: RetinaFace boxes + FAN 68-point landmarks (iBUG layout) from the
  `ibug.face_detection` and `ibug.face_alignment` packages, which are not on PyPI
  (see docs/data.md). Selecting it without them raises a LipVoicerError saying how to
  install them.

`detector.detect_frame(rgb)` returns every face of one frame; dataloaders/prep/face_tracking.py
links them into tracks over a clip and keeps one. MediaPipeDetector.detect_video keeps the
previous rule, for comparison only: the full-range model over the clip, the short-range one only
when the first found no face at all, the largest face per frame (None without one).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from dataloaders.video_io import frame_bar
from utils.errors import LipVoicerError
from utils.native_output import native_stderr_silenced

IBUG_INSTALL = (
    "the retinaface_fan detector needs the ibug packages, which are not on PyPI: "
    "git clone https://github.com/hhj1897/face_detection && git -C face_detection lfs pull && "
    "pip install -e face_detection; git clone https://github.com/hhj1897/face_alignment && "
    "pip install -e face_alignment (or use prep.detector=mediapipe)"
)
MEDIAPIPE_INSTALL = "the mediapipe detector needs `pip install mediapipe==0.10.21` (see requirements.txt)"
FACE_ALIGNMENT_INSTALL = (
    "the face_alignment detector needs the face-alignment package: pip install --no-deps face-alignment==1.5.0 numba "
    "(--no-deps: its opencv-python requirement would clash with opencv-contrib-python; see docs/data.md)"
)
DETECTORS = ("mediapipe", "face_alignment", "retinaface_fan")
# two detections of one frame (e.g. of MediaPipe's two models) are the same face above this box overlap
SAME_FACE_IOU = 0.5
SAME_FACE_INSIDE = 0.8   # ... or when the smaller box lies this much inside the larger one
# MediaPipe: where both models find a face, the short-range model's detection is kept for faces at least
# this fraction of the frame's longer side (Face.size), the full-range one's for smaller faces
SHORT_RANGE_MIN_SIZE = 0.25


@dataclass
class Face:
    box: np.ndarray        # (4,) x0, y0, x1, y1 in pixels
    score: float
    keypoints: np.ndarray  # (K, 2) x, y in pixels: K = 4 (MediaPipe) or 68 (FAN)
    source: str = ""       # which model found it (e.g. "full_range" / "short_range" for MediaPipe)

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))

    @property
    def size(self) -> float:
        """Side of the face in pixels: sqrt of the box area (the scale for distances between faces)."""
        return float(np.sqrt(self.area))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0])

    @property
    def frontality(self) -> float:
        """1 for a face looking at the camera, towards 0 as it turns sideways: how far the nose tip
        lies from the middle of the eyes along the eye line, in half eye distances (nose tip and eyes:
        MediaPipe keypoints 2, 0, 1; iBUG 68 points 30 and the means of 36-41 and 42-47)."""
        return frontality(self.keypoints)


def frontality(keypoints: np.ndarray) -> float:
    """See Face.frontality; 0 for a layout without eyes and nose (neither 4 nor 68 points)."""
    k = np.asarray(keypoints, dtype=np.float64)
    if len(k) == 4:
        eye_r, eye_l, nose = k[0], k[1], k[2]
    elif len(k) == 68:
        eye_r, eye_l, nose = k[36:42].mean(0), k[42:48].mean(0), k[30]
    else:
        return 0.0
    axis = eye_l - eye_r
    half = np.linalg.norm(axis) / 2.0
    if half < 1e-6:
        return 0.0
    offset = float(np.dot(nose - (eye_r + eye_l) / 2.0, axis / (2.0 * half))) / half
    return float(max(0.0, 1.0 - abs(offset)))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.area) if faces else None


def box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two x0, y0, x1, y1 boxes over the area of the smaller one (1: one inside the other)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(w * h / smaller) if smaller > 0 else 0.0


def merge_detections(*lists: list[Face], same_face_iou: float = SAME_FACE_IOU, inside: float = SAME_FACE_INSIDE,
                     key=None) -> list[Face]:
    """One detection per face from several detectors' faces of the same frame: detections whose boxes
    overlap by at least same_face_iou (IoU), or of which the smaller lies at least `inside` within the
    other (a part of a face taken for a face: an eye and a cheek in a close-up), are one face, of
    which the detection ranked first by `key` (default: the score; higher first) is kept, never a
    blend. Result: in that ranking."""
    key = key or (lambda f: f.score)
    kept: list[Face] = []
    for face in sorted((f for faces in lists for f in faces), key=key, reverse=True):
        if all(box_iou(face.box, k.box) < same_face_iou and box_overlap(face.box, k.box) < inside for k in kept):
            kept.append(face)
    return kept


class MediaPipeDetector:
    """MediaPipe face detector (4 keypoints per face)."""

    n_points = 4
    FULL_RANGE, SHORT_RANGE = 1, 0
    MODEL_NAMES = {FULL_RANGE: "full_range", SHORT_RANGE: "short_range"}

    def __init__(self, min_confidence: float = 0.5, short_range_min_size: float = SHORT_RANGE_MIN_SIZE):
        self.min_confidence = float(min_confidence)
        self.short_range_min_size = float(short_range_min_size)
        self._models = {}
        self._mp = None

    def _model(self, selection: int):
        if selection not in self._models:
            if self._mp is None:
                os.environ.setdefault("GLOG_minloglevel", "2")
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
                try:
                    import mediapipe as mp  # noqa: PLC0415 - heavy, optional: loaded when the first clip is detected
                    self._mp = mp.solutions.face_detection
                except (ImportError, AttributeError) as e:
                    raise LipVoicerError(f"{MEDIAPIPE_INSTALL} ({e})") from None
            # MediaPipe's C++ start-up lines (XNNPACK delegate, absl, feedback manager) come with the first
            # frame whatever the env says: run that frame with stderr silenced (utils/native_output.py)
            with native_stderr_silenced():
                model = self._mp.FaceDetection(model_selection=selection,
                                               min_detection_confidence=self.min_confidence)
                model.process(np.zeros((64, 64, 3), dtype=np.uint8))
            self._models[selection] = model
        return self._models[selection]

    def detect_image(self, rgb: np.ndarray, selection: int = FULL_RANGE) -> list[Face]:
        """Every face in one uint8 RGB image."""
        h, w = rgb.shape[:2]
        result = self._model(selection).process(np.ascontiguousarray(rgb))
        faces = []
        for det in result.detections or []:
            loc = det.location_data
            bb = loc.relative_bounding_box
            box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h])
            kps = np.array([[loc.relative_keypoints[k].x * w, loc.relative_keypoints[k].y * h] for k in range(4)])
            faces.append(Face(box=box, score=float(det.score[0]) if det.score else 0.0, keypoints=kps,
                              source=self.MODEL_NAMES.get(selection, str(selection))))
        return faces

    def detect_frame(self, rgb: np.ndarray) -> list[Face]:
        """Every face in one uint8 RGB frame, from both models. The full-range model finds small faces
        (wide shots) that the short-range one misses; the short-range model finds close-ups (a face
        filling most of the frame) that the full-range one misses. Where both find a face, the detection of
        the model made for its size is kept: the short-range one when the face is at least
        short_range_min_size times the frame's longer side, else the full-range one (measured on
        rendered faces, this is the one with the more accurate keypoints: docs/data.md)."""
        limit = self.short_range_min_size * max(rgb.shape[:2])

        def rank(face: Face):
            return ((face.source == self.MODEL_NAMES[self.SHORT_RANGE]) == (face.size >= limit), face.score)

        return merge_detections(self.detect_image(rgb, self.FULL_RANGE), self.detect_image(rgb, self.SHORT_RANGE),
                                key=rank)

    def detect_video(self, frames, progress=False) -> list[np.ndarray | None]:
        """(4, 2) keypoints of the largest face per frame (None without a face).
        progress: a bar over the frames (dataloaders.video_io.frame_bar), one per model tried."""
        out = []
        for selection in (self.FULL_RANGE, self.SHORT_RANGE):
            out = []
            desc = "face detection" if selection == self.FULL_RANGE else "face detection (short range)"
            with frame_bar(len(frames), desc, progress) as bar:
                for frame in frames:
                    face = largest(self.detect_image(frame, selection))
                    out.append(None if face is None else face.keypoints)
                    bar.update(1)
            if any(k is not None for k in out):
                return out
        return out

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models = {}


class RetinaFaceFANDetector:
    """RetinaFace (ResNet-50) boxes + FAN 68-point landmarks from the ibug packages."""

    n_points = 68

    def __init__(self, device: str = "cpu", threshold: float = 0.8, detector_model: str = "resnet50",
                 landmark_model: str = "2dfan2_alt"):
        try:
            # optional, not on PyPI: imported only when this detector is chosen
            from ibug.face_alignment import FANPredictor  # noqa: PLC0415
            from ibug.face_detection import RetinaFacePredictor  # noqa: PLC0415
        except ImportError:
            raise LipVoicerError(IBUG_INSTALL) from None
        self._detector = RetinaFacePredictor(device=device, threshold=threshold,
                                             model=RetinaFacePredictor.get_model(detector_model))
        self._landmarks = FANPredictor(device=device, model=FANPredictor.get_model(landmark_model))

    def detect_image(self, rgb: np.ndarray) -> list[Face]:
        boxes = self._detector(rgb, rgb=True)
        if boxes is None or len(boxes) == 0:
            return []
        points, _ = self._landmarks(rgb, boxes, rgb=True)
        return [Face(box=np.asarray(b[:4], dtype=np.float64), score=float(b[4]),
                     keypoints=np.asarray(p, dtype=np.float64), source="retinaface")
                for b, p in zip(boxes, points)]

    def detect_frame(self, rgb: np.ndarray) -> list[Face]:
        """Every face in one uint8 RGB frame."""
        return self.detect_image(rgb)

    def close(self) -> None:
        pass


def check_backend(name: str) -> None:
    """Raise the install message when the packages of detector `name` cannot be imported
    (without loading any model: safe before forking workers or touching a GPU)."""
    if name == "mediapipe":
        if importlib.util.find_spec("mediapipe") is None:
            raise LipVoicerError(MEDIAPIPE_INSTALL)
    elif name == "face_alignment":
        if any(importlib.util.find_spec(m) is None for m in ("face_alignment", "numba")):
            raise LipVoicerError(FACE_ALIGNMENT_INSTALL)
    elif name == "retinaface_fan":
        try:
            missing = any(importlib.util.find_spec(m) is None
                          for m in ("ibug.face_detection", "ibug.face_alignment"))
        except ModuleNotFoundError:  # no `ibug` namespace at all
            missing = True
        if missing:
            raise LipVoicerError(IBUG_INSTALL)
    else:
        raise LipVoicerError(_unknown(name))


def _unknown(name: str) -> str:
    return f"unknown face detector '{name}' (prep.detector: {' | '.join(DETECTORS)})"


def make_detector(prep_cfg):
    """The detector named by prep.detector (mediapipe | face_alignment | retinaface_fan): an object with
    n_points, detect_frame(rgb) -> list[Face] and close()."""
    name = str(prep_cfg.get("detector", "mediapipe"))
    if name == "mediapipe":
        return MediaPipeDetector(float(prep_cfg.get("min_detection_confidence", 0.5)))
    if name == "face_alignment":
        from dataloaders.prep.fan_landmarks import FaceAlignmentDetector  # noqa: PLC0415 - torch-heavy, optional

        return FaceAlignmentDetector.from_config(prep_cfg)
    if name == "retinaface_fan":
        return RetinaFaceFANDetector(device=str(prep_cfg.get("device", "cpu")),
                                     threshold=float(prep_cfg.get("retinaface_threshold", 0.8)))
    raise LipVoicerError(_unknown(name))

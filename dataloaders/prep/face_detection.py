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

`detector.detect_frame(rgb)` returns every face of one frame (dataloaders/prep/faces.py: Face); dataloaders/prep/face_tracking.py
links them into tracks over a clip and keeps one. MediaPipeDetector.detect_video keeps the
previous rule, for comparison only: the full-range model over the clip, the short-range one only
when the first found no face at all, the largest face per frame (None without one).
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from dataloaders.prep.faces import Face, largest, merge_detections
from dataloaders.prep.fan_landmarks import FACE_ALIGNMENT_INSTALL, FaceAlignmentDetector
from utils.errors import LipVoicerError
from dataloaders.progress import frame_bar
from utils.native_output import native_stderr_silenced

IBUG_INSTALL = (
    "the retinaface_fan detector needs the ibug packages, which are not on PyPI: "
    "git clone https://github.com/hhj1897/face_detection && git -C face_detection lfs pull && "
    "pip install -e face_detection; git clone https://github.com/hhj1897/face_alignment && "
    "pip install -e face_alignment (or use prep.detector=mediapipe)"
)
MEDIAPIPE_INSTALL = "the mediapipe detector needs `pip install mediapipe==0.10.21` (see requirements.txt)"
DETECTORS = ("mediapipe", "face_alignment", "retinaface_fan")
# MediaPipe: where both models find a face, the short-range model's detection is kept for faces at least
# this fraction of the frame's longer side (Face.size), the full-range one's for smaller faces
SHORT_RANGE_MIN_SIZE = 0.25


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
        progress: a bar over the frames (dataloaders.progress.frame_bar), one per model tried."""
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
        return FaceAlignmentDetector.from_config(prep_cfg)
    if name == "retinaface_fan":
        return RetinaFaceFANDetector(device=str(prep_cfg.get("device", "cpu")),
                                     threshold=float(prep_cfg.get("retinaface_threshold", 0.8)))
    raise LipVoicerError(_unknown(name))

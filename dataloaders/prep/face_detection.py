"""Face detection and landmarks for mouth cropping.

Two backends, chosen by `prep.detector`:

* `mediapipe` (default; `pip install mediapipe==0.10.21`, models inside the wheel):
  MediaPipe's face detector gives, per face, a box and 4 keypoints used here in this
  order: right eye, left eye, nose tip, mouth centre (the subject's right eye is on
  the image's left). The full-range model runs first over the whole clip; when it
  finds no face in any frame, the short-range model is tried.
* `retinaface_fan`: RetinaFace boxes + FAN 68-point landmarks (iBUG layout) from the
  `ibug.face_detection` and `ibug.face_alignment` packages, which are not on PyPI
  (see docs/data.md). Selecting it without them raises a LipVoicerError saying how to
  install them.

In every frame the largest face (box area) is kept; a frame without a face gives None.
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


@dataclass
class Face:
    box: np.ndarray        # (4,) x0, y0, x1, y1 in pixels
    score: float
    keypoints: np.ndarray  # (K, 2) x, y in pixels: K = 4 (MediaPipe) or 68 (FAN)

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.area) if faces else None


class MediaPipeDetector:
    """MediaPipe face detector (4 keypoints per face)."""

    n_points = 4
    FULL_RANGE, SHORT_RANGE = 1, 0

    def __init__(self, min_confidence: float = 0.5):
        self.min_confidence = float(min_confidence)
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
            faces.append(Face(box=box, score=float(det.score[0]) if det.score else 0.0, keypoints=kps))
        return faces

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
                     keypoints=np.asarray(p, dtype=np.float64)) for b, p in zip(boxes, points)]

    def detect_video(self, frames, progress=False) -> list[np.ndarray | None]:
        out = []
        with frame_bar(len(frames), "face detection", progress) as bar:
            for frame in frames:
                face = largest(self.detect_image(frame))
                out.append(None if face is None else face.keypoints)
                bar.update(1)
        return out

    def close(self) -> None:
        pass


def check_backend(name: str) -> None:
    """Raise the install message when the packages of detector `name` cannot be imported
    (without loading any model: safe before forking workers or touching a GPU)."""
    if name == "mediapipe":
        if importlib.util.find_spec("mediapipe") is None:
            raise LipVoicerError(MEDIAPIPE_INSTALL)
    elif name == "retinaface_fan":
        try:
            missing = any(importlib.util.find_spec(m) is None
                          for m in ("ibug.face_detection", "ibug.face_alignment"))
        except ModuleNotFoundError:  # no `ibug` namespace at all
            missing = True
        if missing:
            raise LipVoicerError(IBUG_INSTALL)
    else:
        raise LipVoicerError(f"unknown face detector '{name}' (prep.detector: mediapipe | retinaface_fan)")


def make_detector(prep_cfg) -> MediaPipeDetector | RetinaFaceFANDetector:
    """The detector named by prep.detector (mediapipe | retinaface_fan)."""
    name = str(prep_cfg.get("detector", "mediapipe"))
    if name == "mediapipe":
        return MediaPipeDetector(float(prep_cfg.get("min_detection_confidence", 0.5)))
    if name == "retinaface_fan":
        return RetinaFaceFANDetector(device=str(prep_cfg.get("device", "cpu")),
                                     threshold=float(prep_cfg.get("retinaface_threshold", 0.8)))
    raise LipVoicerError(f"unknown face detector '{name}' (prep.detector: mediapipe | retinaface_fan)")

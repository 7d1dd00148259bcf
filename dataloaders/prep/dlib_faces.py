"""dlib's face models on one detected face: is it a human face, where are its lips, who is it.

The face detector of the pipeline (MediaPipe by default) finds face-like things, cartoons and animals
included. dlib brings three models trained on human faces only, whose weights come from PyPI
(`dlib-bin`, and `face-recognition-models` for the weights):

* the HOG frontal face detector (built into dlib): a second detector of another kind. A detection
  it confirms (a dlib box covering the centre of the detection) is a human face;
* the 68-point shape predictor (iBUG layout): the lips, for visual voice activity
  (dataloaders/prep/lip_activity.py);
* the face-recognition ResNet: a 128-d identity descriptor (Euclidean distance under about 0.6: one
  person, by dlib's own measure on LFW), for one voice per person across shots (pipelines/speaker.py).

Each look at a face works on a square crop of CROP pixels around it (CROP_SCALE box sides), so the
cost does not grow with the frame size:

    faces = DlibFaces()
    chip = faces.chip(rgb, face)                  # the crop and its geometry
    faces.confirms(chip)                          # True: dlib's HOG detector finds a face there too
    lips = faces.lip_opening(chip)                # inner-lip gap over the eye distance
    faces.look(rgb, face, check_human=True)       # both at once: face.lips, face.human
    vec = faces.descriptor(chip)                  # (128,) float32 identity
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import LipVoicerError

DLIB_INSTALL = ("the face checks of inference_real_video.py need dlib and its models: "
                "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 (see requirements.txt)")
CROP = 200          # side of the square crop every dlib model sees, in pixels
CROP_SCALE = 1.8    # the crop spans this many face-box sides (dlib's boxes are tighter than MediaPipe's)


@dataclass
class Chip:
    """A face's square crop: `image` (CROP, CROP, 3) uint8 RGB, the face's box in it (dlib rectangle), and
    the frame point at the crop's centre with the crop's pixels per frame pixel."""
    image: np.ndarray
    rect: object
    centre: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Crop pixel coordinates (N, 2) -> the frame's."""
        return (np.asarray(points, np.float64) - CROP / 2.0) / self.scale + np.asarray(self.centre)


def dlib_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("dlib", "face_recognition_models"))


def weights(name: str) -> str:
    """The path of one of face-recognition-models' weight files (found, not imported: the package's own
    import needs pkg_resources, which new setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / f"{name}.dat" if spec else None
    if path is None or not path.is_file():
        raise LipVoicerError(f"{path or name}: missing; {DLIB_INSTALL}")
    return str(path)


_MODELS: tuple | None = None   # loaded once per process (the shape predictor alone is 95 MB)


def _load_models() -> tuple:
    global _MODELS
    if _MODELS is None:
        import dlib  # noqa: PLC0415 - optional until the face checks run

        _MODELS = (dlib.get_frontal_face_detector(), dlib.shape_predictor(weights("shape_predictor_68_face_landmarks")),
                   dlib.shape_predictor(weights("shape_predictor_5_face_landmarks")),
                   dlib.face_recognition_model_v1(weights("dlib_face_recognition_resnet_model_v1")))
    return _MODELS


class DlibFaces:
    """dlib's detector, 68-point shape predictor and face-recognition ResNet (loaded on first use, once)."""

    def __init__(self):
        if not dlib_available():
            raise LipVoicerError(DLIB_INSTALL)

    @staticmethod
    def _models():
        return _load_models()

    @staticmethod
    def chip(rgb: np.ndarray, face) -> Chip:
        """The face's square crop (CROP_SCALE box sides, black outside the frame) and its box there."""
        import cv2  # noqa: PLC0415 - comes with the mouth cropping
        import dlib  # noqa: PLC0415

        x0, y0, x1, y1 = (float(v) for v in face.box)
        side = max(x1 - x0, y1 - y0, 2.0)
        scale = CROP / (side * CROP_SCALE)
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        m = np.array([[scale, 0.0, CROP / 2.0 - scale * cx], [0.0, scale, CROP / 2.0 - scale * cy]])
        image = cv2.warpAffine(np.ascontiguousarray(rgb), m, (CROP, CROP), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        half = CROP / (2.0 * CROP_SCALE)
        c = CROP / 2.0
        return Chip(image, dlib.rectangle(int(c - half), int(c - half), int(c + half), int(c + half)), (cx, cy), scale)

    def confirms(self, chip: Chip) -> bool:
        """dlib's HOG detector finds a face whose box covers the centre of the crop (the detection's centre)."""
        hog = self._models()[0]
        c = CROP / 2.0
        return any(d.left() < c < d.right() and d.top() < c < d.bottom() for d in hog(chip.image, 0))

    def landmarks(self, chip: Chip) -> np.ndarray:
        """(68, 2) float64 iBUG points of the face in the crop's pixels."""
        shape = self._models()[1](chip.image, chip.rect)
        return np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], np.float64)

    def lip_opening(self, chip: Chip) -> float:
        """The inner lips' gap (mean of the three upper/lower inner-lip point pairs 61-67, 62-66, 63-65) over
        the distance of the eye centres: 0 for closed lips, about 0.3-0.5 for a wide open mouth."""
        p = self.landmarks(chip)
        eyes = float(np.linalg.norm(p[36:42].mean(0) - p[42:48].mean(0)))
        gap = np.mean([np.linalg.norm(p[a] - p[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
        return float(gap / max(eyes, 1e-6))

    def look(self, rgb: np.ndarray, face, check_human: bool) -> None:
        """Set face.lips (every call) and face.human (when check_human) from one crop of the frame."""
        chip = self.chip(rgb, face)
        face.lips = self.lip_opening(chip)
        if check_human:
            face.human = self.confirms(chip)

    def descriptor(self, chip: Chip) -> np.ndarray:
        """(128,) float32: dlib's face-recognition descriptor of the face (aligned by its 5-point predictor)."""
        _, _, five, resnet = self._models()
        return np.asarray(resnet.compute_face_descriptor(chip.image, five(chip.image, chip.rect)), np.float32)

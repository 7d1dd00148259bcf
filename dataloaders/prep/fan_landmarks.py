"""The `face_alignment` face detector backend: FAN 68-point landmarks from the `face-alignment` package.

`prep.detector=face_alignment` selects it. The package (PyPI `face-alignment`, Adrian Bulat's FAN) finds
face boxes with S3FD (`prep.face_alignment_detector=sfd`, the package's default) or a MobileNet
RetinaFace (`retinaface`, faster on a CPU) and puts 68 landmarks in the iBUG layout on each box with the
2D FAN-4 network. The published LipVoicer models were trained on mouth crops aligned with 68-point
FAN landmarks (RetinaFace + FAN), so this backend, or `retinaface_fan`, gives crops made the way
their training crops were; the MediaPipe backend aligns with 4 keypoints only.

Install it without its dependencies (its `opencv-python` requirement would replace this project's
`opencv-contrib-python`; numpy, torch, scipy, scikit-image and tqdm are installed already):

    pip install --no-deps face-alignment==1.5.0 numba

Its weights are not in the wheel: the package fetches them from its own URLs on first use into
torch's hub folder (`$TORCH_HOME/hub/checkpoints`, by default `~/.cache/torch/hub/checkpoints`).
`python download_checkpoints.py --face_alignment` fetches them ahead of time (for machines that run
without a network afterwards). A run that needs them and cannot fetch them stops with a
LipVoicerError naming the URL and the file to place.

    det = FaceAlignmentDetector(device="cpu", face_detector="sfd")
    faces = det.detect_frame(rgb)          # list[Face]: box, score, keypoints (68, 2)

The package returns the landmarks in whole pixels (face-alignment 1.5.0 rounds them when mapping
them back into the frame); the 12-frame landmark smoothing of the mouth crops averages that out.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from dataloaders.prep.faces import Face
from utils.errors import LipVoicerError

FACE_ALIGNMENT_INSTALL = (
    "the face_alignment detector needs the face-alignment package: pip install --no-deps face-alignment==1.5.0 numba "
    "(--no-deps: its opencv-python requirement would clash with opencv-contrib-python; see docs/data.md)"
)

# prep.face_alignment_detector -> the package's detector module, and the keyword of its score threshold
FACE_DETECTORS = {"sfd": "filter_threshold", "retinaface": "confidence_threshold"}
FAN_MODEL = "2DFAN-4"


def _require_package() -> None:
    if any(importlib.util.find_spec(m) is None for m in ("face_alignment", "numba")):
        raise LipVoicerError(FACE_ALIGNMENT_INSTALL)


def _check_face_detector(face_detector: str) -> None:
    if face_detector not in FACE_DETECTORS:
        raise LipVoicerError(f"prep.face_alignment_detector: unknown face detector '{face_detector}' "
                             f"(use {' | '.join(FACE_DETECTORS)})")


def weight_urls(face_detector: str = "sfd") -> list[str]:
    """The URLs the package loads its weights from for this face detector: FAN-4 and the detector's."""
    _check_face_detector(face_detector)
    _require_package()
    from face_alignment.api import models_urls  # noqa: PLC0415 - optional package, loaded only when used

    if face_detector == "sfd":
        from face_alignment.detection.sfd.sfd_detector import models_urls as detector_urls  # noqa: PLC0415
    else:
        from face_alignment.detection.retinaface.retinaface_detector import (  # noqa: PLC0415
            models_urls as detector_urls,
        )
    return [models_urls[FAN_MODEL]] + list(detector_urls.values())


def weights_dir() -> Path:
    """Where the package looks for (and downloads) its weights: torch's hub folder + /checkpoints,
    read at call time (so TORCH_HOME set afterwards is honoured)."""
    import torch.hub  # noqa: PLC0415

    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_path(url: str) -> Path:
    """The file the package reads for `url`: the URL's file name in weights_dir()."""
    return weights_dir() / os.path.basename(urlparse(url).path)


def fetch_weight(url: str, log=None) -> Path:
    """The weights file of `url` in weights_dir(), downloaded with the package's own downloader when
    missing. A failed download raises a LipVoicerError naming the URL and where to place the file."""
    target = weight_path(url)
    if target.is_file():
        return target
    _require_package()
    from face_alignment.utils import load_file_from_url  # noqa: PLC0415 - optional package

    if log is not None:
        log(f"face_alignment: fetching {url} to {target}")
    try:
        load_file_from_url(url, model_dir=str(target.parent))
    except Exception as e:  # noqa: BLE001 - no network, refused, disk full: one line for the user
        raise LipVoicerError(f"face_alignment: cannot fetch {url} ({type(e).__name__}: {e}); run "
                             f"`python download_checkpoints.py --face_alignment` where there is a network, "
                             f"or place the file at {target}") from None
    if not target.is_file():
        raise LipVoicerError(f"face_alignment: fetching {url} wrote no file at {target}")
    return target


def fetch_weights(face_detector: str = "sfd", log=None) -> list[Path]:
    """Make sure the weights of FAN-4 and `face_detector` are in weights_dir() (fetch_weight each)."""
    return [fetch_weight(url, log) for url in weight_urls(face_detector)]


class FaceAlignmentDetector:
    """S3FD or RetinaFace boxes + FAN-4 68-point landmarks (iBUG layout) from the face-alignment package."""

    n_points = 68

    def __init__(self, device: str = "cpu", face_detector: str = "sfd", threshold: float = 0.5,
                 flip_input: bool = False):
        _check_face_detector(face_detector)
        _require_package()
        device = str(device)
        if not any(d in device for d in ("cpu", "cuda", "mps")):
            raise LipVoicerError(f"prep.device: '{device}' is not a device the face_alignment detector can use "
                                 f"(cpu | cuda | cuda:N | mps)")
        if not 0.0 <= float(threshold) <= 1.0:
            raise LipVoicerError(f"prep.face_alignment_threshold: {threshold} is not a score between 0 and 1")
        fetch_weights(face_detector)  # missing weights: fetched now, or one clear error
        import face_alignment  # noqa: PLC0415 - torch, numba, OpenCV: loaded only when this backend is chosen

        self.face_detector = face_detector
        # compile=False: torch.compile would spend minutes on its first call on a CPU; flip_input=False: one
        # pass per face (True averages with a mirrored pass: twice the time)
        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=device, flip_input=bool(flip_input),
            face_detector=face_detector, face_detector_kwargs={FACE_DETECTORS[face_detector]: float(threshold)},
            compile=False)

    @classmethod
    def from_config(cls, prep_cfg) -> FaceAlignmentDetector:
        threshold = prep_cfg.get("face_alignment_threshold", 0.5)
        try:
            threshold = float(0.5 if threshold is None else threshold)
        except (TypeError, ValueError):
            raise LipVoicerError(
                f"prep.face_alignment_threshold: {threshold!r} is not a score between 0 and 1") from None
        return cls(device=str(prep_cfg.get("device", "cpu")),
                   face_detector=str(prep_cfg.get("face_alignment_detector", "sfd")), threshold=threshold)

    def detect_frame(self, rgb: np.ndarray) -> list[Face]:
        """Every face in one uint8 RGB frame, each with its 68 landmarks (highest score first)."""
        rgb = np.ascontiguousarray(rgb)
        boxes = [np.asarray(b, dtype=np.float64) for b in self._fa.face_detector.detect_from_image(rgb.copy())]
        if not boxes:
            return []
        points = self._fa.get_landmarks_from_image(rgb, detected_faces=boxes)
        faces = [Face(box=b[:4].copy(), score=float(b[4]) if len(b) > 4 else 1.0,
                      keypoints=np.asarray(p, dtype=np.float64)[:, :2], source=self.face_detector)
                 for b, p in zip(boxes, points or [])]
        return sorted(faces, key=lambda f: -f.score)

    def detect_image(self, rgb: np.ndarray) -> list[Face]:
        return self.detect_frame(rgb)

    def close(self) -> None:
        self._fa = None

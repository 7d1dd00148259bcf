"""A detected face and the geometry of faces: box, score and keypoints; size, centre, frontality; box
overlaps; one detection per face from several detectors' detections of a frame. Every detector backend
(dataloaders/prep/face_detection.py, fan_landmarks.py) returns these; tracking links them over time."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# two detections of one frame (e.g. of MediaPipe's two models) are the same face above this box overlap
SAME_FACE_IOU = 0.5
SAME_FACE_INSIDE = 0.8   # ... or when the smaller box lies this much inside the larger one


@dataclass
class Face:
    box: np.ndarray        # (4,) x0, y0, x1, y1 in pixels
    score: float
    keypoints: np.ndarray  # (K, 2) x, y in pixels: K = 4 (MediaPipe) or 68 (FAN)
    source: str = ""       # which model found it (e.g. "full_range" / "short_range" for MediaPipe)
    mouth: np.ndarray | None = None  # small greyscale patch around the mouth (dataloaders/prep/mouth_motion.py)
    lips: float | None = None        # inner-lip opening over the eye distance (dataloaders/prep/dlib_faces.py)
    human: bool | None = None        # dlib's HOG detector confirms a human face here (None: not checked)

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

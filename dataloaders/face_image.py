"""The identity image MelGen sees: a face-centred square cut from one frame.

LRS2/LRS3 frames are already face-centred crops (a face about 157 px high in a 224 px
frame), so the published models were trained on images framed that way. A video from
anywhere (a wide shot, a face off-centre) gets the same framing here: a square centred on
the detected face box, FACE_CONTEXT times the box's larger side, with black where it
reaches outside the frame. Inference (pipelines/video_to_speech.py) and data preparation
(dataloaders/prep/mouthcrops.py stores the boxes; the datasets cut with them) use the
same function.

    square = face_square(frame, box)              # uint8 RGB (S, S, 3), S = the square's side in pixels
    square = face_square(frame, box, out_size=224)
"""
from __future__ import annotations

import numpy as np

# side of the square / larger side of the face box: 224 px LRS3 frames around faces of about 157 px
FACE_CONTEXT = 224.0 / 157.0


def square_around(box, context: float = FACE_CONTEXT) -> tuple[int, int, int]:
    """(x0, y0, side) in integer pixels of the square centred on box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(int(round(max(x1 - x0, y1 - y0) * context)), 2)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side


def face_square(frame: np.ndarray, box, out_size: int | None = None, context: float = FACE_CONTEXT) -> np.ndarray:
    """uint8 RGB square centred on the face box (black outside the frame), resized to out_size when given."""
    frame = np.asarray(frame)
    h, w = frame.shape[:2]
    x0, y0, side = square_around(box, context)
    out = np.zeros((side, side) + frame.shape[2:], dtype=frame.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    if out_size is not None and side != out_size:
        import cv2  # noqa: PLC0415 - OpenCV is needed only where frames are cropped (prep, inference)

        interp = cv2.INTER_AREA if side > out_size else cv2.INTER_LINEAR
        out = cv2.resize(out, (int(out_size), int(out_size)), interpolation=interp)
    return out

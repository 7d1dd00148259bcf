"""Mouth-region crops from per-frame face landmarks (docs/data.md, "How a mouth crop is made").

Two landmark layouts are accepted, chosen by the number of points per frame:

* 68 points (iBUG layout, RetinaFace + FAN): the stable points are the nose bridge
  and tip (28, 33), the outer and inner eye corners (36, 39, 42, 45) and the mouth
  corners (48, 54); the crop is centred on the 20 mouth points (48-67).
* 4 keypoints (MediaPipe face detector: right eye, left eye, nose tip, mouth
  centre): every point is stable; the reference points are the mean-face centroids
  of the matching 68-point groups (right eye 36-41, left eye 42-47, lower nose
  31-35, mouth 48-67) and the crop is centred on the mouth-centre keypoint.

Steps for a clip of T frames:
1. frames without a detection (None) get landmarks linearly interpolated between
   the nearest detected frames; leading / trailing gaps copy the first / last detection;
2. each frame's landmarks are averaged over a window of up to 12 frames
   (6 either side, narrowed symmetrically at the clip edges), then shifted so that
   their centroid equals the unsmoothed centroid of that frame;
3. a similarity transform (rotation, uniform scale, translation) of the stable
   points onto the mean face is fitted with cv2.estimateAffinePartial2D (LMEDS);
4. the greyscale frame is warped into a 256 x 256 image (bilinear, black border);
5. a 96 x 96 patch is cut around the centre of the transformed mouth points
   (only that patch is computed: see `warp_patch`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dataloaders.progress import frame_bar
from utils.errors import LipVoicerError

STABLE_68 = (28, 33, 36, 39, 42, 45, 48, 54)
MOUTH_68 = slice(48, 68)
# 68-point groups whose centroids stand for the 4 MediaPipe keypoints (in keypoint order)
KEYPOINT_GROUPS_68 = (slice(36, 42), slice(42, 48), slice(31, 36), slice(48, 68))
MOUTH_KEYPOINT = 3

WARP_SIZE = 256


def _cv2():
    try:
        import cv2  # noqa: PLC0415 - loaded only when cropping, with a clear error when missing
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise LipVoicerError(f"OpenCV is needed for mouth cropping (pip install -r requirements.txt): {e}") from None
    return cv2


def load_mean_face(path: str | Path) -> np.ndarray:
    """The (68, 2) mean face; a clear error when the file is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: mean face not found (run `python download_checkpoints.py`, "
                             f"or set prep.mean_face_path)")
    try:
        ref = np.load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user problem here
        raise LipVoicerError(f"{path}: cannot read the mean face ({e})") from None
    if ref.shape != (68, 2):
        raise LipVoicerError(f"{path}: mean face must have shape (68, 2), found {ref.shape}")
    return ref.astype(np.float64)


def reference_points(mean_face: np.ndarray, n_points: int) -> np.ndarray:
    """Stable target points on the mean face for a landmark layout of n_points."""
    if n_points == 68:
        return mean_face[list(STABLE_68)].copy()
    if n_points == 4:
        return np.stack([mean_face[g].mean(axis=0) for g in KEYPOINT_GROUPS_68])
    raise LipVoicerError(f"landmarks must have 68 or 4 points per frame, found {n_points}")


def _stable_and_mouth(n_points: int):
    if n_points == 68:
        return list(STABLE_68), MOUTH_68
    return [0, 1, 2, 3], slice(MOUTH_KEYPOINT, MOUTH_KEYPOINT + 1)


def fill_missing(landmarks: Sequence[np.ndarray | None]) -> list[np.ndarray] | None:
    """Interpolate frames without detection; None when no frame has one."""
    lms = [None if lm is None else np.asarray(lm, dtype=np.float64) for lm in landmarks]
    known = [i for i, lm in enumerate(lms) if lm is not None]
    if not known:
        return None
    for a, b in zip(known[:-1], known[1:]):
        gap = b - a
        for k in range(1, gap):
            lms[a + k] = lms[a] + (k / float(gap)) * (lms[b] - lms[a])
    for i in range(known[0]):
        lms[i] = lms[known[0]].copy()
    for i in range(known[-1] + 1, len(lms)):
        lms[i] = lms[known[-1]].copy()
    return lms


def smooth_landmarks(lms: Sequence[np.ndarray], window: int = 12) -> list[np.ndarray]:
    """Temporal mean over up to `window` frames, re-centred on each frame's own centroid."""
    n = len(lms)
    stack = np.stack(lms)
    out = []
    for i in range(n):
        half = min(window // 2, i, n - 1 - i)
        avg = stack[i - half:i + half + 1].mean(axis=0)
        avg = avg + (stack[i].mean(axis=0) - avg.mean(axis=0))
        out.append(avg)
    return out


def _to_grey(frame: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    if frame.ndim == 2:
        return frame
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _fma32(a, b, c) -> np.ndarray:
    """float32 a*b + c with a single rounding (the product is exact in float64)."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


def _inverse_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine map (output pixel -> source pixel), in float64."""
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    r = 1.0 / det if det != 0 else 0.0
    a, b, c, d = m[1, 1] * r, -m[0, 1] * r, -m[1, 0] * r, m[0, 0] * r
    return np.array([[a, b, -a * m[0, 2] - b * m[1, 2]],
                     [c, d, -c * m[0, 2] - d * m[1, 2]]])


def warp_patch(grey: np.ndarray, m: np.ndarray, x0: int, y0: int, size: int,
               warp_size: int = WARP_SIZE) -> np.ndarray:
    """Pixels [y0, y0+size) x [x0, x0+size) of the grey image warped by m into warp_size^2.

    Bilinear sampling at float32 source coordinates with zero outside the source
    image, rounded half to even; output pixels outside the warp_size image are zero.
    Sampling only the patch is much cheaper than warping the whole 256 x 256 image and
    reproduces the original's crops to within one grey level on a handful of pixels
    (OpenCV 4.11's warpAffine quantises coordinates to 1/32 pixel and differs more).
    """
    f32 = np.float32
    inv = _inverse_affine(m).astype(f32).ravel()
    rows = np.arange(y0, y0 + size, dtype=f32)[:, None]
    cols = np.arange(x0, x0 + size, dtype=f32)[None, :]
    row_x = (rows * inv[1]).astype(f32) + inv[2]
    row_y = (rows * inv[4]).astype(f32) + inv[5]
    sx = _fma32(inv[0], cols, row_x)
    sy = _fma32(inv[3], cols, row_y)
    ix = np.floor(sx)
    iy = np.floor(sy)
    ax = (sx - ix).astype(f32)
    ay = (sy - iy).astype(f32)
    ix = ix.astype(np.int64)
    iy = iy.astype(np.int64)
    h, w = grey.shape
    padded = np.zeros((h + 2, w + 2), dtype=f32)  # one-pixel zero border around the source
    padded[1:-1, 1:-1] = grey

    def px(yy, xx):
        inside = (yy >= -1) & (yy <= h) & (xx >= -1) & (xx <= w)
        return np.where(inside, padded[np.clip(yy + 1, 0, h + 1), np.clip(xx + 1, 0, w + 1)], f32(0))

    p00, p01 = px(iy, ix), px(iy, ix + 1)
    p10, p11 = px(iy + 1, ix), px(iy + 1, ix + 1)
    top = _fma32(ax, p01 - p00, p00)
    bottom = _fma32(ax, p11 - p10, p10)
    val = _fma32(ay, bottom - top, top)
    out = np.clip(np.rint(val), 0, 255).astype(np.uint8)
    # outside the warped image (the reference cuts its patch from the 256 x 256 image)
    ry = np.arange(y0, y0 + size)
    rx = np.arange(x0, x0 + size)
    out[(ry < 0) | (ry >= warp_size), :] = 0
    out[:, (rx < 0) | (rx >= warp_size)] = 0
    return out


class MouthCropper:
    """Crops one frame at a time (so that a video can be streamed: only the crops are kept).

        cropper = MouthCropper(mean_face, n_points=4)
        crop = cropper(frame, smoothed_landmarks_of_that_frame)   # (crop_size, crop_size) uint8
        cropper.scales                                            # source -> warp scale per frame so far
    """

    def __init__(self, mean_face: np.ndarray, n_points: int, crop_size: int = 96, warp_size: int = WARP_SIZE,
                 source: str = "clip"):
        self.target = reference_points(mean_face, n_points).astype(np.float64)
        self.stable, self.mouth = _stable_and_mouth(n_points)
        self.n_points, self.crop_size, self.warp_size, self.source = n_points, crop_size, warp_size, source
        self.scales: list[float] = []  # > 1: the face is magnified to reach the mean face's size

    def __call__(self, frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        i = len(self.scales)
        if lm.shape != (self.n_points, 2):
            raise LipVoicerError(f"{self.source}: landmarks differ in shape between frames")
        grey = _to_grey(np.asarray(frame))
        m, _ = cv2.estimateAffinePartial2D(lm[self.stable], self.target, method=cv2.LMEDS)
        if m is None:
            raise LipVoicerError(f"{self.source}: frame {i}: cannot fit a similarity transform to the landmarks")
        self.scales.append(float(np.hypot(m[0, 0], m[1, 0])))
        centre = (lm @ m[:, :2].T + m[:, 2])[self.mouth].mean(axis=0)
        half = self.crop_size // 2
        x0, y0 = int(round(float(centre[0]) - half)), int(round(float(centre[1]) - half))
        return warp_patch(grey, m, x0, y0, self.crop_size, self.warp_size)


def prepare_landmarks(landmarks: Sequence[np.ndarray | None], window: int = 12,
                      source: str = "clip") -> list[np.ndarray]:
    """Steps 1-2 above: gaps interpolated, then smoothed; a LipVoicerError when no frame has a face."""
    if len(landmarks) == 0:
        raise LipVoicerError(f"{source}: no frames")
    lms = fill_missing(landmarks)
    if lms is None:
        raise LipVoicerError(f"{source}: no face detected in any frame")
    if any(lm.shape != lms[0].shape for lm in lms):
        raise LipVoicerError(f"{source}: landmarks differ in shape between frames")
    return smooth_landmarks(lms, window)


def crop_mouths(frames: np.ndarray | Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None],
                mean_face: np.ndarray, crop_size: int = 96, window: int = 12,
                warp_size: int = WARP_SIZE, source: str = "clip", progress=False) -> np.ndarray:
    """(T, crop_size, crop_size) uint8 greyscale mouth crops.

    frames: T RGB (H, W, 3) or greyscale (H, W) uint8 images; landmarks: T arrays of
    (68, 2) or (4, 2) pixel coordinates (x, y), or None for frames without a face.
    progress: a bar over the frames (dataloaders.progress.frame_bar).
    """
    if len(frames) != len(landmarks):
        raise LipVoicerError(f"{source}: {len(frames)} frames but {len(landmarks)} landmark entries")
    smoothed = prepare_landmarks(landmarks, window, source)
    cropper = MouthCropper(mean_face, smoothed[0].shape[0], crop_size, warp_size, source)
    out = np.empty((len(frames), crop_size, crop_size), dtype=np.uint8)
    with frame_bar(len(frames), "mouth cropping", progress) as bar:
        for i, (frame, lm) in enumerate(zip(frames, smoothed)):
            out[i] = cropper(frame, lm)
            bar.update(1)
    return out

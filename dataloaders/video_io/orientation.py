"""How decoded pixels become the picture as displayed: the display matrix of a video stream (a phone's
portrait video is stored as landscape pixels plus a rotation), read from the first decoded frame."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Orientation:
    """How decoded pixels become the picture as displayed, from the stream's display matrix (phones store
    portrait video as landscape pixels plus a rotation): transpose the image, then flip its rows and/or
    columns. rotation: the counter-clockwise turn in degrees (0, 90, 180 or 270; FFmpeg's and PyAV's
    `frame.rotation` sense); mirrored: the matrix also mirrors the picture."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    rotation: int = 0
    mirrored: bool = False

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, img: np.ndarray) -> np.ndarray:
        """The displayed picture of an (H, W, ...) image (a new contiguous array unless nothing changes)."""
        if self.identity:
            return img
        if self.transpose:
            img = img.swapaxes(0, 1)
        if self.flip_rows:
            img = img[::-1]
        if self.flip_cols:
            img = img[:, ::-1]
        return np.ascontiguousarray(img)

    def displayed_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.transpose else (width, height)


UPRIGHT = Orientation()


def orientation_from_matrix(matrix) -> Orientation:
    """The Orientation of an FFmpeg display matrix (9 int32 in 16.16 fixed point, AV_PKT_DATA_DISPLAYMATRIX
    layout [a b u; c d v; x y w], a source pixel (x, y) going to (a x + c y, b x + d y)), snapped to the
    nearest quarter turn."""
    m = np.asarray(matrix, dtype=np.float64).reshape(-1)
    if m.size < 9:
        return UPRIGHT
    a, b, c, d = m[0], m[1], m[3], m[4]
    if abs(a) + abs(d) >= abs(b) + abs(c):  # no quarter turn: x' = a x, y' = d y
        transpose, flip_cols, flip_rows = False, a < 0, d < 0
    else:  # x' = c y, y' = b x: the rows of the picture come from the columns of the pixels
        transpose, flip_cols, flip_rows = True, c < 0, b < 0
    if not (transpose or flip_cols or flip_rows):
        return UPRIGHT
    det = a * d - b * c
    turn = float(np.degrees(np.arctan2(b if det >= 0 else -b, a if det >= 0 else -a)))  # clockwise angle
    rotation = int(round(-turn / 90.0)) % 4 * 90
    return Orientation(bool(transpose), bool(flip_rows), bool(flip_cols), rotation, bool(det < 0))


def _frame_orientation(frame) -> Orientation:
    from av.sidedata.sidedata import Type  # noqa: PLC0415

    data = frame.side_data.get(Type.DISPLAYMATRIX)
    if data is None:
        return UPRIGHT
    return orientation_from_matrix(np.frombuffer(bytes(data), dtype=np.int32)[:9])


def _first_frame(container, stream):
    """(Orientation, width, height) of the stream's first decodable frame, or None (nothing decodes)."""
    import av  # noqa: PLC0415 - keep the import of this package light
    try:
        for frame in container.decode(stream):
            return _frame_orientation(frame), frame.width, frame.height
    except av.error.FFmpegError:
        return None
    return None

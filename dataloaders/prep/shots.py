"""Shot boundaries of a video: where the picture cuts to another camera or scene.

PySceneDetect's content detector (`scenedetect`, ContentDetector: the change of hue, saturation and
luminance between consecutive frames against a threshold, with a shortest shot) is fed the frames
of the streamed pass one at a time, downscaled first (the change it measures is a mean over the
picture: the same at a fraction of the cost):

    shots = ShotDetector(threshold=27.0, min_frames=15)
    for i, rgb in enumerate(frames): shots.add(rgb)
    spans = shots.spans()          # [(first frame, frame after the last), ...] covering every frame

A video without cuts is one shot.
"""
from __future__ import annotations

import numpy as np

from utils.errors import LipVoicerError

DETECT_WIDTH = 160   # frames are downscaled to this width before the detector sees them


def _content_detector(threshold: float, min_frames: int):
    try:
        from scenedetect.detectors import ContentDetector  # noqa: PLC0415 - loaded when a video is segmented
    except ImportError as e:
        raise LipVoicerError(f"shot detection needs PySceneDetect: pip install --no-deps scenedetect==0.7.2 ({e})") \
            from None
    return ContentDetector(threshold=float(threshold), min_scene_len=int(min_frames))


class ShotDetector:
    """Shot cuts of frames given one at a time (uint8 RGB, any size) at `fps`."""

    def __init__(self, threshold: float = 27.0, min_frames: int = 15, fps: float = 25.0):
        if not float(threshold) > 0:
            raise LipVoicerError(f"generate.shot_threshold={threshold}: must be a number > 0 (PySceneDetect's "
                                 f"content threshold; 27 is its default)")
        if int(min_frames) < 1:
            raise LipVoicerError(f"generate.min_shot_frames={min_frames}: must be an integer >= 1")
        self._detector = _content_detector(threshold, min_frames)
        self.fps = float(fps)
        self.cuts: list[int] = []
        self.n = 0

    def add(self, rgb: np.ndarray) -> None:
        import cv2  # noqa: PLC0415 - comes with the mouth cropping
        from scenedetect.common import FrameTimecode  # noqa: PLC0415

        h, w = rgb.shape[:2]
        if w > DETECT_WIDTH:
            rgb = cv2.resize(rgb, (DETECT_WIDTH, max(2, int(round(h * DETECT_WIDTH / w)))),
                             interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        for cut in self._detector.process_frame(FrameTimecode(self.n, fps=self.fps), bgr):
            if 0 < cut.frame_num < self.n + 1:
                self.cuts.append(int(cut.frame_num))
        self.n += 1

    def spans(self) -> list[tuple[int, int]]:
        """[(start, stop), ...]: consecutive shots covering frames 0 .. n - 1."""
        edges = [0] + sorted(set(c for c in self.cuts if 0 < c < self.n)) + [self.n]
        return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]

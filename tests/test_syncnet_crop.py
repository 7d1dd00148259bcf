"""SyncNet's face crops (dataloaders/prep/syncnet_crop.py): the framing run_pipeline.py uses, on frames whose
content says where each pixel came from; the track span from the project's face tracking; bad videos."""
from __future__ import annotations

import numpy as np
import pytest

from dataloaders.prep.faces import Face
from dataloaders.prep.syncnet_crop import (CROP_SCALE, OUT_SIZE, PAD_VALUE, face_crop, face_crops, framing,
                                           syncnet_crops_from_video, track_span_boxes)
from tests.helpers import REPO_ROOT, write_video
from utils.errors import LipVoicerError

EXAMPLE = REPO_ROOT / "examples" / "synthetic_clip.mp4"


def _box_frame(h, w, box, face_rgb=(255, 0, 0), background=50):
    frame = np.full((h, w, 3), background, np.uint8)
    x0, y0, x1, y1 = box
    frame[y0:y1, x0:x1] = face_rgb
    return frame


def test_window_around_the_face_box_and_bgr_order():
    # a 100 px face box centred at (200, 200): s = 50; rows 150 .. 150 + 50 * (2 + 2c), columns 200 -/+ 50 (1 + c)
    frame = _box_frame(400, 400, (150, 150, 250, 250))
    crop = face_crop(frame, 200.0, 200.0, 50.0)
    assert crop.shape == (OUT_SIZE, OUT_SIZE, 3) and crop.dtype == np.uint8
    height, width = 50 * (2 + 2 * CROP_SCALE), 100 * (1 + CROP_SCALE)
    face_bottom = int(100 / height * OUT_SIZE)               # the box's lower edge, in crop rows
    face_left = int((width / 2 - 50) / width * OUT_SIZE)     # its left edge, in crop columns
    inner = crop[4:face_bottom - 4, face_left + 4:OUT_SIZE - face_left - 4]
    assert (inner == (0, 0, 255)).all()                       # red in RGB is (0, 0, 255) in BGR
    assert (crop[face_bottom + 4:, :] == 50).all()            # below the chin: the background
    assert (crop[:, :face_left - 4] == 50).all() and (crop[:, OUT_SIZE - face_left + 4:] == 50).all()


def test_padding_value_outside_the_frame():
    frame = _box_frame(200, 200, (0, 0, 60, 60))  # a face in the top-left corner
    crop = face_crop(frame, 30.0, 30.0, 30.0)
    assert (crop[:, :10] == PAD_VALUE).all()      # left of the frame
    assert (crop[5:100, 60:150] == (0, 0, 255)).all()


def test_framing_median_filter_removes_a_jump_and_uses_the_longer_side():
    boxes = np.array([[100, 100, 180, 200]] * 30, dtype=np.float64)  # 80 wide, 100 high
    boxes[15] += 40                                                   # one jumpy detection
    f = framing(boxes)
    assert np.allclose(f[6:24], [140.0, 150.0, 50.0])
    # medfilt pads the ends with zeros (as the original): the first frames take the smallest nearby values
    assert np.allclose(f[0], [140.0, 150.0, 50.0])


def test_face_crops_start_at_the_track():
    frames = [np.full((64, 64, 3), 10 * t, np.uint8) for t in range(12)]
    boxes = np.array([[16, 16, 48, 48]] * 7, dtype=np.float64)
    crops = face_crops(iter(frames), boxes, first=3)
    assert crops.shape == (7, OUT_SIZE, OUT_SIZE, 3)
    assert [int(np.median(c)) for c in crops] == [30, 40, 50, 60, 70, 80, 90]
    with pytest.raises(LipVoicerError, match="the face track needs 13"):
        face_crops(iter(frames), boxes, first=6)
    with pytest.raises(LipVoicerError, match="tracked over 6 frames; .* needs at least 7"):
        face_crops(iter(frames), boxes[:6])


def _face(x0, y0, size=40.0):
    box = np.array([x0, y0, x0 + size, y0 + size], dtype=np.float64)
    kp = np.array([[x0 + 12, y0 + 15], [x0 + 28, y0 + 15], [x0 + 20, y0 + 24], [x0 + 20, y0 + 32]], dtype=np.float64)
    return Face(box=box, score=0.9, keypoints=kp)


def test_track_span_interpolates_gaps_and_skips_frames_without_the_face():
    faces = [[], [], [_face(10, 10)], [_face(12, 10)], [], [_face(16, 10)], [_face(18, 10)], []]
    boxes, first, stats = track_span_boxes(faces, {"track": "longest"})
    assert first == 2 and boxes.shape == (5, 4)
    assert boxes[2, 0] == pytest.approx(14.0)                       # frame 4 interpolated
    assert stats["frames_with_face"] == 4 and stats["frames_interpolated"] == 1
    _, _, stats = track_span_boxes(faces, {"track": "all"})         # inference's `all`: the speaking face
    assert stats["track_rule"] == "speaking"
    with pytest.raises(LipVoicerError, match="no face detected in any frame"):
        track_span_boxes([[], []], {})


def test_a_video_without_a_face_is_one_line(tmp_path):
    path = tmp_path / "grey.mp4"
    write_video(path, np.full((10, 64, 64, 3), 90, np.uint8))
    with pytest.raises(LipVoicerError) as e:
        syncnet_crops_from_video(path, {"detector": "mediapipe"})
    assert str(e.value) == f"{path}: no face detected in any frame"


def test_crops_of_the_example_clip(tmp_path):
    from dataloaders.video_io.decode import read_video

    frames, _ = read_video(EXAMPLE)
    path = tmp_path / "short.mp4"
    write_video(path, frames[:12])
    got = syncnet_crops_from_video(path, {"detector": "mediapipe", "track": "longest"})
    assert got.crops.shape == (12 - got.first, OUT_SIZE, OUT_SIZE, 3) and got.frames == 12
    assert got.first == 0 and got.stats["frames_with_face"] == 12

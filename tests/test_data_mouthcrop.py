"""Mouth cropping from landmarks (dataloaders/prep/mouth_crop.py): fixture agreement, interpolation, smoothing, errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.parity_utils import load_fixture, parity_dir
from utils.errors import LipVoicerError
from dataloaders.prep.mouth_crop import (crop_mouths, fill_missing, load_mean_face, reference_points, smooth_landmarks,
                              warp_patch)


@pytest.fixture
def mean_face(tmp_path):
    """The mean face copied from the fixtures folder (library code never reads ../shared)."""
    src = parity_dir() / "20words_mean_face.npy"
    if not src.is_file():
        pytest.skip(f"{src} not found (set LIPVOICER_PARITY_DIR to the fixtures folder)")
    dst = tmp_path / "20words_mean_face.npy"
    shutil.copy(src, dst)
    return load_mean_face(dst)


def _crop_errors(fx, mean_face, **kw):
    out = []
    for case in fx["cases"]:
        inp = case["inputs"]
        got = crop_mouths(inp["frames_rgb"].numpy(), inp["landmarks"], mean_face, **kw)
        ref = case["outputs"]["crops"].numpy()
        assert got.shape == ref.shape and got.dtype == np.uint8
        diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
        out.append((inp["kind"], float(diff.mean()), int(diff.max()), int((diff > 0).sum())))
    return out


def test_crops_match_fixture_both_layouts(mean_face):
    fx = load_fixture("mouthcrop.pt")
    kinds = [c["inputs"]["kind"] for c in fx["cases"]]
    assert any(k.startswith("68") for k in kinds) and any(k.startswith("4") for k in kinds)
    assert any(lm is None for c in fx["cases"] for lm in c["inputs"]["landmarks"])  # missing detections
    for kind, mad, mx, n_off in _crop_errors(fx, mean_face):
        print(f"[mouthcrop] {kind}: mean abs diff {mad:.2e}, max {mx}, pixels off {n_off}")
        assert mx <= 1 and mad < 1e-3, kind


def test_fixture_comparison_detects_a_wrong_window(mean_face):
    fx = load_fixture("mouthcrop.pt")
    errors = _crop_errors(fx, mean_face, window=8)
    assert all(mx > 1 for _, _, mx, _ in errors)


def test_fill_missing_interpolates_and_pads():
    a, b = np.zeros((4, 2)), np.full((4, 2), 3.0)
    out = fill_missing([None, a, None, None, b, None])
    np.testing.assert_allclose([o[0, 0] for o in out], [0, 0, 1, 2, 3, 3])
    assert fill_missing([None, None]) is None


def test_smoothing_keeps_each_frame_centroid():
    rng = np.random.default_rng(0)
    lms = [rng.normal(size=(68, 2)) * 5 + 100 + t for t in range(20)]
    sm = smooth_landmarks(lms, 12)
    for raw, s in zip(lms, sm):
        np.testing.assert_allclose(raw.mean(0), s.mean(0), atol=1e-9)
    # at the ends the window narrows to the frame itself
    np.testing.assert_allclose(sm[0], lms[0])
    np.testing.assert_allclose(sm[-1], lms[-1])


def test_reference_points_for_both_layouts(mean_face):
    assert reference_points(mean_face, 68).shape == (8, 2)
    ref4 = reference_points(mean_face, 4)
    np.testing.assert_allclose(ref4[3], mean_face[48:68].mean(0))
    assert ref4[0, 0] < ref4[1, 0]  # right eye (image left) first
    with pytest.raises(LipVoicerError, match="68 or 4 points"):
        reference_points(mean_face, 5)


def test_patch_sampler_agrees_with_opencv_warp():
    import cv2

    rng = np.random.default_rng(1)
    grey = cv2.GaussianBlur(rng.integers(0, 255, (180, 240), dtype=np.uint8), (0, 0), 2)
    m = np.array([[1.1, -0.2, 30.3], [0.2, 1.1, -12.7]])
    full = cv2.warpAffine(grey, m, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    for x0, y0 in ((80, 110), (-10, 200), (220, -5)):  # inside, and partly outside the 256 image
        patch = warp_patch(grey, m, x0, y0, 96)
        ref = np.zeros((96, 96), np.uint8)
        ys, xs = slice(max(y0, 0), min(y0 + 96, 256)), slice(max(x0, 0), min(x0 + 96, 256))
        ref[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = full[ys, xs]
        assert np.abs(patch.astype(int) - ref.astype(int)).max() <= 2


def test_bad_inputs_give_clear_errors(mean_face, tmp_path):
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    with pytest.raises(LipVoicerError, match="clip.mp4: no face detected in any frame"):
        crop_mouths(frames, [None] * 3, mean_face, source="clip.mp4")
    with pytest.raises(LipVoicerError, match="3 frames but 2 landmark entries"):
        crop_mouths(frames, [None] * 2, mean_face)
    with pytest.raises(LipVoicerError, match="download_checkpoints.py"):
        load_mean_face(tmp_path / "missing.npy")
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 2)))
    with pytest.raises(LipVoicerError, match=r"bad.npy: mean face must have shape \(68, 2\)"):
        load_mean_face(bad)

"""The face_alignment backend (dataloaders/prep/fan_landmarks.py): the PyPI face-alignment package's S3FD
boxes + FAN-4 68 landmarks, run on CPU through the package's own loading code with stand-in weights
that the tests write where the package looks for them (a temporary TORCH_HOME); no network.

The stand-ins: FAN-4 with seeded random weights (meaningless landmarks, real shapes and coordinate
mapping), and an S3FD whose weights are zero except two heads, so that it reports exactly one face
box, [14, 14, 114, 114] with score ~1, in a 128 x 128 frame, or none at all. download_checkpoints.py
--face_alignment is checked with the package's downloader replaced.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pytest

from utils.errors import LipVoicerError

torch = pytest.importorskip("torch")
numba = pytest.importorskip("numba")
# The package compiles two small helpers with numba on first use (10-20 s on a shared CPU, every test
# session); imported here with numba's JIT off, they run as the same Python code, uncompiled.
_jit = numba.config.DISABLE_JIT
numba.config.DISABLE_JIT = True
try:
    pytest.importorskip("face_alignment.utils")
finally:
    numba.config.DISABLE_JIT = _jit

FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
S3FD_FILE = "s3fd-619a316812.pth"
RETINA_FILE = "retinaface_mobilenet0.25.pth"
STAND_IN_BOX = [14.0, 14.0, 114.0, 114.0]


def s3fd_state(face: bool) -> dict:
    """S3FD weights: all zero, every detection head says 'background', except (face=True) the coarsest
    head (conv7_2, 2 x 2 cells for a 128 px frame, anchors of 512 px): it sees a constant feature map,
    and one 3 x 3 tap that only the top-left cell's padding keeps in range makes that cell alone a
    face, with a box of 100 px around the cell's anchor centre (64, 64)."""
    from face_alignment.detection.sfd.net_s3fd import s3fd

    net = s3fd()
    state = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    for k in state:
        if k.endswith("_mbox_conf.bias"):
            state[k][:-1] = 5.0   # background logits (conv3_3's head has 3 of them, max-out)
    if face:
        state["conv7_2.bias"][:] = 1.0                                # f7_2 = relu(1) everywhere
        state["conv7_2_mbox_conf.bias"][:] = torch.tensor([0.0, -5.0])
        state["conv7_2_mbox_conf.weight"][1, :, 2, 2] = 20.0 / 256    # +20 where the bottom-right tap is inside
        state["conv7_2_mbox_loc.bias"][:] = torch.tensor([0.0, 0.0, 5 * math.log(100 / 512), 5 * math.log(100 / 512)])
    return state


def fan_state() -> dict:
    from face_alignment.models import FAN

    torch.manual_seed(0)
    return FAN(4).state_dict()


def retinaface_state() -> dict:
    """MobileNet RetinaFace with zero weights: every score 0.5, not above the 0.5 threshold: no face."""
    from face_alignment.detection.retinaface.net_retinaface import RetinaFace, cfg_mnet

    return {k: torch.zeros_like(v) for k, v in RetinaFace(cfg=cfg_mnet).state_dict().items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A TORCH_HOME whose hub/checkpoints holds the stand-ins (face-finding S3FD) and a spare
    background-only S3FD."""
    home = tmp_path_factory.mktemp("torch_home")
    ck = home / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    torch.save(fan_state(), ck / FAN_FILE)
    torch.save(s3fd_state(face=True), ck / S3FD_FILE)
    torch.save(retinaface_state(), ck / RETINA_FILE)
    spare = home / "s3fd_background.pth"
    torch.save(s3fd_state(face=False), spare)
    return home, spare


@pytest.fixture
def offline(monkeypatch):
    """Any download attempt fails (and is recorded)."""
    import torch.hub

    import face_alignment.utils as fa_utils

    calls = []

    def refuse(url, dst, *a, **k):
        calls.append(url)
        raise OSError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(fa_utils, "download_url_to_file", refuse)
    return calls


def test_fan_backend_finds_one_face_with_68_points(weights, offline, monkeypatch):
    from dataloaders.prep.face_detection import make_detector
    from dataloaders.prep.face_tracking import build_tracks, choose_track, track_landmarks
    from tests.test_face_detection import compose

    home, _ = weights
    monkeypatch.setenv("TORCH_HOME", str(home))
    det = make_detector({"detector": "face_alignment", "device": "cpu", "face_alignment_detector": "sfd"})
    assert det.n_points == 68
    frame = compose((128, 128), [{"face_px": 220, "cx": 64, "cy": 66}])
    faces = det.detect_frame(frame)   # (FAN-4 takes 0.5-10 s per face on a shared CPU: called twice only)
    assert len(faces) == 1
    face = faces[0]
    assert face.box.tolist() == pytest.approx(STAND_IN_BOX, abs=1e-3) and face.score > 0.99
    assert face.keypoints.shape == (68, 2) and np.isfinite(face.keypoints).all()
    assert face.source == "sfd"
    # the landmarks come back in frame pixels, inside FAN's crop around the box: centred 12 % of the box
    # height above the box centre, 200 px across per 195 px of box width + height
    half = 100 * (100 + 100) / 195 + 1
    assert np.all(np.abs(face.keypoints - [64.0, 64.0 - 12.0]) <= half)
    # through the tracking code: one track over a missed frame, 68 points where found
    tracks = build_tracks([faces, [], faces])
    landmarks = track_landmarks(choose_track(tracks), 3)
    assert len(tracks) == 1 and [None if k is None else k.shape for k in landmarks] == [(68, 2), None, (68, 2)]
    again = det.detect_frame(frame)
    assert len(again) == 1 and np.array_equal(again[0].keypoints, face.keypoints)   # deterministic
    det.close()
    assert offline == []   # nothing was downloaded


def test_fan_backend_without_a_face(weights, offline, monkeypatch, tmp_path):
    from dataloaders.prep.fan_landmarks import FaceAlignmentDetector

    home, spare = weights
    other = tmp_path / "hub" / "checkpoints"
    other.mkdir(parents=True)
    (other / FAN_FILE).symlink_to(home / "hub" / "checkpoints" / FAN_FILE)
    (other / S3FD_FILE).symlink_to(spare)
    (other / RETINA_FILE).symlink_to(home / "hub" / "checkpoints" / RETINA_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    frame = np.full((64, 64, 3), 100, np.uint8)
    for name in ("sfd", "retinaface"):
        det = FaceAlignmentDetector(device="cpu", face_detector=name)
        assert det.detect_frame(frame) == []
    assert offline == []


def test_missing_weights_say_how_to_fetch_them(offline, monkeypatch, tmp_path):
    from dataloaders.prep.face_detection import make_detector

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / FAN_FILE
    with pytest.raises(LipVoicerError) as e:
        make_detector({"detector": "face_alignment"})
    msg = str(e.value)
    assert msg == (f"face_alignment: cannot fetch https://www.adrianbulat.com/downloads/python-fan/{FAN_FILE} "
                   f"(OSError: no network in tests); run `python download_checkpoints.py --face_alignment` where "
                   f"there is a network, or place the file at {target}")
    assert offline == [f"https://www.adrianbulat.com/downloads/python-fan/{FAN_FILE}"]


def test_bad_settings_name_the_key(monkeypatch, tmp_path):
    from dataloaders.prep.face_detection import check_backend, make_detector
    from dataloaders.prep.fan_landmarks import weight_urls

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    check_backend("face_alignment")
    with pytest.raises(LipVoicerError, match=r"prep.face_alignment_detector: unknown face detector 'dlib' "
                                             r"\(use sfd \| retinaface\)"):
        make_detector({"detector": "face_alignment", "face_alignment_detector": "dlib"})
    with pytest.raises(LipVoicerError, match=r"prep.device: 'gpu' is not a device the face_alignment detector "
                                             r"can use \(cpu \| cuda \| cuda:N \| mps\)"):
        make_detector({"detector": "face_alignment", "device": "gpu"})
    with pytest.raises(LipVoicerError, match=r"prep.face_alignment_threshold: 1.5 is not a score between 0 and 1"):
        make_detector({"detector": "face_alignment", "face_alignment_threshold": 1.5})
    with pytest.raises(LipVoicerError, match=r"prep.face_alignment_threshold: 'high' is not a score between 0 and 1"):
        make_detector({"detector": "face_alignment", "face_alignment_threshold": "high"})
    assert [Path(u).name for u in weight_urls("sfd")] == [FAN_FILE, S3FD_FILE]
    assert [Path(u).name for u in weight_urls("retinaface")] == [FAN_FILE, RETINA_FILE]


# ----------------------------------------------------------------------------- download_checkpoints.py
class FakeDownloader:
    """Replaces face_alignment.utils.load_file_from_url: records (url, model_dir), writes a file, or fails."""

    def __init__(self, monkeypatch, fail=()):
        import face_alignment.utils as fa_utils

        self.calls, self.fail = [], set(fail)
        monkeypatch.setattr(fa_utils, "load_file_from_url", self)

    def __call__(self, url, model_dir=None, **kwargs):
        self.calls.append((url, model_dir))
        if url in self.fail:
            raise OSError("connection refused")
        out = Path(model_dir) / Path(url).name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"weights")
        return str(out)


def _run(cfg, *argv):
    import download_checkpoints as dl

    out, err = io.StringIO(), io.StringIO()
    rc = dl.run(cfg, dl.parse_args(list(argv)), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_download_checkpoints_prefetches_the_package_weights(monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    ck = tmp_path / "th" / "hub" / "checkpoints"
    fake = FakeDownloader(monkeypatch)
    cfg = OmegaConf.create({"paths": {"checkpoints_dir": "ck"}, "assets": {}, "prep": {"detector": "mediapipe"}})
    rc, out, err = _run(cfg, "--face_alignment")
    assert rc == 0, err
    base = "https://www.adrianbulat.com/downloads/python-fan/"
    assert fake.calls == [(base + FAN_FILE, str(ck)), (base + S3FD_FILE, str(ck))]
    assert (ck / FAN_FILE).is_file() and (ck / S3FD_FILE).is_file()
    assert f"face_alignment/{FAN_FILE}" in out and "downloaded" in out
    # present: nothing fetched again; --list shows them
    assert _run(cfg, "--face_alignment")[0] == 0 and len(fake.calls) == 2
    rc, out, _ = _run(cfg, "--list", "--face_alignment")
    assert rc == 0 and re.search(rf"face_alignment/{re.escape(S3FD_FILE)} +present", out)
    # the other detector, chosen by the config
    cfg2 = OmegaConf.merge(cfg, {"prep": {"face_alignment_detector": "retinaface"}})
    assert _run(cfg2, "--face_alignment")[0] == 0
    assert fake.calls[-1] == (base + RETINA_FILE, str(ck))


def test_download_checkpoints_face_alignment_failure(monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    base = "https://www.adrianbulat.com/downloads/python-fan/"
    FakeDownloader(monkeypatch, fail={base + S3FD_FILE})
    cfg = OmegaConf.create({"paths": {"checkpoints_dir": "ck"}, "assets": {}})
    rc, out, err = _run(cfg, "--face_alignment")
    target = tmp_path / "th" / "hub" / "checkpoints" / S3FD_FILE
    assert rc == 1
    assert (f"error: face_alignment/{S3FD_FILE}: face_alignment: cannot fetch {base + S3FD_FILE} (OSError: "
            f"connection refused); run `python download_checkpoints.py --face_alignment` where there is a "
            f"network, or place the file at {target}") in err
    assert not target.exists()


def test_for_inference_includes_the_weights_when_the_backend_is_chosen():
    import download_checkpoints as dl
    from omegaconf import OmegaConf

    def wants(detector, *argv):
        return dl._wants_face_alignment(OmegaConf.create({"prep": {"detector": detector}}), dl.parse_args(list(argv)))

    assert wants("face_alignment", "--for-inference") and wants("mediapipe", "--face-alignment")
    assert not wants("mediapipe", "--for-inference") and not wants("face_alignment", "--only", "hifigan")

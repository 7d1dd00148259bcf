"""Audio front-end and wav2mel."""
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from dataloaders.audio import denormalise_mel, log_mel, normalise_mel, peak_normalise, read_wav, wav_file_to_mel
from dataloaders.prep.wav2mel import convert_tree
from tests.helpers import REPO_ROOT
from utils.errors import LipVoicerError


def test_mel_shape_and_frame_rate():
    wav = torch.randn(16000)
    mel = log_mel(wav)
    assert mel.shape == (80, 101)  # 100 frames per second, centred
    assert torch.isfinite(mel).all()
    assert mel.min() >= np.log(1e-5) - 1e-6


def test_normalisation_maps_floor_to_minus_one_and_inverts():
    floor = torch.tensor(np.log(1e-5))
    assert torch.isclose(normalise_mel(floor), torch.tensor(-1.0, dtype=floor.dtype))
    assert torch.isclose(normalise_mel(torch.tensor(0.0)), torch.tensor(1.0))
    m = torch.randn(80, 30) * 3 - 5
    assert torch.allclose(denormalise_mel(normalise_mel(m)), m, atol=1e-5)


def test_peak_normalise_and_silence():
    w = np.array([0.0, 0.5, -2.0], dtype=np.float32)
    assert np.isclose(np.abs(peak_normalise(w)).max(), 1 / 1.1)
    z = np.zeros(10, dtype=np.float32)
    assert np.array_equal(peak_normalise(z), z)


def test_wav_file_to_mel_is_scale_invariant(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(8000).astype(np.float32) * 0.1
    sf.write(tmp_path / "a.wav", w, 16000)
    sf.write(tmp_path / "b.wav", w * 5, 16000, subtype="FLOAT")
    assert torch.allclose(wav_file_to_mel(tmp_path / "a.wav"), wav_file_to_mel(tmp_path / "b.wav"), atol=1e-3)


def test_read_wav_errors_name_the_file(tmp_path):
    with pytest.raises(LipVoicerError, match="audio file not found"):
        read_wav(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(LipVoicerError, match=r"bad\.wav: not a readable audio file"):
        read_wav(bad)
    sf.write(tmp_path / "x.wav", np.zeros(100, np.float32), 22050)
    with pytest.raises(LipVoicerError, match=r"x\.wav: sample rate 22050 Hz, expected 16000 Hz"):
        read_wav(tmp_path / "x.wav")


def test_convert_tree_skips_done_and_counts_failures(tmp_path):
    (tmp_path / "s" / "a").mkdir(parents=True)
    for i in range(3):
        sf.write(tmp_path / "s" / "a" / f"{i}.wav", np.random.rand(4000).astype(np.float32), 16000)
    (tmp_path / "s" / "a" / "broken.wav").write_bytes(b"garbage")
    done, skipped, failed = convert_tree(tmp_path, {}, num_workers=1)
    assert (done, skipped, failed) == (3, 0, 1)
    spec = torch.load(tmp_path / "s" / "a" / "0.wav.spec")
    assert spec.shape == (80, 26)
    assert not list(tmp_path.rglob("*.tmp"))
    done, skipped, failed = convert_tree(tmp_path, {}, num_workers=2)
    assert (done, skipped, failed) == (0, 3, 1)


def test_wav2mel_script(tmp_path):
    sf.write(tmp_path / "a.wav", np.random.rand(4000).astype(np.float32), 16000)
    r = subprocess.run([sys.executable, "dataloaders/wav2mel.py", f"wav2mel.audios_dir={tmp_path}",
                        "wav2mel.num_workers=1", "hydra.run.dir=" + str(tmp_path / "h")],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 written, 0 already done, 0 failed" in r.stdout
    assert (tmp_path / "a.wav.spec").is_file()
    r = subprocess.run([sys.executable, "dataloaders/wav2mel.py", f"wav2mel.audios_dir={tmp_path / 'missing'}",
                        "hydra.run.dir=" + str(tmp_path / "h")],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing'}: audio directory not found"

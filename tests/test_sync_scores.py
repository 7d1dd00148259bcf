"""LSE-C / LSE-D arithmetic (pipelines/sync_scores.py) and SyncNet's audio input (dataloaders/mfcc.py):
the offset's sign and size on embeddings shifted on purpose, the windows a clip gets, short clips refused
in one line, 16-bit samples from float and integer wavs."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from dataloaders.mfcc import int16_samples, read_wav_int16, syncnet_mfcc
from pipelines.sync_scores import SyncScorer, offset_distances, score_from_distances, windows_of
from utils.errors import LipVoicerError


def _embeddings(n=40, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n + 20, dim, generator=g)


@pytest.mark.parametrize("lag", [-3, 0, 2])
def test_offset_is_found_with_the_originals_sign(lag):
    base = _embeddings()
    lips = base[10:40]
    audio = base[10 + lag:40 + lag]       # audio embedding i matches lip embedding i + lag
    s = score_from_distances(offset_distances(lips, audio, 5), 5)
    # dists[i, j] compares lip i with audio i + j - vshift; the match is audio i - lag: j = vshift - lag
    assert s.offset == lag
    assert s.lse_d < s.lse_c / 5 and s.windows == 30 and s.offset_margin > 1.0   # (edge windows meet the zero padding)
    assert s.mean_dists.shape == (11,) and s.dists.shape == (30, 11)


def test_unrelated_audio_has_low_confidence():
    lips, audio = _embeddings(seed=1)[:30], _embeddings(seed=2)[:30]
    synced = score_from_distances(offset_distances(lips, lips.clone(), 15))
    unrelated = score_from_distances(offset_distances(lips, audio, 15))
    assert unrelated.lse_c < synced.lse_c and unrelated.lse_d > synced.lse_d


def test_windows_and_short_clips():
    assert windows_of(20, 20 * 640) == 15 and windows_of(20, 10 * 640 + 639) == 5 and windows_of(5, 9999) == 0
    from models.syncnet import SyncNet

    scorer = SyncScorer(SyncNet().eval(), "cpu")
    crops = np.zeros((10, 224, 224, 3), np.uint8)
    with pytest.raises(LipVoicerError) as e:
        scorer.score(crops, np.zeros(5 * 640, np.int16), source="gen/a.wav")
    assert str(e.value) == ("gen/a.wav: 10 video frames and 0.20 s of audio; SyncNet needs at least 6 frames "
                            "(0.24 s) of both")


def test_int16_samples_of_float_and_pcm_wavs(tmp_path):
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 0.25 / 32768], dtype=np.float32)
    assert int16_samples(x).tolist() == [0, 16384, -16384, 32767, -32768, 0]
    sf.write(tmp_path / "f.wav", x, 16000, subtype="FLOAT")
    assert read_wav_int16(tmp_path / "f.wav").tolist() == [0, 16384, -16384, 32767, -32768, 0]
    pcm = np.array([1, -2, 300, -32768], dtype=np.int16)
    sf.write(tmp_path / "p.wav", pcm, 16000, subtype="PCM_16")
    assert read_wav_int16(tmp_path / "p.wav").tolist() == [1, -2, 300, -32768]
    sf.write(tmp_path / "r.wav", pcm, 8000, subtype="PCM_16")
    with pytest.raises(LipVoicerError, match=r"r.wav: sample rate 8000 Hz, expected 16000 Hz"):
        read_wav_int16(tmp_path / "r.wav")


def test_mfcc_frames_and_scale():
    rng = np.random.default_rng(0)
    samples = int16_samples(0.1 * rng.standard_normal(16000))
    m = syncnet_mfcc(samples)
    assert m.shape == (13, 99) and m.dtype == np.float32      # 1 + ceil((16000 - 400) / 160)
    louder = syncnet_mfcc(int16_samples(0.2 * rng.standard_normal(16000)))
    assert louder[0].mean() > m[0].mean() + 0.5                # c0 is the log energy: the scale matters


def test_published_weights_are_an_asset_fetched_only_when_asked(tmp_path, monkeypatch):
    """syncnet_v2 is in the real asset table (not a default); --only syncnet_v2 fetches it to
    <checkpoints_dir>/syncnet_v2.model, where syncnet.ckpt points, and the file loads strictly."""
    import io

    import torch
    from omegaconf import OmegaConf

    import download_checkpoints as dl
    from models.builders import load_syncnet_model, syncnet_checkpoint_path
    from models.syncnet import SyncNet
    from tests.helpers import compose_cfg
    from utils.assets import asset_table

    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.merge(compose_cfg(), {"paths": {"checkpoints_dir": "ck"}})
    entry = asset_table(cfg)["syncnet_v2"]
    assert not entry.default and entry.url.endswith("/lipsync/data/syncnet_v2.model")
    buf = io.BytesIO()
    torch.save(SyncNet().state_dict(), buf)
    calls = []
    monkeypatch.setattr(dl, "download_url", lambda url, out: calls.append(url) or open(out, "wb").write(buf.getvalue()))
    out, err = io.StringIO(), io.StringIO()
    assert dl.run(cfg, dl.parse_args(["--only", "syncnet_v2"]), out=out, err=err) == 0, err.getvalue()
    assert calls == [entry.url] and syncnet_checkpoint_path(cfg) == tmp_path.joinpath("ck", "syncnet_v2.model").relative_to(tmp_path)
    assert isinstance(load_syncnet_model(cfg), SyncNet)

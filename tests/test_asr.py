"""ASR guidance classifier: shapes, lengths, loss and gradient, checkpoints, bad input (CPU, tiny model)."""
from __future__ import annotations

import copy

import pytest
import torch

from models.asr import (build_asr, count_parameters, ctc_loss, ctc_loss_grad, ctc_loss_per_clip,
                        load_asr_checkpoint, output_lengths, save_asr_checkpoint)
from utils.errors import LipVoicerError

TINY = {
    "vocab_size": 20, "n_mels": 16, "stem_filters": 8, "stem_kernel": 3, "dims": [16, 24, 32], "num_blocks": [2, 2, 1],
    "patch_size": [3, 1, 1], "num_heads": 2, "conv_kernel": 5, "ff_ratio": 2, "dropout": 0.1, "att_dropout": 0.0,
    "max_pos_encoding": 1000, "step_embed_dim_in": 16, "step_embed_dim_mid": 32, "step_embed_dim_out": 32,
    "frontend_sample_rate": 16000, "frontend_n_fft": 512, "frontend_win_ms": 25, "frontend_f_max": 8000.0,
}


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    m = build_asr(TINY)
    # non-trivial batch-norm statistics
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_shapes_and_lengths():
    m = tiny_model()
    mel = torch.randn(2, 16, 37)
    lengths = torch.tensor([37, 20])
    logits, out_len = m(mel, lengths, torch.tensor([[10.0], [200.0]]))
    assert logits.shape == (2, 5, 20)
    assert out_len.tolist() == [5, 3]          # 37 -> 19 -> 10 -> 5, 20 -> 10 -> 5 -> 3
    assert out_len.tolist() == output_lengths(lengths, TINY).tolist()
    # every length, including ones that need patch padding, gives ceil(L / 8) frames
    for L in range(1, 30):
        lg, ol = m(torch.randn(1, 16, L), torch.tensor([L]), torch.tensor([[5.0]]))
        assert lg.shape[1] == ol.item() == -(-L // 8)


def test_timestep_changes_output():
    m = tiny_model()
    mel = torch.randn(1, 16, 24)
    a, _ = m(mel, None, torch.tensor([[0.0]]))
    b, _ = m(mel, None, torch.tensor([[300.0]]))
    assert not torch.allclose(a, b)
    c, _ = m(mel, None, 0.0)                    # a scalar step is broadcast
    assert torch.equal(a, c)


def test_loss_and_gradient_finite_nonzero():
    m = tiny_model()
    mel = torch.randn(2, 16, 40)
    tokens = torch.tensor([[3, 4, 5], [6, 7, 0]])
    tlen = torch.tensor([3, 2])
    per_clip, grad = ctc_loss_grad(m, mel, torch.tensor([40, 40]), torch.tensor([[5.0], [50.0]]), tokens, tlen)
    assert per_clip.shape == (2,) and torch.isfinite(per_clip).all() and (per_clip > 0).all()
    assert grad.shape == mel.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in m.parameters())
    logits, ol = m(mel, torch.tensor([40, 40]), torch.tensor([[5.0], [50.0]]))
    assert torch.allclose(ctc_loss(logits, ol, tokens, tlen), per_clip.mean(), rtol=1e-5)


def test_impossible_alignment_is_zero_not_inf():
    m = tiny_model()
    logits, ol = m(torch.randn(1, 16, 8), None, torch.tensor([[1.0]]))   # 1 output frame
    loss = ctc_loss_per_clip(logits, ol, torch.tensor([[3, 4, 5]]), torch.tensor([3]))
    assert loss.item() == 0.0


def test_batched_gradient_equals_per_clip_gradient():
    m = tiny_model()
    torch.manual_seed(1)
    mel = torch.randn(3, 16, 45)
    lengths = torch.full((3,), 45)
    steps = torch.tensor([[0.0], [120.0], [269.0]])
    tokens = torch.tensor([[1, 2, 3, 4], [5, 5, 6, 0], [7, 0, 0, 0]])
    tlen = torch.tensor([4, 3, 1])
    loss_b, grad_b = ctc_loss_grad(m, mel, lengths, steps, tokens, tlen)
    for i in range(3):
        loss_i, grad_i = ctc_loss_grad(m, mel[i:i + 1], lengths[i:i + 1], steps[i:i + 1], tokens[i:i + 1, :tlen[i]],
                                       tlen[i:i + 1])
        assert torch.allclose(loss_b[i], loss_i[0], rtol=1e-5, atol=1e-5)
        assert torch.allclose(grad_b[i], grad_i[0], rtol=1e-4, atol=1e-7), i
    # a clip's gradient does not depend on the other clips' texts
    _, grad_c = ctc_loss_grad(m, mel, lengths, steps, torch.tensor([[9, 9, 9, 9], [5, 5, 6, 0], [1, 2, 0, 0]]),
                              torch.tensor([4, 3, 2]))
    assert torch.allclose(grad_c[1], grad_b[1], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(grad_c[0], grad_b[0])


def test_padding_mask_hides_padded_keys_from_attention():
    """With the key mask, frames beyond a clip's length reach its outputs only through the convolutions:
    changing padding far from the clip (beyond the conv receptive field) changes nothing."""
    cfg = dict(TINY, conv_kernel=1)
    torch.manual_seed(0)
    m1 = build_asr(cfg).eval()
    mel = torch.randn(1, 16, 60)
    lengths = torch.tensor([30])
    a, la = m1(mel, lengths, torch.tensor([[3.0]]))
    mel2 = mel.clone()
    mel2[:, :, 40:] = torch.randn(1, 16, 20) * 5
    b, lb = m1(mel2, lengths, torch.tensor([[3.0]]))
    n = la.item()
    assert torch.allclose(a[:, :n - 1], b[:, :n - 1], atol=1e-5)


def test_save_load_roundtrip_and_distributed_keys(tmp_path):
    m = tiny_model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    path = save_asr_checkpoint(m, opt, 123, tmp_path / "asr.ckpt")
    ckpt = torch.load(path, weights_only=False)
    assert set(ckpt) >= {"model_state_dict", "optimizer_state_dict", "model_step", "is_distributed"}
    assert ckpt["model_step"] == 123 and ckpt["is_distributed"] is False
    assert not [p for p in tmp_path.iterdir() if p.name != "asr.ckpt"]      # no temporary file left
    m2 = load_asr_checkpoint(path, TINY)
    assert not m2.training
    mel = torch.randn(1, 16, 30)
    assert torch.equal(m(mel, None, torch.tensor([[7.0]]))[0], m2(mel, None, torch.tensor([[7.0]]))[0])
    # the published format of a DDP run: '.module.' inside the keys
    dist = {"model_state_dict": {k.replace("encoder.", "encoder.module.", 1): v
                                 for k, v in ckpt["model_state_dict"].items()},
            "optimizer_state_dict": None, "model_step": 5, "is_distributed": True}
    m3 = load_asr_checkpoint(dist, TINY)
    assert torch.equal(m(mel, None, torch.tensor([[7.0]]))[0], m3(mel, None, torch.tensor([[7.0]]))[0])


def test_load_errors_name_the_problem(tmp_path):
    m = tiny_model()
    sd = m.state_dict()
    with pytest.raises(LipVoicerError, match="missing keys: encoder.head.bias"):
        load_asr_checkpoint({"model_state_dict": {k: v for k, v in sd.items() if k != "encoder.head.bias"}}, TINY)
    with pytest.raises(LipVoicerError, match="unexpected keys: encoder.extra"):
        load_asr_checkpoint({"model_state_dict": dict(sd, **{"encoder.extra": torch.zeros(1)})}, TINY)
    with pytest.raises(LipVoicerError, match="shape mismatch: encoder.head.weight"):
        load_asr_checkpoint({"model_state_dict": dict(sd, **{"encoder.head.weight": torch.zeros(3, 3)})}, TINY)
    with pytest.raises(LipVoicerError, match="no 'model_state_dict'"):
        load_asr_checkpoint({"generator": {}}, TINY)
    with pytest.raises(LipVoicerError, match="missing.ckpt: checkpoint not found"):
        load_asr_checkpoint(tmp_path / "missing.ckpt", TINY)
    bad = tmp_path / "bad.ckpt"
    bad.write_text("<html>quota exceeded</html>")
    with pytest.raises(LipVoicerError, match="bad.ckpt: not a readable PyTorch checkpoint"):
        load_asr_checkpoint(bad, TINY)


def test_bad_input_shape():
    m = tiny_model()
    with pytest.raises(LipVoicerError, match=r"mel of shape \(batch, 16, frames\)"):
        m(torch.randn(1, 80, 30), None, torch.tensor([[1.0]]))
    with pytest.raises(LipVoicerError, match="missing key"):
        build_asr({k: v for k, v in TINY.items() if k != "dims"})
    with pytest.raises(LipVoicerError, match="one entry per stage"):
        build_asr(dict(TINY, patch_size=[3, 1]))


def test_published_config_size():
    from tests.helpers import compose_cfg
    cfg = compose_cfg(["asr=default"]).asr   # composed: n_mels etc. come from audio.*
    m = build_asr(cfg)
    n = count_parameters(m)
    assert 34.0e6 < n < 34.3e6, n      # "about 34 M parameters"
    sd = m.state_dict()
    assert tuple(sd["encoder.linear.weight"].shape) == (180, 7200)
    assert tuple(sd["encoder.back_end.conformer_blocks.4.conv_res.weight"].shape) == (256, 180, 1)
    assert tuple(sd["encoder.audio_preprocessing.MelScale.fb"].shape) == (257, 80)


def test_train_mode_dropout_and_deterministic_eval():
    m = tiny_model()
    mel = torch.randn(2, 16, 30)
    m2 = copy.deepcopy(m).train()
    torch.manual_seed(0)
    a, _ = m2(mel, None, torch.tensor([[1.0], [2.0]]))
    torch.manual_seed(1)
    b, _ = m2(mel, None, torch.tensor([[1.0], [2.0]]))
    assert not torch.allclose(a, b)
    assert torch.equal(m(mel, None, torch.tensor([[1.0], [2.0]]))[0], m(mel, None, torch.tensor([[1.0], [2.0]]))[0])

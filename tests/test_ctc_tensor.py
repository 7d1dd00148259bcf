"""The tensor-operation CTC loss equals F.ctc_loss (reduction none, zero_infinity) in value and gradient."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.asr.ctc_tensor import ctc_labels, ctc_nll


def _reference(log_probs, in_len, targets, tgt_len):
    return F.ctc_loss(log_probs.transpose(0, 1), targets, in_len, tgt_len, blank=0, reduction="none",
                      zero_infinity=True)


def _case(seed, b=5, t=12, v=7, s=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=dtype)
    in_len = torch.randint(1, t + 1, (b,), generator=g)
    in_len[0] = t
    tgt_len = torch.randint(0, s + 1, (b,), generator=g)
    targets = torch.randint(1, v, (b, s), generator=g)
    targets[1, :3] = torch.tensor([2, 2, 2])            # repeats need a blank between them
    tgt_len[1] = max(int(tgt_len[1]), 3)
    targets[2, 1] = targets[2, 0]
    return logits, in_len, targets, tgt_len


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_value_and_gradient_equal_f_ctc_loss(seed, dtype, tol):
    logits, in_len, targets, tgt_len = _case(seed, dtype=dtype)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = ctc_nll(F.log_softmax(a, -1), in_len, targets, tgt_len)
    ref = _reference(F.log_softmax(b, -1), in_len, targets, tgt_len)
    assert torch.allclose(ours, ref, rtol=tol, atol=tol), (ours, ref)
    w = torch.linspace(0.5, 1.5, len(ours), dtype=dtype)    # a weighted sum exercises every clip's gradient
    (ga,) = torch.autograd.grad((ours * w).sum(), a)
    (gb,) = torch.autograd.grad((ref * w).sum(), b)
    assert torch.isfinite(ga).all()
    assert (ga - gb).abs().max() <= tol * max(1.0, float(gb.abs().max())), float((ga - gb).abs().max())


def test_labels_made_once_give_the_same_loss():
    logits, in_len, targets, tgt_len = _case(3)
    lp = F.log_softmax(logits, -1)
    once = ctc_labels(targets, tgt_len)
    assert torch.equal(ctc_nll(lp, in_len, labels=once), ctc_nll(lp, in_len, targets, tgt_len))
    assert not torch.equal(ctc_nll(lp, in_len, labels=ctc_labels(targets.flip(1), tgt_len)),
                           ctc_nll(lp, in_len, targets, tgt_len))


def test_impossible_alignment_is_zero_with_zero_gradient():
    logits = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2, 3, 4, 5], [1, 1, 1, 0, 0], [2, 3, 0, 0, 0]])
    tgt_len = torch.tensor([5, 3, 2])          # 5 labels in 4 frames; 1 1 1 needs 5 frames; 2 3 fits
    in_len = torch.tensor([4, 4, 4])
    ours = ctc_nll(F.log_softmax(logits, -1), in_len, targets, tgt_len)
    ref = _reference(F.log_softmax(logits, -1), in_len, targets, tgt_len)
    assert ours[0] == 0 and ours[1] == 0 and ours[2] > 0
    assert torch.allclose(ours, ref)
    (g,) = torch.autograd.grad(ours.sum(), logits)
    assert torch.isfinite(g).all() and g[0].abs().max() == 0 and g[1].abs().max() == 0 and g[2].abs().max() > 0


def test_empty_text_and_one_frame():
    logits = torch.randn(2, 1, 5, dtype=torch.float64)
    lp = F.log_softmax(logits, -1)
    targets = torch.tensor([[3], [0]])
    tgt_len = torch.tensor([1, 0])
    in_len = torch.tensor([1, 1])
    assert torch.allclose(ctc_nll(lp, in_len, targets, tgt_len), _reference(lp, in_len, targets, tgt_len))


def test_no_host_synchronisation_needed():
    """Nothing in the recursion reads a value on the host: it runs under a mode that forbids it (CUDA only)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to check for host synchronisation")
    logits, in_len, targets, tgt_len = _case(0, dtype=torch.float32)
    dev = torch.device("cuda")
    args = [x.to(dev) for x in (logits, in_len, targets, tgt_len)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        ctc_nll(F.log_softmax(args[0], -1), *args[1:])
    finally:
        torch.cuda.set_sync_debug_mode("default")

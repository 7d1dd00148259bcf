"""The CTC loss written in plain tensor operations, for the guidance gradient.

`F.ctc_loss` with length tensors on a GPU copies the lengths to the host (and its kernel
copies offsets back): one host synchronisation in every ASR-guided sampling step, which
also stops a step from being captured as a CUDA graph. This version is the textbook
forward recursion in log space over the ASR's output frames, vectorised over the batch
and over the 2S + 1 positions of the blank-extended label sequence; autograd gives the
gradient. It never reads a tensor's value on the host, so with device tensors in, nothing
waits for the device.

It equals `F.ctc_loss(..., blank, reduction="none", zero_infinity=True)`: per-clip negative
log-likelihoods (summed over frames), and 0 with a zero gradient for a clip whose text
cannot be aligned to its frames. Unreachable states hold a large negative number instead
of -inf, so that no 0 * inf appears in the backward pass; a loss that large is the
"infinite" one and is zeroed.
"""
from __future__ import annotations

import torch

_NEG = -1.0e30          # log(0) stand-in: exp() of it is 0, its derivatives stay finite
_INFINITE = 1.0e29      # a negative log-likelihood this large means "no alignment"


def ctc_labels(targets: torch.Tensor, target_lengths: torch.Tensor, blank: int = 0):
    """What the recursion needs of the texts alone, made once per batch of texts (not in every sampling
    step): the blank-extended labels (B, 2S + 1), where a label may be reached from two positions
    back, and the text lengths."""
    targets = targets.long()
    b, s_max = targets.shape
    ext = torch.full((b, 2 * s_max + 1), blank, dtype=torch.long, device=targets.device)
    if s_max:
        ext[:, 1::2] = targets
    # a label may be reached from two positions back unless it is a blank or repeats that label
    skip = torch.zeros(ext.shape, dtype=torch.bool, device=targets.device)
    if s_max > 1:
        skip[:, 3::2] = targets[:, 1:] != targets[:, :-1]
    return ext, skip, target_lengths.long().to(targets.device)


def ctc_nll(log_probs: torch.Tensor, input_lengths: torch.Tensor, targets: torch.Tensor | None = None,
            target_lengths: torch.Tensor | None = None, blank: int = 0, labels=None) -> torch.Tensor:
    """Per-clip CTC negative log-likelihood (B,), infinite ones set to 0.

    log_probs: (B, T, V) log-softmax outputs (batch first); input_lengths (B,) valid frames;
    targets (B, S) token ids (padding past target_lengths is ignored); target_lengths (B,);
    or labels = ctc_labels(targets, target_lengths, blank), made once for many calls.
    """
    b, t_max, _ = log_probs.shape
    dev = log_probs.device
    ext, skip, target_lengths = labels if labels is not None else ctc_labels(targets.to(dev), target_lengths, blank)
    input_lengths = input_lengths.long().to(dev)
    n_pos = ext.shape[1]
    # log p of each extended label at every frame: (B, T, 2S + 1)
    emit = log_probs.gather(2, ext.unsqueeze(1).expand(b, t_max, n_pos))
    neg = torch.full((b, 1), _NEG, dtype=log_probs.dtype, device=dev)

    alpha = torch.full((b, n_pos), _NEG, dtype=log_probs.dtype, device=dev)
    alpha = torch.cat((emit[:, 0, :2], alpha[:, 2:]), dim=1) if n_pos > 1 else emit[:, 0, :1]
    for t in range(1, t_max):
        stay = alpha
        step = torch.cat((neg, alpha[:, :-1]), dim=1)
        jump = torch.where(skip, torch.cat((neg, neg, alpha[:, :-2]), dim=1)[:, :n_pos], neg)
        new = torch.logsumexp(torch.stack((stay, step, jump)), dim=0) + emit[:, t]
        alpha = torch.where((t < input_lengths).unsqueeze(1), new, alpha)

    last = 2 * target_lengths
    end_blank = alpha.gather(1, last.unsqueeze(1)).squeeze(1)
    end_label = alpha.gather(1, (last - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
    end_label = torch.where(target_lengths > 0, end_label, torch.full_like(end_label, _NEG))
    nll = -torch.logsumexp(torch.stack((end_blank, end_label)), dim=0)
    return torch.where(nll < _INFINITE, nll, torch.zeros_like(nll))

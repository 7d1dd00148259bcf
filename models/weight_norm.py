"""Weight-normalised convolutions whose parameters are stored as `weight_g` / `weight_v`.

The published checkpoints keep weight norm in that form (norm over every dim but
the first). These layers compute weight = g * v / ||v|| on each call; `fold()`
freezes the product into a plain `weight` for inference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm_except_first(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)


class _WeightNormMixin:
    def _split_weight(self):
        w = self.weight.detach().clone()
        del self.weight
        self.weight_g = nn.Parameter(_norm_except_first(w))
        self.weight_v = nn.Parameter(w)
        self._folded = None

    def effective_weight(self) -> torch.Tensor:
        if self._folded is not None:
            return self._folded
        return self.weight_g * self.weight_v / _norm_except_first(self.weight_v)

    @torch.no_grad()
    def fold(self):
        """Cache g * v / ||v|| (inference only: later changes to g or v are ignored)."""
        self._folded = (self.weight_g * self.weight_v / _norm_except_first(self.weight_v)).detach()
        return self


class WNConv1d(_WeightNormMixin, nn.Conv1d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        nn.init.kaiming_normal_(self.weight)
        self._split_weight()

    def forward(self, x):
        return self._conv_forward(x, self.effective_weight(), self.bias)


class WNConvTranspose2d(_WeightNormMixin, nn.ConvTranspose2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        nn.init.kaiming_normal_(self.weight)
        self._split_weight()

    def forward(self, x):
        return F.conv_transpose2d(x, self.effective_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-normalised layer below `module` (for inference)."""
    for m in module.modules():
        if isinstance(m, _WeightNormMixin):
            m.fold()
    return module

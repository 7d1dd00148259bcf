"""Weight-normalised convolutions whose parameters are stored as `weight_g` / `weight_v`.

The published checkpoints keep weight norm in that form (norm over every dim but the
first). A layer computes weight = g * v / ||v|| on each call. For inference there are two
ways to stop recomputing it: `fold()` caches the product and keeps the `weight_g` /
`weight_v` parameters (MelGen, whose state dict keeps its published keys), and
`remove()` replaces the two by a plain `weight` parameter (HiFi-GAN, as the published
vocoder does for inference).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def norm_except_first(v: torch.Tensor) -> torch.Tensor:
    """||v|| over every dim but the first, kept as (n, 1, ..., 1)."""
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)


class WeightNormed:
    """Mixin of a conv layer: weight = g * v / ||v|| until `remove()`; `fold()` caches it.

    `init_std` chooses the initialisation of the weight before it is split: None = Kaiming
    normal, a number = normal(0, init_std). While weight-normed the parameters are `bias`,
    `weight_g`, `weight_v` (the order of the published state dicts); after `remove()`,
    `bias`, `weight`.
    """

    def _split_weight(self, init_std: float | None) -> None:
        if init_std is None:
            nn.init.kaiming_normal_(self.weight)
        else:
            nn.init.normal_(self.weight, 0.0, init_std)
        w = self.weight.detach().clone()
        del self.weight
        self.weight_g = nn.Parameter(norm_except_first(w))
        self.weight_v = nn.Parameter(w)
        self._folded = None

    @property
    def is_weight_normed(self) -> bool:
        return "weight_v" in self._parameters

    def effective_weight(self) -> torch.Tensor:
        if self._folded is not None:
            return self._folded
        if self.is_weight_normed:
            # one fused kernel (what torch.nn.utils.weight_norm runs), not three
            return torch._weight_norm(self.weight_v, self.weight_g, 0)
        return self.weight

    def _apply(self, fn, *args, **kwargs):
        # .to(device / dtype), .cuda(), .half() ... also move the folded weight (a plain attribute)
        super()._apply(fn, *args, **kwargs)
        if getattr(self, "_folded", None) is not None:
            self._folded = fn(self._folded)
        return self

    @torch.no_grad()
    def fold(self):
        """Cache g * v / ||v|| (inference only: later changes to g or v are ignored)."""
        self._folded = None
        self._folded = self.effective_weight().detach()
        return self

    @torch.no_grad()
    def remove(self):
        """Replace weight_g / weight_v by the plain weight they make. Idempotent."""
        if self.is_weight_normed:
            w = self.effective_weight().detach().clone()
            del self.weight_g
            del self.weight_v
            self.weight = nn.Parameter(w)
        self._folded = None
        return self


class WNConv1d(WeightNormed, nn.Conv1d):
    def __init__(self, *args, init_std: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight(init_std)

    def forward(self, x):
        return self._conv_forward(x, self.effective_weight(), self.bias)


class WNConvTranspose1d(WeightNormed, nn.ConvTranspose1d):
    def __init__(self, *args, init_std: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight(init_std)

    def forward(self, x):
        return F.conv_transpose1d(x, self.effective_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


class WNConvTranspose2d(WeightNormed, nn.ConvTranspose2d):
    def __init__(self, *args, init_std: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._split_weight(init_std)

    def forward(self, x):
        return F.conv_transpose2d(x, self.effective_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


def weight_normed_layers(module: nn.Module) -> list[WeightNormed]:
    return [m for m in module.modules() if isinstance(m, WeightNormed)]


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-normalised layer below `module` (for inference)."""
    for m in weight_normed_layers(module):
        m.fold()
    return module

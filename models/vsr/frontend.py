"""Visual front-end of the lip reader: a 3-D convolution stem and a 2-D ResNet-18 trunk.

(B, 1, T, H, W) grey mouth crops -> (B, T, 512) per-frame features. The stem
(conv 5x7x7, stride 1x2x2, BN, swish, max-pool 1x3x3 / 1x2x2) keeps the frame
rate; the trunk runs on every frame separately and ends with global average pooling.
`width` (64 in the published model) is the stem's channels and the first stage's; the
stages double it (64, 128, 256, 512): a narrower front end for small lip readers.
Key names: `frontend3D.{0,1}.*`, `trunk.layer{1..4}.{0,1}.*`.
"""
from __future__ import annotations

import torch
from torch import nn

from models.vsr.layers import Swish


def _activation(kind: str, channels: int) -> nn.Module:
    if kind == "relu":
        return nn.ReLU()
    if kind == "prelu":
        return nn.PReLU(num_parameters=channels)
    if kind == "swish":
        return Swish()
    raise ValueError(f"unknown activation {kind!r}")


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, relu_type: str = "swish"):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = _activation(relu_type, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = _activation(relu_type, planes)
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + shortcut)


class ResNetTrunk(nn.Module):
    """Four stages of two basic blocks (64, 128, 256, 512 channels), then global average pooling."""

    def __init__(self, relu_type: str = "swish", width: int = 64):
        super().__init__()
        chans = [width, 2 * width, 4 * width, 8 * width]
        inplanes = width
        for i, planes in enumerate(chans):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(BasicBlock(inplanes, planes, stride, relu_type),
                                  BasicBlock(planes, planes, 1, relu_type))
            self.add_module(f"layer{i + 1}", stage)
            inplanes = planes
        self.out_dim = chans[-1]
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


class Conv3dResNet(nn.Module):
    def __init__(self, relu_type: str = "swish", width: int = 64):
        super().__init__()
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, width, (5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            Swish(),  # the stem always uses swish, whatever relu_type says
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.trunk = ResNetTrunk(relu_type, width)
        self.out_dim = self.trunk.out_dim

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 1, T, H, W) -> (B, T, 8 * width)."""
        b = video.size(0)
        x = self.frontend3D(video)  # (B, 64, T, H', W')
        t = x.size(2)
        x = x.transpose(1, 2).reshape(b * t, x.size(1), x.size(3), x.size(4))
        return self.trunk(x).view(b, t, -1)

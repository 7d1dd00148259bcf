"""Lip-reading stream of MelGen: 3-D conv front-end, per-frame ShuffleNetV2 trunk, temporal ConvNet.

Input: normalised mouth crops (B, 1, T, 88, 88). Output: (B, 512, 1, T), one
feature vector per video frame. Attribute names follow the published checkpoint
(`net_lipreading.frontend3D`, `.trunk`, `.tcn.tcn_trunk.network`, `.tcn.tcn_output`).
"""
from __future__ import annotations

import torch
from torch import nn


def _bn_relu_conv(cin, cout, k, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit. Stride 1: half the channels pass through, the other half go through
    `banch2`. Stride 2: both `banch1` and `banch2` see all channels. Then a 2-group shuffle."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        mid = cout // 2
        if stride == 2:
            # depthwise 3x3 stride 2, BN, pointwise, BN, ReLU
            self.banch1 = nn.Sequential(*_bn_relu_conv(cin, cin, 3, 2, groups=cin, relu=False),
                                        *_bn_relu_conv(cin, mid, 1))
            b2_in = cin
        else:
            b2_in = mid
        # pointwise, BN, ReLU, depthwise 3x3, BN, pointwise, BN, ReLU
        self.banch2 = nn.Sequential(*_bn_relu_conv(b2_in, mid, 1),
                                    *_bn_relu_conv(mid, mid, 3, stride, groups=mid, relu=False),
                                    *_bn_relu_conv(mid, mid, 1))

    def forward(self, x):
        if self.stride == 1:
            keep, work = x.chunk(2, dim=1)
            out = torch.cat((keep, self.banch2(work)), dim=1)
        else:
            out = torch.cat((self.banch1(x), self.banch2(x)), dim=1)
        b, c, h, w = out.shape
        return out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


_SHUFFLENET_CHANNELS = {0.5: [48, 96, 192, 1024], 1.0: [116, 232, 464, 1024],
                        1.5: [176, 352, 704, 1024], 2.0: [244, 488, 976, 2048]}


class ShuffleTrunk(nn.Sequential):
    """trunk.0: the three ShuffleNetV2 stages (4 + 8 + 4 units); trunk.1: 1x1 conv to the feature width."""

    def __init__(self, cin: int, width: float = 1.0, repeats=(4, 8, 4)):
        chans = _SHUFFLENET_CHANNELS[float(width)]
        units = []
        for stage, n in enumerate(repeats):
            for i in range(n):
                units.append(ShuffleUnit(cin, chans[stage], 2 if i == 0 else 1))
                cin = chans[stage]
        super().__init__(nn.Sequential(*units), nn.Sequential(*_bn_relu_conv(cin, chans[-1], 1)))
        self.out_features = chans[-1]

    def forward(self, x):
        return super().forward(x).mean(dim=(2, 3))


class TemporalBlock(nn.Module):
    """Two dilated non-causal convolutions (BN, PReLU, dropout) with a residual connection.

    The published checkpoint stores every layer twice: under its own name (`conv1`,
    `batchnorm1`, `relu1`, `conv2`, ...) and as a member of the sequential `net`
    (net.0, net.1, net.3, net.5, net.6, net.8). Both names refer to the same module
    here, so both key sets load (as in the original, the `net.*` copy is loaded last).
    """

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        pad = (kernel - 1) * dilation // 2
        self.conv1 = nn.Conv1d(cin, cout, kernel, padding=pad, dilation=dilation)
        self.batchnorm1 = nn.BatchNorm1d(cout)
        self.relu1 = nn.PReLU(cout)
        self.dropout1 = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(cout, cout, kernel, padding=pad, dilation=dilation)
        self.batchnorm2 = nn.BatchNorm1d(cout)
        self.relu2 = nn.PReLU(cout)
        self.dropout2 = nn.Dropout(dropout)
        # index 2 and 7 were parameter-free trimming layers in the original: identities here.
        self.net = nn.Sequential(self.conv1, self.batchnorm1, nn.Identity(), self.relu1, self.dropout1,
                                 self.conv2, self.batchnorm2, nn.Identity(), self.relu2, self.dropout2)
        self.downsample = nn.Conv1d(cin, cout, 1) if cin != cout else None
        self.relu = nn.PReLU(cout)

    def forward(self, x):
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(self.net(x) + res)


class TemporalConvNet(nn.Module):
    def __init__(self, cin: int, channels: int, layers: int, kernel: int, dropout: float):
        super().__init__()
        blocks = [TemporalBlock(cin if i == 0 else channels, channels, kernel, 2 ** i, dropout) for i in range(layers)]
        self.network = nn.Sequential(*blocks)

    def forward(self, x):
        return self.network(x)


class TCN(nn.Module):
    def __init__(self, cin: int, channels: int, layers: int, kernel: int, dropout: float, n_classes: int):
        super().__init__()
        self.tcn_trunk = TemporalConvNet(cin, channels, layers, kernel, dropout)
        # Word-classification head of the pretrained lip reader; unused, kept so checkpoints load.
        # Frozen: it gets no gradient, which DistributedDataParallel would otherwise reject.
        self.tcn_output = nn.Linear(channels, n_classes).requires_grad_(False)

    def forward(self, x):
        return self.tcn_trunk(x)


class LipStream(nn.Module):
    def __init__(self, frontend_channels=24, shufflenet_width=1.0, tcn_channels=512, tcn_layers=4,
                 tcn_kernel=3, tcn_dropout=0.2, tcn_classes=500):
        super().__init__()
        c = frontend_channels
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, c, (5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(c), nn.PReLU(c),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        self.trunk = ShuffleTrunk(c, shufflenet_width)
        self.tcn = TCN(self.trunk.out_features, tcn_channels, tcn_layers, tcn_kernel, tcn_dropout, tcn_classes)
        self.out_features = tcn_channels

    def forward(self, mouthroi: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, H, W) -> (B, C, 1, T)."""
        b, _, t = mouthroi.shape[:3]
        x = self.frontend3D(mouthroi)                         # (B, c, T, h, w)
        x = x.transpose(1, 2).flatten(0, 1)                   # (B*T, c, h, w)
        x = self.trunk(x).view(b, t, -1).transpose(1, 2)      # (B, F, T)
        return self.tcn(x).unsqueeze(2)

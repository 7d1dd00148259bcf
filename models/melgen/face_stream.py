"""Face-identity stream of MelGen: ResNet-18 trunk, global max-pool, linear 512 -> 128.

Input: one normalised RGB face image (B, 3, H, W). Output (B, 128, 1, 1).
Attribute names follow the published checkpoint (`net_facial.feature_extraction.{0..7}`,
`net_facial.conv1` as a second name of the first convolution, `net_facial.fc`).
"""
from __future__ import annotations

import torch
from torch import nn


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    # torchvision is imported when a face stream is built, not with this module: importing it takes 1.3 s (it
    # loads torch._dynamo), which the scripts that import MelGen's module without building one need not pay
    from torchvision.models.resnet import BasicBlock

    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(BasicBlock(cin, cout, stride, down), BasicBlock(cout, cout))


class FaceStream(nn.Module):
    def __init__(self, embed_dim: int = 128, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.feature_extraction = nn.Sequential(
            self.conv1, nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
            _stage(64, 64, 1), _stage(64, 128, 2), _stage(128, 256, 2), _stage(256, 512, 2))
        self.fc = nn.Linear(512, embed_dim)
        self.out_features = embed_dim

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        x = self.feature_extraction(face).amax(dim=(2, 3))
        return self.fc(x).view(x.shape[0], -1, 1, 1)

"""SyncNet: the audio-visual synchronisation network behind the LSE-C / LSE-D scores of lip-to-speech papers.

The network of the published `syncnet_v2.model` (VGG's lip-sync page; Chung & Zisserman, "Out of time",
2016), built so that the published file loads strictly by its own keys (`netcnnaud.*`, `netfcaud.*`,
`netcnnlip.*`, `netfclip.*`; the indices are the positions in each nn.Sequential, pooling and ReLU
layers included). Two branches, each ending in a 1024-d embedding:

* audio: 1 x 13 x 20 MFCC windows (13 coefficients x 20 frames = 0.2 s) -> six 2-D convolutions with
  BatchNorm and ReLU (64, 192, 384, 256, 256, 512 channels; max-pools after the 2nd and 5th; the last
  convolution 5 x 4 without padding leaves 512 x 1 x 1) -> Linear 512-512, BatchNorm, ReLU, Linear 512-1024;
* lips: 3 x 5 x 224 x 224 windows (5 video frames, BGR pixel values 0..255, no normalisation) -> a 5 x 7 x 7
  3-D convolution over the 5 frames (96 channels, stride 2), then 3-D convolutions of depth 1 (256 x 4, 512;
  max-pools after the 1st, 2nd and 5th; the last 6 x 6 without padding leaves 512 x 1 x 1 x 1) -> the same
  fully connected head as audio.

Both embeddings are compared by Euclidean distance (pipelines/sync_scores.py); training used a contrastive
loss, so in-sync pairs are near and out-of-sync pairs far.

    net = load_syncnet("checkpoints/syncnet_v2.model", map_location="cuda")
    a = net.audio_embedding(mfcc_windows)      # (N, 1, 13, 20)         -> (N, 1024)
    v = net.lip_embedding(lip_windows)         # (N, 3, 5, 224, 224)    -> (N, 1024)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from utils.checkpoint import load_state_dict_strict, read_checkpoint
from utils.errors import LipVoicerError

EMBEDDING = 1024
MFCC_COEFFS = 13       # audio window: 13 MFCCs ...
AUDIO_WINDOW = 20      # ... over 20 MFCC frames (0.2 s at 100 frames/s)
VIDEO_WINDOW = 5       # lip window: 5 video frames (0.2 s at 25 fps)
FACE_SIZE = 224        # lip input: 224 x 224 face crops
FETCH_HINT = "python download_checkpoints.py --only syncnet_v2"


def _conv_bn_relu(conv: nn.Module, channels: int, batch_norm) -> list[nn.Module]:
    return [conv, batch_norm(channels), nn.ReLU(inplace=True)]


def _audio_trunk() -> nn.Sequential:
    """MFCC window (N, 1, 13, 20) -> (N, 512, 1, 1). Indices of the published keys: convolutions at
    0, 4, 8, 11, 14, 18; their BatchNorms one place later."""
    bn = nn.BatchNorm2d
    layers: list[nn.Module] = []
    layers += _conv_bn_relu(nn.Conv2d(1, 64, 3, stride=1, padding=1), 64, bn)
    layers += [nn.MaxPool2d(kernel_size=1, stride=1)]
    layers += _conv_bn_relu(nn.Conv2d(64, 192, 3, stride=1, padding=1), 192, bn)
    layers += [nn.MaxPool2d(kernel_size=3, stride=(1, 2))]
    layers += _conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, bn)
    layers += _conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, bn)
    layers += _conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, bn)
    layers += [nn.MaxPool2d(kernel_size=3, stride=2)]
    layers += _conv_bn_relu(nn.Conv2d(256, 512, (5, 4), padding=0), 512, bn)
    return nn.Sequential(*layers)


def _lip_trunk() -> nn.Sequential:
    """Lip window (N, 3, 5, 224, 224) -> (N, 512, 1, 1, 1). Same key positions as the audio trunk."""
    bn = nn.BatchNorm3d
    layers: list[nn.Module] = []
    layers += _conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2), padding=0), 96, bn)
    layers += [nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2))]
    layers += _conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), 256, bn)
    layers += [nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))]
    layers += _conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn)
    layers += _conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn)
    layers += _conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn)
    layers += [nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2))]
    layers += _conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6), padding=0), 512, bn)
    return nn.Sequential(*layers)


def _head(out_features: int) -> nn.Sequential:
    """512 trunk features -> the embedding (keys .0, .1 (BatchNorm1d), .3)."""
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, out_features))


class SyncNet(nn.Module):
    """The two-branch network of syncnet_v2.model (see the module text); always used in eval mode."""

    def __init__(self, embedding: int = EMBEDDING):
        super().__init__()
        self.netcnnaud = _audio_trunk()
        self.netfcaud = _head(embedding)
        self.netcnnlip = _lip_trunk()
        self.netfclip = _head(embedding)

    def audio_embedding(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 1024)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def lip_features(self, lips: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR windows (0..255) -> (N, 512) trunk features (before the head)."""
        return self.netcnnlip(lips).flatten(1)

    def lip_embedding(self, lips: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR windows (0..255) -> (N, 1024)."""
        return self.netfclip(self.lip_features(lips))


def syncnet_state_dict(obj, name: str) -> dict:
    """The state dict of a loaded SyncNet file: the published file is the plain state dict; a dict that
    wraps one under `state_dict` / `model_state_dict` is accepted too."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise LipVoicerError(f"{name}: not a SyncNet state dict (expected the tensors of syncnet_v2.model, keys such as "
                         f"netcnnlip.0.weight)")


def load_syncnet(source, map_location="cpu") -> SyncNet:
    """SyncNet from `syncnet_v2.model` (a path) or an already-loaded state dict, loaded strictly by its own keys
    (a missing file, another model's file or a wrong shape is one LipVoicerError naming the file), in eval
    mode without gradients."""
    if isinstance(source, (str, Path)):
        name = str(source)
        obj = read_checkpoint(source, FETCH_HINT)
    else:
        name, obj = "SyncNet weights", source
    net = SyncNet()
    load_state_dict_strict(net, syncnet_state_dict(obj, name), what=name)
    net.requires_grad_(False)
    return net.to(map_location).eval()

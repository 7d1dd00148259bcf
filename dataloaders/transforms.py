"""Model-input transforms: mouth crops -> the lip encoder's tensor, a face frame -> the face encoder's.

    mouth = mouth_to_tensor(crops, cfg.video, train=False)   # uint8 (T, 96, 96) -> (1, T, 88, 88)
    face = face_to_tensor(frame, cfg.video, train=False)     # uint8 RGB (H, W, 3) -> (3, 224, 224)

In training (train=True, with a random.Random) the crops get a random crop and flip, the
face a random flip and brightness / colour jitter; otherwise both are centre crops.
"""
from __future__ import annotations

import random

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def mouth_to_tensor(crops: np.ndarray, video_cfg, train: bool, rng: random.Random | None = None) -> torch.Tensor:
    """uint8 (T, 96, 96) -> normalised (1, T, 88, 88): random crop + flip in training, centre crop else."""
    size = int(video_cfg["mouth_crop"])
    h, w = crops.shape[1:]
    if train:
        top, left = rng.randint(0, h - size), rng.randint(0, w - size)
    else:
        top, left = (h - size) // 2, (w - size) // 2
    x = torch.from_numpy(np.ascontiguousarray(crops[:, top:top + size, left:left + size])).float() / 255.0
    if train and rng.random() < 0.5:
        x = x.flip(-1)
    x = (x - float(video_cfg["mouth_mean"])) / float(video_cfg["mouth_std"])
    return x.unsqueeze(0)


def face_to_tensor(frame: np.ndarray, video_cfg, train: bool, rng: random.Random | None = None) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (3, S, S): short side resized to S (224), centre square, ImageNet
    normalisation; in training a random horizontal flip and brightness/colour jitter."""
    import torchvision.transforms.v2.functional as TF   # here, not above: importing torchvision takes 1.3 s
                                                        # (it loads torch._dynamo), which scripts that never
                                                        # make a face tensor (evaluate.py, an error) need not pay
    size = int(video_cfg["face_size"])
    img = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    img = TF.resize(img, size, antialias=True)
    img = TF.center_crop(img, [size, size])
    img = img.float() / 255.0
    if train:
        lo, hi = video_cfg["face_jitter"]
        if rng.random() < 0.5:
            img = img.flip(-1)
        img = TF.adjust_brightness(img, rng.uniform(lo, hi))
        img = TF.adjust_saturation(img, rng.uniform(lo, hi))
    return TF.normalize(img, IMAGENET_MEAN, IMAGENET_STD)

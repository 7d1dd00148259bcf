"""MelGen: the conditional diffusion model that turns mouth video + face image into a mel.

eps = MelGen(x_t, mouth video, face image, t). The visual condition is the
face-identity vector (128, repeated over frames) followed by the lip-reading
stream (512 per video frame): 640 channels in that order. For classifier-free
guidance both conditions are replaced together by the fixed random tensors
`mouthroi_null` / `face_null` stored in the checkpoint.

For sampling, `condition()` computes the visual features once per clip and
`denoise()` reuses them at every step (see also WaveNet.cond_projections).
"""
from __future__ import annotations

import torch
from torch import nn

from models.melgen.face_stream import FaceStream
from models.melgen.lip_stream import LipStream
from models.melgen.wavenet import WaveNet

_WAVENET_KEYS = ("in_channels", "out_channels", "res_channels", "skip_channels", "num_res_layers", "dilation_cycle",
                 "diffusion_step_embed_dim_in", "diffusion_step_embed_dim_mid", "diffusion_step_embed_dim_out",
                 "mel_upsample")
_LIP_KEYS = ("frontend_channels", "shufflenet_width", "tcn_channels", "tcn_layers", "tcn_kernel", "tcn_dropout",
             "tcn_classes")


class MelGen(nn.Module):
    def __init__(self, cfg, mouth_crop: int = 88, face_size: int = 224):
        """cfg: the `melgen` section of the config (mapping)."""
        super().__init__()
        self.net_lipreading = LipStream(**{k: cfg[k] for k in _LIP_KEYS})
        self.net_facial = FaceStream(cfg["face_embed_dim"])
        cond_channels = self.net_lipreading.out_features + self.net_facial.out_features
        self.net_diffwave = WaveNet(cond_channels=cond_channels, **{k: cfg[k] for k in _WAVENET_KEYS})
        self.cond_drop_prob = float(cfg.get("cond_drop_prob", 0.2))
        self.upsample_factor = 1
        for s in cfg["mel_upsample"]:
            self.upsample_factor *= int(s)
        # Null conditions: fixed random tensors (saved with the model, not trained).
        self.register_buffer("mouthroi_null", torch.randn(1, 1, 1, mouth_crop, mouth_crop))
        self.register_buffer("face_null", torch.randn(1, 3, face_size, face_size))

    def lip_channels_last(self) -> "MelGen":
        """Lay the lip stream's convolutions out channels-last (its 3-D front-end channels_last_3d): the
        same function, and on a CPU a training step of the cpu preset takes 0.81 s instead of 1.12 s
        (batch 16, one thread: the per-frame ShuffleNet on 11 x 11 maps is the slow part). Used by the
        trainer on CPU; checkpoints are unaffected (load_state_dict copies into any layout)."""
        self.net_lipreading.frontend3D.to(memory_format=torch.channels_last_3d)
        self.net_lipreading.trunk.to(memory_format=torch.channels_last)
        return self

    # -- conditions -------------------------------------------------------------------------
    def visual_features(self, mouthroi: torch.Tensor, face_image: torch.Tensor):
        """(B,1,T,H,W), (B,3,h,w) -> lip features (B,512,1,T), face features (B,128,1,1)."""
        return self.net_lipreading(mouthroi), self.net_facial(face_image)

    def condition(self, mouthroi: torch.Tensor, face_image: torch.Tensor) -> torch.Tensor:
        """The visual condition (B, 640, T) at video rate: face channels first, then lip channels."""
        lip, face = self.visual_features(mouthroi, face_image)
        face = face.expand(-1, -1, 1, lip.shape[-1])
        return torch.cat((face, lip), dim=1).squeeze(2)

    def null_inputs(self, batch: int, frames: int):
        """The null mouth video (B,1,T,H,W) and null face (B,3,h,w)."""
        return (self.mouthroi_null.expand(batch, -1, frames, -1, -1),
                self.face_null.expand(batch, -1, -1, -1))

    def null_condition(self, batch: int, frames: int) -> torch.Tensor:
        return self.condition(*self.null_inputs(batch, frames))

    def _drop_conditions(self, mouthroi, face_image, p: float):
        """Replace both conditions of each sample by the null ones with probability p."""
        b, _, t = mouthroi.shape[:3]
        drop = torch.rand(b, device=mouthroi.device) < p
        if not bool(drop.any()):
            return mouthroi, face_image
        null_m, null_f = self.null_inputs(b, t)
        m = torch.where(drop.view(b, 1, 1, 1, 1), null_m.to(mouthroi.dtype), mouthroi)
        f = torch.where(drop.view(b, 1, 1, 1), null_f.to(face_image.dtype), face_image)
        return m, f

    # -- noise prediction ---------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, cond: torch.Tensor, diffusion_steps: torch.Tensor, cond_projs=None):
        """eps for x_t (B,80,L) given a precomputed condition (B,640,T) (or its per-block projections)."""
        return self.net_diffwave(x, cond, diffusion_steps.view(-1, 1), cond_projs)

    def forward(self, x, mouthroi, face_image, diffusion_steps, cond_drop_prob: float = 0.0):
        """Predicted noise (B, 80, L). cond_drop_prob > 0 drops both conditions per sample (training)."""
        if cond_drop_prob > 0:
            mouthroi, face_image = self._drop_conditions(mouthroi, face_image, cond_drop_prob)
        return self.denoise(x, self.condition(mouthroi, face_image), diffusion_steps)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

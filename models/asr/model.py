"""ASR guidance classifier: a timestep-conditioned audio Efficient Conformer with a CTC head.

It reads the normalised noisy mel x_t (B, 80, L) that MelGen produces at diffusion
step t (no waveform front-end) and returns CTC logits over 256 BPE pieces at 1/8
of the mel frame rate. During guided sampling the gradient of its CTC loss against
the lip-read text, taken w.r.t. x_t, steers the generated mel (models/diffusion/guidance.py).

Layout (module names follow the published checkpoints `checkpoints_ft_lrs{2,3}.ckpt`):
  fc_t1, fc_t2                      diffusion-step embedding 128 -> 512 -> 512, swish after each
  encoder.audio_preprocessing       unused STFT / mel buffers kept for checkpoint compatibility
  encoder.subsampling_module        Conv2d(1 -> 180, 3x3, stride 2) + BatchNorm2d + swish
  encoder.fc_t                      step embedding -> one offset per stem channel
  encoder.linear                    (180 channels x 40 bands) -> 180
  encoder.back_end                  16 conformer blocks in 3 stages (180 / 256 / 360 wide),
                                    each preceded by its own step projection (diff_step_layers.i);
                                    the last block of stages 1 and 2 halves time and widens;
                                    stage 1 uses patch attention (patches of 3 frames)
  encoder.head                      Linear(360 -> 256)

Every size comes from the `asr` config group (configs/asr/default.yaml).
"""
from __future__ import annotations

import functools

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.asr.ctc_tensor import ctc_nll
from utils.checkpoint import atomic_torch_save, load_state_dict_strict, read_checkpoint, strip_ddp_prefix
from utils.errors import LipVoicerError

__all__ = [
    "ASRGuidanceModel", "build_asr", "load_asr_checkpoint", "save_asr_checkpoint", "asr_state_dict",
    "ctc_loss", "ctc_loss_per_clip", "ctc_loss_grad", "count_parameters", "output_lengths",
    "asr_checkpoint_path",
]


# ----------------------------------------------------------------------------- small pieces
def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class Swish(nn.Module):
    def forward(self, x):
        return swish(x)


def diffusion_step_embedding(steps: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, 1) diffusion steps -> (B, dim): [sin(t f_k), cos(t f_k)], f_k = 10000^(-k / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=steps.device, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    arg = steps.reshape(-1, 1).float() * freqs
    return torch.cat((torch.sin(arg), torch.cos(arg)), dim=1)


def halve_lengths(lengths: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """Frames left after a 'same'-padded convolution of this stride: ceil(l / stride)."""
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


def _same_pad(kernel: int) -> tuple[int, int]:
    return (kernel - 1) // 2, kernel // 2


def _cfg_get(cfg, key, default=None):
    try:
        v = cfg[key]
    except (KeyError, AttributeError):
        return default
    return default if v is None else v


class _Buffer(nn.Module):
    """Holds one named buffer (to reproduce the checkpoint's key names)."""

    def __init__(self, name: str, value: torch.Tensor):
        super().__init__()
        self.register_buffer(name, value)


class FrontendBuffers(nn.Module):
    """The original model's waveform front-end (Spectrogram window, mel filter bank).

    It is never applied (the model reads mels directly); the buffers exist so that the
    published state dict loads strictly.
    """

    def __init__(self, sample_rate: int, n_fft: int, win_ms: float, n_mels: int, f_max: float):
        super().__init__()
        win_length = int(sample_rate * win_ms) // 1000
        self.Spectrogram = _Buffer("window", torch.hann_window(win_length))
        try:
            from torchaudio.functional import melscale_fbanks
            fb = melscale_fbanks(n_fft // 2 + 1, 0.0, float(f_max), n_mels, sample_rate)
        except Exception:  # noqa: BLE001 - only the shape matters for a model that is loaded afterwards
            fb = torch.zeros(n_fft // 2 + 1, n_mels)
        self.MelScale = _Buffer("fb", fb)


# ----------------------------------------------------------------------------- conformer parts
class FeedForwardModule(nn.Module):
    def __init__(self, dim: int, ratio: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, dim * ratio), Swish(), nn.Dropout(dropout),
            nn.Linear(dim * ratio, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.layers(x)


def relative_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """Sinusoidal encodings of the relative distances length-1, ..., 0, ..., -(length-1): (2 length - 1, dim)."""
    pos = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32).unsqueeze(1)
    inv = 10000 ** (2 * torch.arange(dim // 2, device=device, dtype=torch.float32).unsqueeze(0) / dim)
    ang = pos / inv
    enc = torch.zeros(2 * length - 1, dim, device=device)
    enc[:, 0::2] = ang.sin()
    enc[:, 1::2] = ang.cos()
    return enc


@functools.lru_cache(maxsize=64)
def _relative_tables(length: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(relative position encodings (2 length - 1, dim), gather index (length, length)) of one length,
    made once per length and device instead of in every block of every sampling step: row i of the
    index holds column (length - 1) - i + j, where the encoding of distance i - j sits."""
    ar = torch.arange(length, device=device)
    return relative_positions(length, dim, device), (length - 1) - ar[:, None] + ar[None, :]


class RelPosSelfAttention(nn.Module):
    """Multi-head self-attention with relative sinusoidal position scores (no content/position biases).

    score(i, j) = (q_i . k_j + q_i . W_pos r_{i-j}) / sqrt(d_head); masked keys get -1e9.
    With patch_size P > 1 the (pre-normalised) input is first averaged over patches of P
    frames (zero-padded to a multiple of P; a patch counts as valid only if all its frames
    are, so a query patch that holds padding has every key masked and attends uniformly,
    as in the original), attention runs on the patches and each patch's output is
    repeated P times.
    """

    def __init__(self, dim: int, num_heads: int, patch_size: int = 1, att_dropout: float = 0.0,
                 max_pos_encoding: int = 10000):
        super().__init__()
        if dim % num_heads:
            raise LipVoicerError(f"asr config: attention width {dim} is not divisible by {num_heads} heads")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.patch_size = int(patch_size)
        self.max_pos_encoding = int(max_pos_encoding)
        self.query_layer = nn.Linear(dim, dim)
        self.key_layer = nn.Linear(dim, dim)
        self.value_layer = nn.Linear(dim, dim)
        self.output_layer = nn.Linear(dim, dim)
        self.pos_layer = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(att_dropout) if att_dropout > 0 else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def _attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        if t > self.max_pos_encoding:
            raise LipVoicerError(f"ASR input too long: {t} frames at this stage (at most {self.max_pos_encoding})")
        q, k, v = self._heads(self.query_layer(x)), self._heads(self.key_layer(x)), self._heads(self.value_layer(x))
        enc, idx = _relative_tables(t, self.dim, x.device)
        e = self.pos_layer(enc.to(x.dtype))                                          # (2t-1, D)
        e = e.reshape(2 * t - 1, self.num_heads, self.head_dim).transpose(0, 1)    # (H, 2t-1, d)
        scores_k = q @ k.transpose(2, 3)
        qe = q @ e.transpose(1, 2)                                                   # (B, H, t, 2t-1)
        scores_e = torch.gather(qe, 3, idx.expand(b, self.num_heads, t, t))
        scores = (scores_k + scores_e) / self.head_dim ** 0.5
        if mask is not None:
            scores = scores.float() + (mask == 0).float() * -1e9
        w = self.dropout(scores.softmax(dim=-1).to(q.dtype))
        o = (w @ v).transpose(1, 2).reshape(b, t, self.dim)
        return self.output_layer(o)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        p = self.patch_size
        if p <= 1:
            return self._attend(x, mask)
        b, t, d = x.shape
        pad = (-t) % p
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        n = (t + pad) // p
        if mask is not None:
            if pad:
                mask = F.pad(mask, (0, pad, 0, pad))
            mask = mask.reshape(mask.shape[0], 1, n, p, n, p).amin(dim=(3, 5))
        xp = F.avg_pool1d(x.transpose(1, 2), p, p).transpose(1, 2)
        o = self._attend(xp, mask)
        return o.repeat_interleave(p, dim=1)[:, :t]


class AttentionModule(nn.Module):
    def __init__(self, dim: int, num_heads: int, patch_size: int, dropout: float, att_dropout: float,
                 max_pos_encoding: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attention = RelPosSelfAttention(dim, num_heads, patch_size, att_dropout, max_pos_encoding)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask):
        return self.dropout(self.attention(self.norm(x), mask))


class ConvolutionModule(nn.Module):
    """LayerNorm, pointwise conv to 2 d_out + GLU, depthwise conv (stride s), BN, swish, pointwise conv."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int, stride: int, dropout: float):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.layers = nn.Sequential(
            nn.LayerNorm(dim_in, eps=1e-6),
            nn.Conv1d(dim_in, 2 * dim_out, 1),
            nn.GLU(dim=1),
            nn.Conv1d(dim_out, dim_out, kernel, stride=stride, groups=dim_out),
            nn.BatchNorm1d(dim_out),
            Swish(),
            nn.Conv1d(dim_out, dim_out, 1),
            nn.Dropout(dropout))

    def forward(self, x):  # (B, T, C) -> (B, T', C')
        L = self.layers
        h = L[0](x).transpose(1, 2)
        h = L[2](L[1](h))
        h = L[3](F.pad(h, _same_pad(self.kernel)))
        h = L[6](L[5](L[4](h)))
        return L[7](h.transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, stride: int, cfg: dict):
        super().__init__()
        self.stride = stride
        self.ff_module1 = FeedForwardModule(dim_in, cfg["ff_ratio"], cfg["dropout"])
        self.self_att_module = AttentionModule(dim_in, cfg["num_heads"], cfg["patch_size"], cfg["dropout"],
                                               cfg["att_dropout"], cfg["max_pos_encoding"])
        self.conv_module = ConvolutionModule(dim_in, dim_out, cfg["conv_kernel"], stride, cfg["dropout"])
        self.ff_module2 = FeedForwardModule(dim_out, cfg["ff_ratio"], cfg["dropout"])
        self.norm = nn.LayerNorm(dim_out, eps=1e-6)
        # residual around the (possibly strided, widening) convolution module
        self.conv_res = nn.Conv1d(dim_in, dim_out, 1, stride=stride) if dim_in != dim_out else None

    def _residual(self, x):
        if self.conv_res is not None:
            return self.conv_res(x.transpose(1, 2)).transpose(1, 2)
        return x[:, ::self.stride] if self.stride > 1 else x

    def forward(self, x, mask):
        x = x + 0.5 * self.ff_module1(x)
        x = x + self.self_att_module(x, mask)
        x = self._residual(x) + self.conv_module(x)
        x = x + 0.5 * self.ff_module2(x)
        return self.norm(x)


class ConformerBackEnd(nn.Module):
    def __init__(self, cfg, step_dim: int):
        super().__init__()
        dims, blocks = list(cfg["dims"]), list(cfg["num_blocks"])
        patches = list(_cfg_get(cfg, "patch_size", [1] * len(dims)))
        if not (len(dims) == len(blocks) == len(patches)):
            raise LipVoicerError(f"asr config: dims {dims}, num_blocks {blocks} and patch_size {patches} "
                                 "must have one entry per stage")
        self.dropout = nn.Dropout(cfg["dropout"])
        self.conformer_blocks = nn.ModuleList()
        self.diff_step_layers = nn.ModuleList()
        for s, (dim, n) in enumerate(zip(dims, blocks)):
            for i in range(n):
                down = i == n - 1 and s < len(dims) - 1
                bcfg = {"ff_ratio": int(cfg["ff_ratio"]), "dropout": float(cfg["dropout"]),
                        "num_heads": int(cfg["num_heads"]), "patch_size": int(patches[s]),
                        "att_dropout": float(cfg["att_dropout"]), "max_pos_encoding": int(cfg["max_pos_encoding"]),
                        "conv_kernel": int(cfg["conv_kernel"])}
                self.conformer_blocks.append(ConformerBlock(dim, dims[s + 1] if down else dim, 2 if down else 1, bcfg))
                self.diff_step_layers.append(nn.Linear(step_dim, dim))

    def forward(self, x, lengths, step_embed):
        x = self.dropout(x)
        t = x.shape[1]
        valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None]          # (B, T)
        mask = valid[:, None, None, :].expand(-1, 1, t, -1).to(x.dtype)               # (B, 1, T, T): keys
        for block, proj in zip(self.conformer_blocks, self.diff_step_layers):
            x = x + proj(step_embed).unsqueeze(1)
            x = block(x, mask)
            if block.stride > 1:
                mask = mask[:, :, ::block.stride, ::block.stride]
                lengths = halve_lengths(lengths, block.stride)
        return x, lengths


class AudioEncoder(nn.Module):
    def __init__(self, cfg, step_dim: int):
        super().__init__()
        n_mels, filters, k = int(cfg["n_mels"]), int(cfg["stem_filters"]), int(cfg["stem_kernel"])
        self.stem_kernel = k
        self.audio_preprocessing = FrontendBuffers(int(cfg["frontend_sample_rate"]), int(cfg["frontend_n_fft"]),
                                                   float(cfg["frontend_win_ms"]), n_mels, float(cfg["frontend_f_max"]))
        self.subsampling_module = nn.Module()
        self.subsampling_module.layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(1, filters, k, stride=2), nn.BatchNorm2d(filters), Swish())])
        stem_bands = (n_mels - 1) // 2 + 1
        self.linear = nn.Linear(filters * stem_bands, int(cfg["dims"][0]))
        self.fc_t = nn.Linear(step_dim, filters)
        self.back_end = ConformerBackEnd(cfg, step_dim)
        self.head = nn.Linear(int(cfg["dims"][-1]), int(cfg["vocab_size"]))

    def forward(self, mel, lengths, step_embed):
        x = mel.unsqueeze(1)                                                  # (B, 1, F, T)
        lo, hi = _same_pad(self.stem_kernel)
        for layer in self.subsampling_module.layers:
            x = layer(F.pad(x, (lo, hi, lo, hi)))
            lengths = halve_lengths(lengths)
        x = x + self.fc_t(step_embed)[:, :, None, None]
        b, c, f, t = x.shape
        x = self.linear(x.reshape(b, c * f, t).transpose(1, 2))              # (B, T, D0)
        x, lengths = self.back_end(x, lengths, step_embed)
        return self.head(x), lengths


class ASRGuidanceModel(nn.Module):
    """model(mel (B, 80, L), lengths (B,), diffusion_steps (B, 1)) -> (logits (B, L', V), out_lengths (B,))."""

    def __init__(self, cfg):
        super().__init__()
        self.step_dim_in = int(cfg["step_embed_dim_in"])
        mid, out = int(cfg["step_embed_dim_mid"]), int(cfg["step_embed_dim_out"])
        self.vocab_size = int(cfg["vocab_size"])
        self.n_mels = int(cfg["n_mels"])
        self.encoder = AudioEncoder(cfg, out)
        self.fc_t1 = nn.Linear(self.step_dim_in, mid)
        self.fc_t2 = nn.Linear(mid, out)

    def embed_steps(self, diffusion_steps: torch.Tensor) -> torch.Tensor:
        e = diffusion_step_embedding(diffusion_steps, self.step_dim_in)
        return swish(self.fc_t2(swish(self.fc_t1(e))))

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None, diffusion_steps: torch.Tensor):
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise LipVoicerError(f"ASR input must be a mel of shape (batch, {self.n_mels}, frames), "
                                 f"got {tuple(mel.shape)}")
        b = mel.shape[0]
        if lengths is None:
            lengths = torch.full((b,), mel.shape[2], dtype=torch.long, device=mel.device)
        lengths = lengths.to(mel.device).long()
        steps = torch.as_tensor(diffusion_steps, device=mel.device).float()
        steps = steps.reshape(-1, 1).expand(b, 1) if steps.numel() == 1 else steps.reshape(b, 1)
        return self.encoder(mel, lengths, self.embed_steps(steps))


def output_lengths(lengths: torch.Tensor, cfg) -> torch.Tensor:
    """Logit frames for mel lengths: one halving in the stem and one per stage transition."""
    for _ in range(len(list(cfg["dims"]))):  # stem + (stages - 1) transitions
        lengths = halve_lengths(lengths)
    return lengths


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- losses
def ctc_loss_per_clip(logits: torch.Tensor, out_lengths: torch.Tensor, tokens: torch.Tensor,
                      token_lengths: torch.Tensor) -> torch.Tensor:
    """CTC negative log-likelihood of each clip's text (B,), blank 0, infinite losses set to 0."""
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)      # (T, B, V)
    return F.ctc_loss(log_probs, tokens.long(), out_lengths.long(), token_lengths.long(), blank=0,
                      reduction="none", zero_infinity=True)


def ctc_loss(logits: torch.Tensor, out_lengths: torch.Tensor, tokens: torch.Tensor,
             token_lengths: torch.Tensor) -> torch.Tensor:
    """The reference's loss: per-clip CTC NLL (summed over frames, not length-normalised), mean over the batch."""
    return ctc_loss_per_clip(logits, out_lengths, tokens, token_lengths).mean()


def ctc_loss_grad(model: nn.Module, mel: torch.Tensor, lengths: torch.Tensor, diffusion_steps: torch.Tensor,
                  tokens: torch.Tensor, token_lengths: torch.Tensor, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip CTC losses (B,) and d loss_b / d mel_b for every clip b, in one batched pass.

    The gradient is that of the *sum* of the per-clip losses, so each clip's gradient is
    exactly its gradient alone (clips do not interact in eval mode). For one clip it
    equals the gradient of `ctc_loss` (the reference's batch mean). Model parameters get
    no gradients. The loss is the tensor-operation CTC of models/asr/ctc_tensor.py (equal to
    F.ctc_loss with zero_infinity, but with no host synchronisation); `labels` = ctc_tensor.ctc_labels(tokens,
    token_lengths), when given, saves rebuilding them in every call.
    """
    with torch.enable_grad():
        x = mel.detach().requires_grad_(True)
        logits, out_lengths = model(x, lengths, diffusion_steps)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        per_clip = ctc_nll(log_probs, out_lengths, tokens.to(x.device), token_lengths.to(x.device), labels=labels)
        (grad,) = torch.autograd.grad(per_clip.sum(), x)
    return per_clip.detach(), grad


# ----------------------------------------------------------------------------- checkpoints
def build_asr(cfg_asr) -> ASRGuidanceModel:
    """A freshly initialised classifier from the `asr` config group."""
    try:
        return ASRGuidanceModel(cfg_asr)
    except KeyError as e:
        raise LipVoicerError(f"asr config: missing key {e}") from None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def asr_state_dict(ckpt, what: str = "ASR checkpoint") -> dict:
    """The model state dict of a checkpoint in the published format, without DDP `.module.` parts."""
    if not isinstance(ckpt, Mapping) or "model_state_dict" not in ckpt:
        keys = ", ".join(map(str, list(ckpt)[:6])) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise LipVoicerError(f"{what}: not an ASR checkpoint (no 'model_state_dict'; found: {keys})")
    sd = ckpt["model_state_dict"]
    if not isinstance(sd, Mapping):
        raise LipVoicerError(f"{what}: 'model_state_dict' is not a state dict")
    return strip_ddp_prefix(sd, inner=True)


def load_asr_checkpoint(path_or_dict, cfg_asr, map_location="cpu") -> ASRGuidanceModel:
    """Build the classifier and load a checkpoint (path or loaded dict) strictly; returned in eval mode."""
    if isinstance(path_or_dict, (str, Path)):
        what = str(path_or_dict)
        ckpt = read_checkpoint(path_or_dict, fetch_hint="python download_checkpoints.py --only asr_lrs2 asr_lrs3")
    else:
        what, ckpt = "ASR checkpoint", path_or_dict
    sd = asr_state_dict(ckpt, what)
    model = build_asr(cfg_asr)
    load_state_dict_strict(model, sd, what=what)
    return model.to(map_location).eval()


def save_asr_checkpoint(model: nn.Module, optimizer, step: int, path, extra: dict | None = None) -> Path:
    """Write {model_state_dict, optimizer_state_dict, model_step, is_distributed} atomically (published format)."""
    ckpt = {
        "model_state_dict": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "model_step": int(step),
        "is_distributed": False,
    }
    if extra:
        ckpt.update(extra)
    return atomic_torch_save(ckpt, path)


def asr_checkpoint_path(cfg, dataset: str) -> Path:
    """checkpoints/<asr.checkpoints[dataset]> for dataset lrs2 | lrs3."""
    table = cfg["asr"]["checkpoints"]
    key = str(dataset).lower()
    if key not in table:
        raise LipVoicerError(f"no published ASR fine-tune for dataset '{dataset}' (have: {', '.join(table)})")
    return Path(cfg["paths"]["checkpoints_dir"]) / table[key]

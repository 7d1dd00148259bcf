"""Training the lip reader: the hybrid CTC / attention loss of the published recipe, and its files.

    out = vsr_loss(model, video, lengths, tokens, token_lengths, ctc_weight=0.1, smoothing=0.1)
    out["loss"].backward()

The loss is ESPnet's `ctc_weight * L_ctc + (1 - ctc_weight) * L_att`: L_ctc the CTC loss of the
encoder's CTC head summed over each clip, L_att the decoder's label-smoothed loss (the KL
divergence from a target that puts 1 - smoothing on the right unit and smoothing / (V - 1) on each
other one) summed over the target positions (the units, then `<eos>`; the decoder reads `<sos>`
and the units); both divided by the batch size (ESPnet's default, not by the number of units).

    write_lip_reader(folder, model, model_json, units)   # model.pth, model.json, units.txt

writes what models/vsr/reader.py loads for the published lip reader: a plain state dict, the
ESPnet `[idim, odim, args]` file and the units file.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from models.vsr.tokens import units_file_text
from utils.checkpoint import atomic_torch_save
from utils.files import atomic_text

IGNORE = -1


def label_smoothing_loss(logp: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Sum over the positions whose target is not IGNORE of KL(smoothed target || p); logp (B, L, V)."""
    v = logp.size(-1)
    keep = target != IGNORE
    lp, tgt = logp[keep], target[keep]
    if lp.numel() == 0:
        return logp.sum() * 0.0
    true = torch.full_like(lp, smoothing / (v - 1))
    true.scatter_(1, tgt.unsqueeze(1), 1.0 - smoothing)
    return (torch.xlogy(true, true) - true * lp).sum()


def decoder_io(tokens: torch.Tensor, token_lengths: torch.Tensor, sos: int, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder input: sos + units, padded with eos; target: units + eos, padded with IGNORE) from tokens (B, U)
    padded with anything."""
    b = tokens.size(0)
    u = int(token_lengths.max()) if b else 0
    ys_in = torch.full((b, u + 1), eos, dtype=torch.long, device=tokens.device)
    ys_out = torch.full((b, u + 1), IGNORE, dtype=torch.long, device=tokens.device)
    ys_in[:, 0] = sos
    for i, n in enumerate(token_lengths.tolist()):
        ys_in[i, 1:n + 1] = tokens[i, :n]
        ys_out[i, :n] = tokens[i, :n]
        ys_out[i, n] = eos
    return ys_in, ys_out


def vsr_loss(model, video: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor, token_lengths: torch.Tensor,
             ctc_weight: float = 0.1, smoothing: float = 0.1, net=None) -> dict:
    """{loss, ctc, att, acc}: the hybrid loss of a padded batch (video (B, 1, T, H, W), lengths (B,), tokens
    (B, U) with token_lengths (B,)) and the decoder's unit accuracy (teacher forcing). `net` runs the forward
    (the model wrapped for distributed training); `model` gives the special ids."""
    b = video.size(0)
    ys_in, ys_out = decoder_io(tokens, token_lengths, model.sos, model.eos)
    _, ctc_logp, dec_logp = (net or model)(video, lengths, ys_in if ctc_weight < 1 else None)
    out = {}
    loss = video.new_zeros(())
    if ctc_logp is not None and ctc_weight > 0:
        flat = torch.cat([tokens[i, :n] for i, n in enumerate(token_lengths.tolist())])
        ctc = F.ctc_loss(ctc_logp.float().transpose(0, 1), flat, lengths, token_lengths, blank=model.blank,
                         reduction="sum", zero_infinity=True) / b
        out["ctc"] = ctc.detach()
        loss = loss + ctc_weight * ctc
    if dec_logp is not None:
        att = label_smoothing_loss(dec_logp.float(), ys_out, smoothing) / b
        mask = ys_out != IGNORE
        out["att"] = att.detach()
        out["acc"] = ((dec_logp.argmax(-1) == ys_out) & mask).sum() / mask.sum().clamp_min(1)
        loss = loss + (1 - ctc_weight) * att
    out["loss"] = loss
    return out


def write_lip_reader(folder: str | Path, model: torch.nn.Module, model_json: list, units: list[str],
                     names: tuple[str, str, str] = ("model.pth", "model.json", "units.txt"),
                     half: bool = False) -> tuple[Path, Path, Path]:
    """The lip reader as the published one ships: plain state dict, `[idim, odim, args]`, units file (each
    written atomically); half=True stores floating-point weights as float16 (loaded back into float32)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
          for k, v in model.state_dict().items()}
    pth, conf, unit_file = (folder / n for n in names)
    atomic_torch_save(sd, pth)
    atomic_text(conf, json.dumps(model_json, indent=1) + "\n")
    atomic_text(unit_file, units_file_text(units))
    return pth, conf, unit_file

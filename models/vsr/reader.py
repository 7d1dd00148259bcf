"""Public entry point of the lip reader: `load_lip_reader(cfg)` and `LipReader.read(crops)`.

    reader = load_lip_reader(cfg)                  # cfg: the project's Hydra config
    text = reader.read(mouth_crops_uint8, "cuda")  # (T, 96, 96) uint8 -> lower-case text
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.vsr.beam_search import BeamSearch, Hypothesis
from models.vsr.lm import TransformerLM
from models.vsr.model import VSRModel
from models.vsr.model_json import parse_lm_json, parse_vsr_json, read_json
from models.vsr.tokens import TokenList
from utils.assets import fetch_command
from utils.checkpoint import load_state_dict_strict, read_checkpoint, strip_ddp_prefix
from utils.errors import LipVoicerError


def fetch_hint(cfg, asset: str | None) -> str | None:
    """`python download_checkpoints.py --only <asset> [--dest <dir>]` for an asset name of cfg.vsr.assets."""
    if not asset:
        return None
    try:
        return fetch_command(cfg, asset)
    except Exception:  # noqa: BLE001 - the asset table is optional here; fall back to the plain command
        return f"python download_checkpoints.py --only {asset}"


def _need_file(path, what: str, hint: str | None) -> Path:
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: {what} not found" + (f"; fetch it with: {hint}" if hint else ""))
    return path


def _plain_state_dict(obj, source: str) -> dict:
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # ESPnet snapshot files keep the weights under "model"
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LipVoicerError(f"{source}: not a state dict of tensors")
    return strip_ddp_prefix(obj)


def preprocess_mouth_crops(crops: np.ndarray, crop: int = 88, mean: float = 0.421, std: float = 0.165,
                           source: str = "mouth crops") -> torch.Tensor:
    """uint8 (T, H, W) -> float32 (1, T, crop, crop): /255, centre crop, (x - mean) / std."""
    crops = np.asarray(crops)
    if crops.ndim == 4 and crops.shape[-1] == 1:
        crops = crops[..., 0]
    if crops.ndim != 3 or crops.shape[0] < 1:
        raise LipVoicerError(f"{source}: expected greyscale frames (T, H, W), got shape {crops.shape}")
    if crops.dtype != np.uint8:
        raise LipVoicerError(f"{source}: expected uint8 pixels, got {crops.dtype}")
    t, h, w = crops.shape
    if h < crop or w < crop:
        raise LipVoicerError(f"{source}: frames are {h}x{w}, smaller than the {crop}x{crop} model input")
    top, left = (h - crop) // 2, (w - crop) // 2
    x = torch.from_numpy(np.ascontiguousarray(crops[:, top:top + crop, left:left + crop])).float() / 255.0
    return ((x - mean) / std).unsqueeze(0)


def load_mouth_npz(path) -> np.ndarray:
    """Mouth crops saved as .npz with key 'data' (uint8 T x H x W)."""
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "data" not in z.files:
                raise LipVoicerError(f"{path}: no 'data' array (keys: {', '.join(z.files) or 'none'})")
            return z["data"]
    except LipVoicerError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable archive is a bad input file
        raise LipVoicerError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e


class LipReader:
    """The lip reader (model + optional LM + token list) with its decoding settings."""

    def __init__(self, model: VSRModel, tokens: TokenList, lm: TransformerLM | None = None, *,
                 beam_size: int = 40, ctc_weight: float = 0.1, lm_weight: float = 0.3, penalty: float = 0.0,
                 maxlenratio: float = 0.0, mouth_crop: int = 88, mouth_mean: float = 0.421,
                 mouth_std: float = 0.165):
        if len(tokens) != model.odim:
            raise ValueError(f"token list has {len(tokens)} entries, the model {model.odim} outputs")
        self.model = model.eval()
        self.lm = lm.eval() if lm is not None else None
        self.tokens = tokens
        self.search = BeamSearch(model, lm, beam_size=beam_size, ctc_weight=ctc_weight, lm_weight=lm_weight,
                                 penalty=penalty, maxlenratio=maxlenratio)
        self.crop, self.mean, self.std = mouth_crop, mouth_mean, mouth_std

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "LipReader":
        self.model.to(device)
        if self.lm is not None:
            self.lm.to(device)
        return self

    @torch.inference_mode()
    def encode(self, mouth_crops: np.ndarray, source: str = "mouth crops") -> torch.Tensor:
        video = preprocess_mouth_crops(mouth_crops, self.crop, self.mean, self.std, source)
        return self.model.encode(video.to(self.device))

    def decode(self, enc: torch.Tensor) -> list[Hypothesis]:
        return self.search(enc)

    def read(self, mouth_crops: np.ndarray, device=None, source: str = "mouth crops") -> str:
        """uint8 mouth crops (T, 96, 96) -> lower-case text ('' when nothing is read)."""
        if device is not None and torch.device(device) != self.device:
            self.to(device)
        hyps = self.decode(self.encode(mouth_crops, source))
        return self.tokens.text(hyps[0].yseq) if hyps else ""


def build_token_list(vcfg, units_path, hint: str | None = None) -> TokenList:
    if vcfg.labels_type == "char":
        return TokenList.from_char_list(vcfg.char_list)
    return TokenList.from_units_file(units_path, hint)


def _read_conf(source, what: str, hint: str | None):
    """A model.json path, or its already-parsed content -> (content, name for messages)."""
    if isinstance(source, (str, Path)):
        return read_json(_need_file(source, what, hint), what), str(source)
    return source, what


def _read_weights(source, what: str, hint: str | None):
    if isinstance(source, (str, Path)):
        return _plain_state_dict(read_checkpoint(_need_file(source, what, hint)), str(source)), str(source)
    return _plain_state_dict(source, what), what


def load_vsr_model(model_source, conf_source, tokens, hints: dict | None = None) -> tuple[VSRModel, TokenList]:
    """Build the network from model.json and load the published plain `model.pth` strictly.

    model_source: path to model.pth or a state dict; conf_source: path to model.json or
    its parsed content; tokens: a TokenList or the path of the units file; hints: the
    download commands for missing files ({"model": ..., "units": ...}).
    """
    hints = hints or {}
    conf, conf_name = _read_conf(conf_source, "lip-reader model.json", hints.get("model"))
    vcfg = parse_vsr_json(conf, conf_name)
    if not isinstance(tokens, TokenList):
        tokens = build_token_list(vcfg, tokens, hints.get("units"))
    sd, name = _read_weights(model_source, "lip-reader checkpoint", hints.get("model"))
    out_w = sd.get("decoder.output_layer.weight", sd.get("ctc.ctc_lo.weight"))
    if out_w is not None and out_w.shape[0] != len(tokens):
        raise LipVoicerError(f"{name}: the model has {out_w.shape[0]} output tokens but the token list has "
                             f"{len(tokens)}")
    model = VSRModel(vcfg, len(tokens))
    load_state_dict_strict(model, sd, what=name)
    return model.eval(), tokens


def load_lm(lm_source, conf_source, n_vocab: int, hint: str | None = None) -> TransformerLM:
    """Build the transformer LM from its model.json and load its `model.pth` strictly (paths or objects)."""
    conf, conf_name = _read_conf(conf_source, "lip-reader language model model.json", hint)
    lm = TransformerLM(n_vocab, parse_lm_json(conf, conf_name))
    sd, name = _read_weights(lm_source, "lip-reader language model checkpoint", hint)
    emb = sd.get("embed.weight")
    if emb is not None and emb.shape[0] != n_vocab:
        raise LipVoicerError(f"{name}: the language model has {emb.shape[0]} tokens, the lip reader {n_vocab}")
    load_state_dict_strict(lm, sd, what=name)
    return lm.eval()


def load_lip_reader(cfg, device=None) -> LipReader:
    """Everything from cfg.vsr (paths, decoding settings) and cfg.video (input normalisation).

    The LM is loaded only when cfg.vsr.lm_weight is non-zero. A missing file is a
    LipVoicerError naming it and the download command.
    """
    v = cfg["vsr"]
    assets = dict(v.get("assets") or {})
    hints = {k: fetch_hint(cfg, a) for k, a in assets.items()}
    model, tokens = load_vsr_model(v["model_path"], v["model_conf"], v["units_path"], hints)
    lm = None
    if float(v["lm_weight"]) != 0.0:
        for path in (v["lm_conf"], v["lm_path"]):
            if not Path(path).is_file():
                hint = hints.get("lm")
                raise LipVoicerError(f"{path}: lip-reader language model file not found; "
                                     + (f"fetch it with: {hint}, or " if hint else "")
                                     + "decode without it with vsr.lm_weight=0")
        lm = load_lm(v["lm_path"], v["lm_conf"], len(tokens), hints.get("lm"))
    video = cfg["video"]
    try:
        reader = LipReader(model, tokens, lm, beam_size=int(v["beam_size"]), ctc_weight=float(v["ctc_weight"]),
                           lm_weight=float(v["lm_weight"]), penalty=float(v["penalty"]),
                           maxlenratio=float(v["maxlenratio"]), mouth_crop=int(video["mouth_crop"]),
                           mouth_mean=float(video["mouth_mean"]), mouth_std=float(video["mouth_std"]))
    except ValueError as e:
        raise LipVoicerError(f"vsr settings: {e}") from e
    return reader.to(device) if device is not None else reader

"""Reading the `model.json` files that ship with the published lip reader and its LM.

The lip reader's file is ESPnet's `[idim, odim, {training arguments}]` list (a bare
dict is accepted too); the LM's is a dict. Only the fields that shape the network
are read; each is checked, and a value this implementation does not support is an
error naming the field (one line, LipVoicerError). Training-only fields (dropout,
label smoothing, reporting) are ignored.

One field is this project's own: `frontend_width` (the visual front end's first channel
count; absent = 64, the published ResNet-18), written by trainers/lipreader.py for small
lip readers. `vsr_model_json` writes a `[idim, odim, args]` list that this reader reads back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from utils.errors import LipVoicerError


@dataclass(frozen=True)
class VSRConfig:
    adim: int
    aheads: int
    eunits: int
    elayers: int
    dunits: int
    dlayers: int
    mtlalpha: float
    input_layer: str = "conv3d"
    encoder_attn: str = "rel_mha"      # rel_mha (relative positions, 'latest' layout) | mha
    macaron_style: bool = True
    use_cnn_module: bool = True
    cnn_module_kernel: int = 31
    zero_triu: bool = False
    relu_type: str = "swish"
    labels_type: str = "unigram5000"   # unigram5000 (units file) | char (char_list below)
    char_list: tuple | None = None
    frontend_width: int = 64           # stem / first-stage channels of the ResNet front end (published: 64)

    @property
    def has_ctc(self) -> bool:
        return self.mtlalpha > 0.0

    @property
    def has_decoder(self) -> bool:
        return self.mtlalpha < 1.0


@dataclass(frozen=True)
class LMConfig:
    layer: int
    unit: int
    att_unit: int
    head: int
    embed_unit: int
    pos_enc: str = "sinusoidal"        # sinusoidal | none
    tie_weights: bool = False


def read_json(path, what: str):
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LipVoicerError(f"{path}: not a readable JSON file ({e})") from e


class _Fields:
    """Typed access to a dict of fields, raising errors that name the field and the file."""

    def __init__(self, conf: dict, source: str):
        self.conf = conf
        self.source = source

    def fail(self, name, msg):
        raise LipVoicerError(f"{self.source}: field '{name}' {msg}")

    def get(self, name, default=None, required=False):
        if name not in self.conf or self.conf[name] is None:
            if required:
                self.fail(name, "is missing")
            return default
        return self.conf[name]

    def pos_int(self, name, default=None, required=True, minimum=1):
        v = self.get(name, default, required)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            self.fail(name, f"must be an integer >= {minimum} (got {v!r})")
        return v

    def number(self, name, lo, hi, default=None, required=True):
        v = self.get(name, default, required)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            self.fail(name, f"must be a number in [{lo}, {hi}] (got {v!r})")
        return float(v)

    def flag(self, name, default=False):
        # argparse's strtobool stores 0/1; newer files store true/false
        v = self.get(name, default)
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no", "1", "0"):
            return v.lower() in ("true", "yes", "1")
        self.fail(name, f"must be true/false (got {v!r})")

    def choice(self, name, allowed, default=None, required=False, why=""):
        v = self.get(name, default, required)
        if v not in allowed:
            exp = ", ".join(repr(a) for a in allowed)
            self.fail(name, f"= {v!r} is not supported (expected {exp}){why}")
        return v


def _conf_dict(obj, source) -> dict:
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, list) and len(obj) == 3 and isinstance(obj[2], dict):
        return obj[2]  # ESPnet: [idim, odim, args]
    raise LipVoicerError(f"{source}: expected a JSON object or an ESPnet [idim, odim, {{...}}] list")


def parse_vsr_json(obj, source: str = "model.json") -> VSRConfig:
    f = _Fields(_conf_dict(obj, source), source)
    adim = f.pos_int("adim")
    aheads = f.pos_int("aheads")
    if adim % aheads:
        f.fail("aheads", f"= {aheads} does not divide adim = {adim}")
    input_layer = f.choice("transformer_input_layer", ("conv3d",), default="conv2d",
                           why="; this lip reader reads mouth video")
    attn = f.choice("transformer_encoder_attn_layer_type", ("rel_mha", "mha"), default="mha")
    if attn == "rel_mha":
        # without rel_pos_type the original falls back to the legacy relative attention
        f.choice("rel_pos_type", ("latest",), default=None, required=True,
                 why="; only the 'latest' relative positional encoding is implemented")
    use_cnn = f.flag("use_cnn_module", False)
    kernel = f.pos_int("cnn_module_kernel", 31, required=False)
    if use_cnn and kernel % 2 == 0:
        f.fail("cnn_module_kernel", f"must be odd (got {kernel})")
    f.choice("ctc_type", ("builtin", "warpctc", "gtnctc", "cudnnctc"), default="builtin")
    f.choice("a_upsample_ratio", (1,), default=1, why="; only used by audio front-ends")
    labels_type = f.choice("labels_type", ("unigram5000", "char"), default="char")
    char_list = None
    if labels_type == "char":
        cl = f.get("char_list", required=True)
        if not isinstance(cl, list) or not all(isinstance(c, str) for c in cl):
            f.fail("char_list", "must be a list of strings")
        char_list = tuple(cl)
    if f.flag("concat_after", False):
        f.fail("concat_after", "= true is not supported")
    if not f.flag("normalize_before", True):
        f.fail("normalize_before", "= false is not supported")
    return VSRConfig(
        adim=adim, aheads=aheads,
        eunits=f.pos_int("eunits"), elayers=f.pos_int("elayers"),
        dunits=f.pos_int("dunits"), dlayers=f.pos_int("dlayers"),
        mtlalpha=f.number("mtlalpha", 0.0, 1.0),
        input_layer=input_layer, encoder_attn=attn,
        macaron_style=f.flag("macaron_style", False), use_cnn_module=use_cnn, cnn_module_kernel=kernel,
        zero_triu=f.flag("zero_triu", False),
        relu_type=f.choice("relu_type", ("swish", "relu", "prelu"), default="swish"),
        labels_type=labels_type, char_list=char_list,
        frontend_width=f.pos_int("frontend_width", 64, required=False),
    )


def vsr_model_json(cfg: VSRConfig, odim: int, idim: int = 80, extra: dict | None = None) -> list:
    """ESPnet's `[idim, odim, args]` for a lip reader of this architecture family: the fields
    parse_vsr_json reads (with the published model's names), plus `extra` (training settings, kept
    for the record). Only the units-file labels are written (labels_type unigram5000)."""
    if cfg.labels_type != "unigram5000":
        raise ValueError("vsr_model_json writes lip readers with a units file (labels_type unigram5000)")
    args = {
        "adim": cfg.adim, "aheads": cfg.aheads, "eunits": cfg.eunits, "elayers": cfg.elayers,
        "dunits": cfg.dunits, "dlayers": cfg.dlayers, "mtlalpha": cfg.mtlalpha,
        "transformer_input_layer": cfg.input_layer, "transformer_encoder_attn_layer_type": cfg.encoder_attn,
        "macaron_style": cfg.macaron_style, "use_cnn_module": cfg.use_cnn_module,
        "cnn_module_kernel": cfg.cnn_module_kernel, "zero_triu": cfg.zero_triu, "relu_type": cfg.relu_type,
        "labels_type": cfg.labels_type, "frontend_width": cfg.frontend_width,
        "ctc_type": "builtin", "a_upsample_ratio": 1, "normalize_before": True, "concat_after": False,
    }
    if cfg.encoder_attn == "rel_mha":
        args["rel_pos_type"] = "latest"
    return [int(idim), int(odim), {**(extra or {}), **args}]


def parse_lm_json(obj, source: str = "lm model.json") -> LMConfig:
    f = _Fields(_conf_dict(obj, source), source)
    f.choice("model_module", ("transformer",), default="default",
             why="; only the transformer LM is implemented")
    f.choice("backend", ("pytorch",), default="pytorch")
    att_unit, head = f.pos_int("att_unit", 256, required=False), f.pos_int("head", 2, required=False)
    if att_unit % head:
        f.fail("head", f"= {head} does not divide att_unit = {att_unit}")
    embed_unit = f.pos_int("embed_unit", 128, required=False)
    tie = f.flag("tie_weights", False)
    if tie and att_unit != embed_unit:
        f.fail("tie_weights", f"= true needs att_unit == embed_unit ({att_unit} != {embed_unit})")
    return LMConfig(
        layer=f.pos_int("layer", 4, required=False), unit=f.pos_int("unit", 1024, required=False),
        att_unit=att_unit, head=head, embed_unit=embed_unit,
        pos_enc=f.choice("pos_enc", ("sinusoidal", "none"), default="sinusoidal"), tie_weights=tie,
    )

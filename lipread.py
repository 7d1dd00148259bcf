"""Print the lip-read text of a mouth-crop .npz (key "data", uint8 T x 96 x 96) or a video.

    python lipread.py path/to/clip.npz
    python lipread.py vsr.input=path/to/video.mp4 vsr.device=cuda vsr.beam_size=10
    python lipread.py examples/synthetic_clip.mp4 models=synthetic      # the shipped set's small lip reader

Settings and file locations: configs/vsr/default.yaml (see docs/lip_reader.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch

from utils.cli import positional_to_override
from utils.errors import LipVoicerError, exit_on_user_error
from utils.native_output import quiet_native_logging


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LipVoicerError(f"vsr.device={name}: CUDA is not available on this machine")
    return torch.device(name)


def mouth_crops_for(path: Path, cfg):
    from models.vsr.reader import load_mouth_npz

    if path.suffix.lower() == ".npz":
        return load_mouth_npz(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: file not found")
    try:
        from dataloaders.prep.mouthcrops import mouth_crops_from_video
    except ImportError as e:
        raise LipVoicerError(f"{path}: mouth cropping from a video is not available yet ({e}); "
                             "give mouth crops as a .npz instead") from e
    return mouth_crops_from_video(str(path), cfg)


def lipread(cfg) -> str:
    from models.model_sets import has_lip_reader, model_set_name, resolve_model_set
    from models.vsr.reader import load_lip_reader

    resolve_model_set(cfg)   # a shipped set (models=synthetic): its files checked, its folder made absolute
    if not has_lip_reader(cfg):
        raise LipVoicerError(f"models={model_set_name(cfg)}: this model set has no lip reader")
    if not cfg.vsr.input:
        raise LipVoicerError("no input given: python lipread.py <clip.npz | video> (or vsr.input=...)")
    path = Path(str(cfg.vsr.input))
    crops = mouth_crops_for(path, cfg)
    device = pick_device(str(cfg.vsr.device))
    reader = load_lip_reader(cfg, device)
    return reader.read(crops, device, source=str(path))


@hydra.main(version_base=None, config_path="configs", config_name="config")
@exit_on_user_error
def main(cfg) -> None:
    print(lipread(cfg))


def _positional_input_to_override(argv: list[str]) -> list[str]:
    """`lipread.py clip.npz ...` -> `lipread.py vsr.input='clip.npz' ...` (Hydra takes key=value only;
    the path is quoted for Hydra's grammar: spaces, parentheses and quotes work)."""
    return positional_to_override(argv, "vsr.input")


if __name__ == "__main__":
    quiet_native_logging()  # before MediaPipe is imported (a video input is cropped with it)
    sys.argv = _positional_input_to_override(sys.argv)
    main()

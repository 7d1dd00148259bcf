"""Shared test fixtures: a tiny corpus in the LRS3 layout and tiny configurations."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Overrides that shrink MelGen and the data so that a training step takes well under a second on CPU.
TINY_MELGEN = [
    "melgen.res_channels=16", "melgen.skip_channels=16", "melgen.num_res_layers=2",
    "melgen.diffusion_step_embed_dim_mid=32", "melgen.diffusion_step_embed_dim_out=32",
    "melgen.tcn_channels=16", "melgen.tcn_layers=2", "melgen.shufflenet_width=0.5", "melgen.face_embed_dim=8",
    "melgen.tcn_classes=4", "video.mouth_crop=32", "video.face_size=64",
]


def compose_cfg(overrides: list[str] | None = None):
    """The project's Hydra config with overrides, as a script would see it."""
    from utils.config import compose_config

    return compose_config(overrides)


def write_video(path: Path, frames: np.ndarray, fps: int = 25) -> None:
    """uint8 RGB frames (T, H, W, 3) -> H.264 mp4 with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_clip(root: Path, clip: str, n_frames: int, seed: int, text: str = "hello world") -> None:
    """One clip with all its files: mp4 + txt, wav + wav.spec, npz mouth crops."""
    import soundfile as sf
    import torch

    from dataloaders.audio import wav_file_to_mel

    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (n_frames, 48, 48, 3), dtype=np.uint8)
    write_video(root / "videos" / f"{clip}.mp4", frames)
    (root / "videos" / f"{clip}.txt").write_text(f"Text:  {text.upper()}\nConf:  4\n")
    sr = 16000
    t = np.arange(n_frames * sr // 25) / sr
    wav = (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
    wav_path = root / "audios" / f"{clip}.wav"
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav_path, wav, sr)
    torch.save(wav_file_to_mel(wav_path), wav_path.with_name(wav_path.name + ".spec"))
    mouth = root / "mouth_rois" / f"{clip}.npz"
    mouth.parent.mkdir(parents=True, exist_ok=True)
    np.savez(mouth, data=rng.integers(0, 255, (n_frames, 96, 96), dtype=np.uint8))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """4 training clips (pretrain/trainval) and 2 test clips, 0.8 to 1.6 s long."""
    root = tmp_path_factory.mktemp("lrs3_tiny")
    specs = [("pretrain/spk0/00001", 30), ("pretrain/spk0/00002", 40), ("trainval/spk1/00001", 28),
             ("trainval/spk1/00002", 25), ("test/spk2/00001", 20), ("test/spk2/00002", 36)]
    for i, (clip, n) in enumerate(specs):
        make_clip(root, clip, n, seed=i, text=f"clip number {i}")
    return root


def tiny_overrides(corpus: Path, save_dir: Path, extra: list[str] | None = None) -> list[str]:
    return [f"dataset.root={corpus}", f"train.save_dir={save_dir}", "train.batch_size_per_gpu=2",
            "train.num_workers=0", "train.iters_per_logging=1", "train.iters_per_image=2", "train.device=cpu",
            *TINY_MELGEN, *(extra or [])]

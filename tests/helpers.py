"""Plain helpers shared by the tests: the composed config, tiny configurations, tiny clips on disk.

(tests/conftest.py holds only the fixtures; import these with `from tests.helpers import ...`.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

# The MelGen preset that shrinks the model and the video inputs (configs/melgen/tiny.yaml) so that a
# training step takes well under a second on CPU.
TINY_MELGEN = ["melgen=tiny"]


def free_port() -> int:
    """A TCP port no process listens on now, for torchrun's --master_port: a fixed number clashes when two test
    runs share a machine (the second rendezvous waits for the first until its timeout)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def tiny_overrides(corpus: Path, save_dir: Path, extra: list[str] | None = None) -> list[str]:
    """Overrides for a tiny MelGen training run on CPU over `corpus`, checkpoints under `save_dir`."""
    return [f"dataset.root={corpus}", f"train.save_dir={save_dir}", "train.batch_size_per_gpu=2",
            "train.num_workers=0", "train.iters_per_logging=1", "train.iters_per_image=2", "train.device=cpu",
            *TINY_MELGEN, *(extra or [])]


def run_script_in_process(script: str, argv: list[str]) -> int | str | None:
    """Run a top-level script of the repository as `__main__` with sys.argv = [script, *argv] in this
    process (faster than a subprocess); returns its SystemExit code (None when it returned normally)."""
    import runpy
    import sys

    old = sys.argv
    sys.argv = [script, *argv]
    try:
        runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = old
    return None


"""A small random corpus in the LRS3 layout, for timing data loading where no dataset is at hand.

    python benchmarks/bench_corpus.py OUT_DIR --clips 64 --seconds 2

Each clip `pretrain/spk<k>/<n>` or `trainval/spk<k>/<n>`: an H.264 mp4 of random frames and its transcript, a 16 kHz
wav with its `.wav.spec` log-mel, and 96 x 96 uint8 mouth crops (`.npz`). The content is
noise: only sizes and formats matter for loading speed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from dataloaders.audio import wav_file_to_mel  # noqa: E402
from dataloaders.video_io.encode import write_video  # noqa: E402


def write_clip(root: Path, rel: str, frames: int, rng: np.random.Generator, size: int = 160) -> None:
    video = root / "videos" / f"{rel}.mp4"
    write_video(video, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), fps=25)
    video.with_suffix(".txt").write_text("Text:  NOISE ONLY\nConf:  0\n")
    wav = root / "audios" / f"{rel}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, (0.1 * rng.standard_normal(frames * 640)).astype(np.float32), 16000)
    torch.save(wav_file_to_mel(wav), wav.with_name(wav.name + ".spec"))
    mouth = root / "mouth_rois" / f"{rel}.npz"
    mouth.parent.mkdir(parents=True, exist_ok=True)
    np.savez(mouth, data=rng.integers(0, 255, (frames, 96, 96), dtype=np.uint8))


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", help="where the corpus goes (dataset.root)")
    ap.add_argument("--clips", type=int, default=64, help="number of clips")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each clip")
    args = ap.parse_args(argv)
    root = Path(args.out_dir)
    rng = np.random.default_rng(0)
    frames = max(26, round(args.seconds * 25))
    for i in range(args.clips):
        split = ("pretrain", "trainval")[i % 2]          # the two sources of the LRS3 train split
        write_clip(root, f"{split}/spk{i % 4}/{i:05d}", frames, rng)
    print(f"wrote {args.clips} clips of {frames} frames under {root}")
    return root


if __name__ == "__main__":
    main()

"""Where batch generation writes: the run folder of a setting and the output files of one clip.

Outputs of one clip live under
`<save_dir>/generated_mels/<DATASET>/w1=<w_video>_w2=<w_asr>_asr_start=<asr_start>/<video_id>`
as `.wav`, `.wav.spec`, `.png`, `_gt.png`, `.txt` (and optionally `.mp4`). Each file is
written under a temporary name and renamed; a clip is finished when all exist.
"""
from __future__ import annotations

from pathlib import Path


def _fmt(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else str(v)


def run_dir(save_dir, dataset_name: str, w_video, w_asr, asr_start) -> Path:
    return (Path(save_dir) / "generated_mels" / str(dataset_name).upper()
            / f"w1={_fmt(w_video)}_w2={_fmt(w_asr)}_asr_start={int(asr_start)}")


class ClipOutputs:
    """The output files of one clip."""

    SUFFIXES = (".wav", ".wav.spec", ".png", "_gt.png", ".txt")

    def __init__(self, run_directory: Path, video_id: str, with_video: bool = False):
        self.base = Path(run_directory) / video_id
        self.with_video = with_video

    def path(self, suffix: str) -> Path:
        return self.base.with_name(self.base.name + suffix)

    def expected(self) -> list[Path]:
        return [self.path(s) for s in self.SUFFIXES + ((".mp4",) if self.with_video else ())]

    def is_done(self) -> bool:
        return all(p.is_file() for p in self.expected())

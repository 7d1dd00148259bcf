"""Generate speech for every clip of a test split (the work behind inference_full_test_split.py).

Clips of similar length are sampled together through the batched guided sampler. Under
torchrun each rank takes a disjoint shard (every world_size-th clip); the union of the
shards is the whole split. A clip is finished when all its files exist; each file is
written under a temporary name and renamed, so re-running (after an interruption, or on
a larger split) skips finished clips and redoes only the rest.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import soundfile as sf

from dataloaders.audio import denormalise_mel
from dataloaders.batching import collate_clips, length_batches
from dataloaders.layout import ClipPaths, list_split_clips
from dataloaders.lrs_dataset import MelGenTestDataset
from dataloaders.text import normalize_text
from dataloaders.video_io import mux_audio
from pipelines.generation import GenerationCore
from pipelines.outputs import ClipOutputs, run_dir
from utils.distributed import shard
from utils.distributed import resolve_device
from utils.files import atomic_write, check_writable
from utils.plotting import save_mel_png
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

GROUND_TRUTH = "ground_truth"  # generate.lipread_text_dir=ground_truth guides with the true transcripts


@dataclass
class SplitSummary:
    rank: int = 0
    world_size: int = 1
    assigned: int = 0
    generated: list[str] = field(default_factory=list)
    already_done: int = 0
    no_text: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0

    def line(self) -> str:
        rate = len(self.generated) / self.seconds if self.seconds > 0 else 0.0
        return (f"rank {self.rank}/{self.world_size}: {len(self.generated)} generated, {self.already_done} already done, "
                f"{len(self.no_text)} without lip-read text, {len(self.failed)} failed of {self.assigned} "
                f"({rate:.3f} clips/s, {self.audio_seconds:.1f} s of audio in {self.seconds:.1f} s)")


# ----------------------------------------------------------------------------- clips and texts
def video_id(clip: str) -> str:
    """`test/spk/00001` -> `spk/00001` (the id LRS lip-reading files and outputs use)."""
    parts = clip.split("/", 1)
    return parts[1] if len(parts) == 2 else clip


def read_lipread_text(text_dir: Path, clip: str) -> str | None:
    """First line of `<text_dir>/<video_id>.txt` (or `<clip>.txt`), normalised; None when missing."""
    for rel in (video_id(clip), clip):
        path = text_dir / f"{rel}.txt"
        if path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            first = lines[0] if lines else ""
            if first.startswith("Text:"):
                first = first[len("Text:"):]
            return normalize_text(first)
    return None


def mouth_frames(path: Path) -> int | None:
    """Frames in a mouth-crop .npz without decoding more than its header (None when unreadable)."""
    try:
        with np.load(path) as z:
            arr = z["data"]
            return int(arr.shape[0])
    except Exception:  # noqa: BLE001 - reported by the caller as a failed clip
        return None


def text_source(gen_cfg) -> str | None:
    src = gen_cfg.get("lipread_text_dir")
    if src is None or str(src).strip() == "":
        if float(gen_cfg["w_asr"]) > 0:
            raise LipVoicerError("ASR guidance needs a text per clip: set generate.lipread_text_dir=<folder of "
                                 f"<video_id>.txt> (or ={GROUND_TRUTH} to guide with the true transcripts, or "
                                 "generate.w_asr=0)")
        return None
    if str(src) == GROUND_TRUTH:
        return GROUND_TRUTH
    if not Path(str(src)).is_dir():
        raise LipVoicerError(f"{src}: lip-read text folder not found (generate.lipread_text_dir)")
    return str(src)


# ----------------------------------------------------------------------------- outputs of one clip
def write_clip(out: ClipOutputs, *, mel: torch.Tensor, gt_mel: torch.Tensor, audio: np.ndarray, sr: int,
               gt_text: str, lipread_text: str | None, video: Path | None) -> None:
    atomic_write(out.path(".wav"), lambda p: sf.write(str(p), audio, sr, subtype="PCM_16", format="WAV"))
    atomic_write(out.path(".wav.spec"), lambda p: torch.save(mel.clone(), p))
    save_mel_png(mel, out.path(".png"), title="generated")
    save_mel_png(gt_mel, out.path("_gt.png"), title="ground truth")
    if out.with_video and video is not None:
        mux_audio(video, audio, sr, out.path(".mp4"))
    body = f"gt: {gt_text}\nlipread: {lipread_text if lipread_text is not None else ''}\n"
    atomic_write(out.path(".txt"), lambda p: p.write_text(body))


def remove_stale_temporaries(out: ClipOutputs) -> None:
    """Temporary files an interrupted run left for this clip (`.<name>.*tmp*`)."""
    for p in out.base.parent.glob(f".{out.base.name}.*"):
        if "tmp" in p.name:
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the job
def generate_split(cfg, rank: int = 0, world_size: int = 1, device: torch.device | None = None,
                   core: GenerationCore | None = None) -> SplitSummary:
    """Generate this rank's shard of cfg.generate.split; returns what happened."""
    gen = cfg["generate"]
    device = device or resolve_device(gen["device"])
    texts_from = text_source(gen)
    out_root = run_dir(gen["save_dir"], cfg["dataset"]["name"], gen["w_video"], gen["w_asr"], gen["asr_start"])
    check_writable(out_root)
    with_video = bool(gen.get("save_video", False))
    sr = int(cfg["audio"]["sampling_rate"])
    per_frame = int(cfg["video"]["mel_frames_per_video_frame"])

    clips = list_split_clips(cfg["dataset"], str(gen["split"]))
    if gen.get("n_samples") is not None:
        clips = clips[:int(gen["n_samples"])]
    mine = shard(clips, rank, world_size)
    summary = SplitSummary(rank=rank, world_size=world_size, assigned=len(mine))

    todo, lengths, lip_texts = [], {}, {}
    for clip in mine:
        out = ClipOutputs(out_root, video_id(clip), with_video)
        if out.is_done():
            summary.already_done += 1
            continue
        remove_stale_temporaries(out)
        if texts_from not in (None, GROUND_TRUTH):
            text = read_lipread_text(Path(texts_from), clip)
            if text is None:
                log.warning("%s: no lip-read text %s/%s.txt; clip skipped", clip, texts_from, video_id(clip))
                summary.no_text.append(clip)
                continue
            lip_texts[clip] = text
        frames = mouth_frames(ClipPaths(cfg["dataset"], clip).mouth)
        if frames is None:
            log.error("%s: mouth crops missing or unreadable (%s); clip skipped", clip,
                      ClipPaths(cfg["dataset"], clip).mouth)
            summary.failed.append(clip)
            continue
        todo.append(clip)
        lengths[clip] = frames
    log.info("rank %d: %d clips assigned, %d already done, %d to generate", rank, len(mine),
             summary.already_done, len(todo))
    if not todo:
        return summary

    if core is None:
        core = GenerationCore.load(cfg, device)
    dataset = MelGenTestDataset(cfg, clips=todo)
    index = {c: i for i, c in enumerate(todo)}
    generator = torch.Generator(device=device).manual_seed(int(gen["seed"]) + rank)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"generating (rank {rank})" if world_size > 1 else "generating",
               unit="clip", dynamic_ncols=True, disable=not bool(gen.get("progress", True)), position=rank)
    for batch_ids in length_batches(lengths, int(gen["batch_size"])):
        items = []
        for clip in batch_ids:
            try:
                items.append(dataset[index[clip]])
            except LipVoicerError as e:
                log.error("%s: %s; clip skipped", clip, e)
                summary.failed.append(clip)
                bar.update(1)
        if not items:
            continue
        batch = collate_clips(items)
        ids = batch["ids"]
        guide_texts = [lip_texts.get(c) if texts_from != GROUND_TRUTH else batch["texts"][i]
                       for i, c in enumerate(ids)]
        mels, audio = core.generate(batch["mouthroi"].to(device), batch["face_image"].to(device), batch["lengths"],
                                    guide_texts, ids=ids, generator=generator)
        audio = audio.cpu()
        for i, clip in enumerate(ids):
            n = int(batch["lengths"][i])
            out = ClipOutputs(out_root, video_id(clip), with_video)
            try:
                write_clip(out, mel=mels[i, :, :n].cpu(), gt_mel=denormalise_mel(batch["mel"][i, :, :n]),
                           audio=audio[i, :n * (audio.shape[-1] // mels.shape[-1])].numpy(), sr=sr,
                           gt_text=batch["texts"][i], lipread_text=guide_texts[i],
                           video=ClipPaths(cfg["dataset"], clip).video)
            except LipVoicerError as e:
                log.error("%s: %s; clip skipped", clip, e)
                summary.failed.append(clip)
            else:
                summary.generated.append(clip)
                summary.audio_seconds += n / (per_frame * float(cfg["video"]["fps"]))
            bar.update(1)
    bar.close()
    summary.seconds = time.perf_counter() - start
    log.info(summary.line())
    return summary

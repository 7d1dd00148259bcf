"""Generate speech for every clip of a test split (the work behind inference_full_test_split.py).

Clips of similar length are sampled together through the batched guided sampler. Under
torchrun each rank takes a disjoint shard (every world_size-th clip); the union of the
shards is the whole split. A clip is finished when all its files exist; each file is
written under a temporary name and renamed, so re-running (after an interruption, or on
a larger split) skips finished clips and redoes only the rest.

Reproducibility: each clip's noise (x_T and every step's noise) comes from its own
generator, seeded from generate.seed and the clip's id (pipelines/generation.py: clip_seed,
a SHA-256 hash), so a clip gets the same noise whatever the interruption, sharding, batch
size or process. The result is identical for the same batch composition (and the same
device and library versions); clips batched with clips of other lengths are zero-padded
to the longest, and the model's convolutions see that padding, which changes a shorter
clip's mel slightly near its end.

Concurrent runs on one save_dir share the work: a clip is generated only by the process
holding its lock file (pipelines/outputs.py: ClipClaims); clips another live process holds
are waited for, and a stale lock (its pid dead on this host, or not refreshed for
generate.lock_stale_minutes) is taken over.

A clip that cannot be generated (mouth crops missing or unreadable, no lip-read text, a
file of the clip unreadable, its outputs not writable) is logged and skipped; the summary
lists done / skipped / failed clips with the first failures' reasons, and split_failure()
gives the one-line error (non-zero exit) when any clip of the split, on any rank, was not
generated.
"""
from __future__ import annotations

import logging
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import soundfile as sf

from dataloaders.audio import denormalise_mel
from dataloaders.batching import collate_clips, length_batches
from dataloaders.layout import ClipPaths, list_split_clips
from dataloaders.lrs_dataset import MelGenTestDataset
from dataloaders.text import normalize_text
from dataloaders.video_io.mux import mux_audio
from pipelines.generation import GenerationCore, clip_generator
from pipelines.outputs import ClipClaims, ClipOutputs, run_dir
from pipelines.settings import check_generation_settings
from utils.distributed import shard
from utils.distributed import resolve_device
from utils.files import atomic_write, check_writable
from utils.plotting import save_mel_png
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

GROUND_TRUTH = "ground_truth"  # generate.lipread_text_dir=ground_truth guides with the true transcripts
POLL_SECONDS = 5.0             # how often clips another process holds are looked at again
SHOW_FAILURES = 5              # failures listed with their reasons in the summary


@dataclass
class SplitSummary:
    rank: int = 0
    world_size: int = 1
    assigned: int = 0
    generated: list[str] = field(default_factory=list)
    already_done: int = 0
    done_elsewhere: list[str] = field(default_factory=list)   # finished by another process while this one ran
    no_text: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)          # not finished at the end for any other reason
    reasons: dict[str, str] = field(default_factory=dict)     # clip -> why it was not generated
    seconds: float = 0.0
    audio_seconds: float = 0.0
    run_dir: str = ""

    def fail(self, clip: str, reason: str) -> None:
        reason = " ".join(str(reason).split())
        log.error("%s: %s; clip skipped", clip, reason)
        self.failed.append(clip)
        self.reasons[clip] = reason

    def problems(self) -> list[str]:
        """Clips of this shard that were not generated (no lip-read text, failed, missing)."""
        return [*self.no_text, *self.failed, *self.missing]

    def line(self) -> str:
        rate = len(self.generated) / self.seconds if self.seconds > 0 else 0.0
        return (f"rank {self.rank}/{self.world_size}: {len(self.generated)} generated, {self.already_done} already done, "
                f"{len(self.done_elsewhere)} done by another process, "
                f"{len(self.no_text)} without lip-read text, {len(self.failed)} failed, {len(self.missing)} missing "
                f"of {self.assigned} ({rate:.3f} clips/s, {self.audio_seconds:.1f} s of audio in {self.seconds:.1f} s)")

    def report(self, limit: int = SHOW_FAILURES) -> str:
        """line() and, indented, the first `limit` clips not generated with their reasons."""
        bad = self.problems()
        lines = [self.line()] + [f"  not generated: {clip}: {self.reasons.get(clip, '?')}" for clip in bad[:limit]]
        if len(bad) > limit:
            lines.append(f"  ... and {len(bad) - limit} more (see the log)")
        return "\n".join(lines)


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
        return count_mouth_frames(path)
    except LipVoicerError:
        return None


def count_mouth_frames(path: Path) -> int:
    """Frames in a mouth-crop .npz; LipVoicerError `<path>: mouth crops not found | unreadable (<why>)`."""
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: mouth crops not found")
    if not zipfile.is_zipfile(path):
        raise LipVoicerError(f"{path}: mouth crops unreadable (not an .npz archive)")
    try:
        with np.load(path) as z:
            arr = z["data"]
            return int(arr.shape[0])
    except Exception as e:  # noqa: BLE001 - any decoding problem: the clip is reported as failed
        raise LipVoicerError(f"{path}: mouth crops unreadable ({type(e).__name__}: {e})") from e


def _reason(e: BaseException) -> str:
    return str(e) if isinstance(e, LipVoicerError) else f"{type(e).__name__}: {e}"


def lock_stale_seconds(gen_cfg) -> float:
    """generate.lock_stale_minutes in seconds (a positive number)."""
    raw = gen_cfg.get("lock_stale_minutes", 10)
    try:
        minutes = float(raw)
        ok = minutes > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LipVoicerError(f"generate.lock_stale_minutes={raw}: must be a positive number of minutes")
    return 60.0 * minutes


def wait_for_others(seconds: float) -> None:
    """Pause while other processes generate clips this one waits for (a function, so tests can replace it)."""
    time.sleep(seconds)


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
    """Temporary files an interrupted run left for this clip (`.<name>.*tmp*`, and a stale lock moved
    aside, `.<name>.lock.stale.*`); call it only while holding the clip's lock, so that no other
    process is writing them."""
    prefix = f".{out.base.name}."
    for p in out.base.parent.glob(f"{prefix}*"):
        rest = p.name[len(prefix):]
        if "tmp" in rest or rest.startswith("lock.stale."):
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the job
def generate_split(cfg, rank: int = 0, world_size: int = 1, device: torch.device | None = None,
                   core: GenerationCore | None = None) -> SplitSummary:
    """Generate this rank's shard of cfg.generate.split; returns what happened (split_failure(summary)
    says whether anything is missing)."""
    gen = cfg["generate"]
    check_generation_settings(cfg)  # every setting, before any video is read or model loaded
    device = device or resolve_device(gen["device"])
    texts_from = text_source(gen)
    stale_seconds = lock_stale_seconds(gen)
    out_root = run_dir(gen["save_dir"], cfg["dataset"]["name"], gen["w_video"], gen["w_asr"], gen["asr_start"])
    check_writable(out_root)
    with_video = bool(gen.get("save_video", False))
    sr = int(cfg["audio"]["sampling_rate"])
    per_frame = int(cfg["video"]["mel_frames_per_video_frame"])
    seed = int(gen["seed"])

    clips = list_split_clips(cfg["dataset"], str(gen["split"]))
    if gen.get("n_samples") is not None:
        clips = clips[:int(gen["n_samples"])]
    mine = shard(clips, rank, world_size)
    summary = SplitSummary(rank=rank, world_size=world_size, assigned=len(mine), run_dir=str(out_root))
    outputs = {clip: ClipOutputs(out_root, video_id(clip), with_video) for clip in mine}

    todo, lengths, lip_texts = [], {}, {}
    for clip in mine:
        out = outputs[clip]
        if out.is_done():
            summary.already_done += 1
            continue
        if texts_from not in (None, GROUND_TRUTH):
            text = read_lipread_text(Path(texts_from), clip)
            if text is None:
                reason = f"{Path(texts_from) / video_id(clip)}.txt: no lip-read text"
                log.warning("%s: %s; clip skipped", clip, reason)
                summary.no_text.append(clip)
                summary.reasons[clip] = reason
                continue
            lip_texts[clip] = text
        try:
            lengths[clip] = count_mouth_frames(ClipPaths(cfg["dataset"], clip).mouth)
        except LipVoicerError as e:
            summary.fail(clip, str(e))
            continue
        todo.append(clip)
    log.info("rank %d: %d clips assigned, %d already done, %d to generate", rank, len(mine),
             summary.already_done, len(todo))

    if todo:
        start = time.perf_counter()
        dataset = MelGenTestDataset(cfg, clips=todo)
        index = {c: i for i, c in enumerate(todo)}
        bar = tqdm(total=len(todo), desc=f"generating (rank {rank})" if world_size > 1 else "generating",
                   unit="clip", dynamic_ncols=True, disable=not bool(gen.get("progress", True)), position=rank)

        def generate_batch(batch_ids: list[str]) -> None:
            nonlocal core
            items = []
            for clip in batch_ids:
                try:
                    items.append(dataset[index[clip]])
                except Exception as e:  # noqa: BLE001 - one bad clip is reported, never stops the job
                    summary.fail(clip, _reason(e))
                    bar.update(1)
            if not items:
                return
            if core is None:
                core = GenerationCore.load(cfg, device)
            batch = collate_clips(items)
            ids = batch["ids"]
            guide_texts = [lip_texts.get(c) if texts_from != GROUND_TRUTH else batch["texts"][i]
                           for i, c in enumerate(ids)]
            try:
                mels, audio = core.generate(batch["mouthroi"].to(device), batch["face_image"].to(device),
                                            batch["lengths"], guide_texts, ids=ids,
                                            generators=[clip_generator(seed, video_id(c), device) for c in ids])
            except LipVoicerError as e:
                for clip in ids:
                    summary.fail(clip, str(e))
                    bar.update(1)
                return
            audio = audio.cpu()
            for i, clip in enumerate(ids):
                n = int(batch["lengths"][i])
                try:
                    write_clip(outputs[clip], mel=mels[i, :, :n].cpu(), gt_mel=denormalise_mel(batch["mel"][i, :, :n]),
                               audio=audio[i, :n * (audio.shape[-1] // mels.shape[-1])].numpy(), sr=sr,
                               gt_text=batch["texts"][i], lipread_text=guide_texts[i],
                               video=ClipPaths(cfg["dataset"], clip).video)
                except LipVoicerError as e:
                    summary.fail(clip, str(e))
                else:
                    summary.generated.append(clip)
                    summary.audio_seconds += n / (per_frame * float(cfg["video"]["fps"]))
                bar.update(1)

        pending = todo
        with ClipClaims(stale_seconds) as claims:
            while pending:
                busy = []
                for batch_ids in length_batches({c: lengths[c] for c in pending}, int(gen["batch_size"])):
                    claimed = []
                    try:
                        for clip in batch_ids:
                            out = outputs[clip]
                            if out.is_done():
                                summary.done_elsewhere.append(clip)
                                bar.update(1)
                            elif not claims.claim(out):
                                busy.append(clip)
                            elif out.is_done():     # finished by another process just before we claimed it
                                claims.release(out)
                                summary.done_elsewhere.append(clip)
                                bar.update(1)
                            else:
                                claimed.append(clip)
                                remove_stale_temporaries(out)
                        if claimed:
                            generate_batch(claimed)
                    finally:
                        for clip in claimed:
                            claims.release(outputs[clip])
                if busy:
                    log.info("rank %d: %d clip(s) are being generated by another process (%s: %s); waiting",
                             rank, len(busy), busy[0], claims.owner(outputs[busy[0]]))
                    wait_for_others(POLL_SECONDS)
                pending = busy
        bar.close()
        summary.seconds = time.perf_counter() - start

    accounted = set(summary.problems())
    for clip in mine:
        if clip not in accounted and not outputs[clip].is_done():
            summary.missing.append(clip)
            summary.reasons[clip] = f"{outputs[clip].base}: outputs incomplete at the end of the run"
    log.info(summary.line())
    return summary


def split_failure(summary: SplitSummary, device: torch.device | None = None) -> str | None:
    """The one-line error when any clip of the split was not generated (None when all were).

    Under torchrun every rank must call it (the counts of all ranks are summed), so every rank
    returns the same verdict and the job's exit status is non-zero when any rank had failures."""
    bad = summary.problems()
    total, assigned = len(bad), summary.assigned
    if summary.world_size > 1 and dist.is_available() and dist.is_initialized():
        counts = torch.tensor([total, assigned], dtype=torch.long, device=device)
        dist.all_reduce(counts)
        total, assigned = int(counts[0]), int(counts[1])
    if total == 0:
        return None
    where = f" (all {summary.world_size} ranks)" if summary.world_size > 1 else ""
    if bad:
        first = f"first: {bad[0]}: {summary.reasons.get(bad[0], '?')}"
    else:
        first = "see the other ranks' summaries"
    return (f"{summary.run_dir}: {total} of {assigned} clips not generated{where}; {first} "
            "(re-running the same command retries them)")

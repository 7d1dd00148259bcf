"""Scoring generated speech against the ground truth (evaluate.py; docs/evaluate.md).

A folder of generated `<video_id>.wav` files (sub-folders allowed) is matched with the
ground-truth `<video_id>.wav` and transcript of each clip. Per clip:

- WER / CER (jiwer) between the normalised ground-truth text and the text a recogniser
  reads from the generated wav. A recogniser is any callable `wavs -> texts` (a list of
  1-D float arrays at the config's sample rate in, one string per wav out);
  `build_recognizer` makes the default one, the project's ASR classifier at diffusion
  step 0 on the normalised log-mel with greedy or beam-search CTC decoding.
- STOI and ESTOI (pystoi), wide-band PESQ (NaN, with a warning, where PESQ cannot score),
  log-mel L1 and mel cepstral distortion, lengths aligned by cropping to the shorter
  (pipelines/metrics.py).

Coverage: the clips of the split (those inference_full_test_split.py generates for the same
settings: the split's videos, the first generate.n_samples of them when set; without videos,
the split's ground-truth wavs) that have a generated wav and ground truth, over all of them.
Below evaluate.min_coverage (default 1.0: every clip) nothing is scored and the run is a
one-line error; evaluate.min_coverage=0 scores whatever is there (with a warning).

Outputs: `metrics_per_clip.csv`, `metrics_summary.json` (means over clips, corpus-level
WER / CER over all words, coverage, settings) and `metrics.md` (a Markdown table), each
written under a temporary name and renamed.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from tqdm import tqdm

from dataloaders.audio import audio_params, log_mel, normalise_mel, peak_normalise, read_wav
from dataloaders.text import normalize_text, transcript_from_lrs_text
from dataloaders.tokenizer import BPETokenizer
from models.asr.decoding import build_beam_decoder, greedy_texts
from models.builders import asr_checkpoint_path, load_asr
from dataloaders.layout import list_split_clips
from pipelines.outputs import run_dir
from utils.distributed import resolve_device
from utils.errors import LipVoicerError
from utils.files import atomic_text
from pipelines.clip_sync import KEYS as LSE_KEYS, build_clip_sync
from pipelines.hf_asr import PREFIX as HF_PREFIX, build_hf_recognizer
from pipelines.hf_speaker import build_speaker_similarity
from pipelines.intervals import mean_interval, ratio_interval
from pipelines.metrics import (DNSMOS_KEYS, char_errors, dnsmos_scores, log_mel_l1, mel_cepstral_distortion,
                               pesq_wb, stoi_scores, word_errors)

log = logging.getLogger(__name__)

# A recogniser: waveforms (1-D float arrays) -> one recognised text per waveform.
Recognizer = Callable[[Sequence[np.ndarray]], list]

METRICS = ("wer", "cer", "stoi", "estoi", "pesq", "log_mel_l1", "mcd")
# the ground truth's own scores (evaluate.score_ground_truth; the ceiling row of the paper table)
GT_DNSMOS_KEYS = tuple(f"gt_{k}" for k in DNSMOS_KEYS)
GT_KEYS = ("gt_wer", "gt_cer", *GT_DNSMOS_KEYS, "gt_stoi_net")
# per-clip values whose means get a 95 % interval in the summary (`intervals`)
INTERVAL_KEYS = (*METRICS, *DNSMOS_KEYS, "lse_c", "lse_d", "gt_lse_c", "gt_lse_d", "speaker_sim", "stoi_net", *GT_KEYS)
TEXT_COLUMNS = ("video_id", "reference", "hypothesis", "gt_hypothesis")
CSV_COLUMNS = ("video_id", *METRICS, *DNSMOS_KEYS, *LSE_KEYS, "speaker_sim", "stoi_net", *GT_KEYS, "ref_words",
               "word_errors",
               "ref_chars", "char_errors", "gt_word_errors", "gt_char_errors", "gen_seconds", "gt_seconds",
               "reference", "hypothesis", "gt_hypothesis")
# Optional metrics by name: none; the model-based ones have their own keys (evaluate.dnsmos, evaluate.lse for
# LSE-C / LSE-D, evaluate.speaker_model), so any name in evaluate.extra_metrics is an error.
EXTRA_METRICS: dict[str, Callable] = {}
RECOGNIZERS = ("asr", "none")
DECODERS = ("greedy", "beam")
OUTPUT_FILES = ("metrics_per_clip.csv", "metrics_summary.json", "metrics.md")


# ----------------------------------------------------------------------------- finding the clips
@dataclass
class Clip:
    video_id: str
    wav: Path                     # generated
    gt_wav: Path | None = None
    reference: str | None = None  # normalised ground-truth text (None = unknown)


def find_generated_wavs(generated_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """(video_id, path) of every generated wav below the folder, sorted by id.

    video_id is the path relative to the folder without `.wav`; `*_gt.wav` files and
    anything hidden (a name starting with '.', e.g. a temporary file) are ignored.
    """
    root = Path(generated_dir)
    if not root.is_dir():
        raise LipVoicerError(f"{root}: generated audio directory not found (evaluate.generated_dir)")
    found = []
    for p in root.rglob("*.wav"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or p.name.endswith("_gt.wav") or not p.is_file():
            continue
        found.append((rel.with_suffix("").as_posix(), p))
    if not found:
        raise LipVoicerError(f"{root}: no generated .wav files found (evaluate.generated_dir)")
    return sorted(found)


def ground_truth_dirs(cfg, kind: str) -> list[Path]:
    """Folders searched for `<video_id>.wav` (kind 'audio'), `<video_id>.txt` (kind 'text') or the video
    (kind 'video', for LSE-C / LSE-D), in order.

    An explicit evaluate.gt_audios_dir / gt_text_dir / gt_videos_dir is the only folder; otherwise each
    source folder of the split under dataset.audios_dir (audio) or dataset.videos_dir (text, video), then
    that folder itself.
    """
    ev = cfg["evaluate"]
    explicit = {"audio": ev.get("gt_audios_dir"), "text": ev.get("gt_text_dir"),
                "video": ev.get("gt_videos_dir")}[kind]
    if explicit:
        return [Path(str(explicit))]
    ds = cfg["dataset"]
    base = Path(str(ds["audios_dir"] if kind == "audio" else ds["videos_dir"]))
    split = ev.get("split")
    dirs = []
    if split:
        splits = ds["splits"]
        if split not in splits:
            raise LipVoicerError(f"dataset '{ds['name']}' has no split '{split}' (evaluate.split; has: "
                                 f"{', '.join(map(str, splits))})")
        dirs = [base / str(src["dir"]) for src in splits[split]]
    dirs.append(base)
    return list(dict.fromkeys(dirs))


def read_reference_text(path: str | os.PathLike) -> str | None:
    """Normalised ground-truth text of a `.txt` file: an LRS transcript (`Text:  WORDS`) or a
    generated clip's text file (a line `gt: <text>`); None when it holds neither."""
    content = Path(path).read_text(encoding="utf-8", errors="replace")
    for line in content.splitlines():
        if line.startswith("gt:"):
            return normalize_text(line[len("gt:"):])
    if content.startswith("Text:"):
        return transcript_from_lrs_text(content)
    return None


def _first_file(dirs: Sequence[Path], video_id: str, suffix: str) -> Path | None:
    for d in dirs:
        p = d / f"{video_id}{suffix}"
        if p.is_file():
            return p
    return None


def id_candidates(rel_id: str) -> list[str]:
    """Ground-truth ids a generated wav's relative path may stand for, in order: the path itself, then
    with leading folders dropped (`LRS3/test/spk/00001` -> ... -> `spk/00001` -> `00001`), then a flat
    name read as `<speaker>_<clip>` (`spk_00001` -> `spk/00001`)."""
    parts = rel_id.split("/")
    out = ["/".join(parts[i:]) for i in range(len(parts))]
    stem = parts[-1]
    out += [stem[:i] + "/" + stem[i + 1:] for i in range(len(stem) - 1, 0, -1) if stem[i] in "_-"]
    return list(dict.fromkeys(out))


def match_ground_truth(cfg, generated: Sequence[tuple[str, Path]]) -> tuple[list[Clip], list[str]]:
    """Clips with their ground truth, and the ids skipped because no ground-truth wav matches.

    A generated wav matches by its relative path (the project's layout) or, failing that, by id
    (id_candidates: any other folder layout, e.g. the published LipVoicer audio); the clip then takes
    the ground truth's id. A second wav matching an already matched id is skipped with a warning."""
    audio_dirs, text_dirs = ground_truth_dirs(cfg, "audio"), ground_truth_dirs(cfg, "text")
    clips, skipped, seen, by_id = [], [], set(), 0
    for rel_id, wav in generated:
        gt_wav, video_id = None, rel_id
        for cand in id_candidates(rel_id):
            gt_wav = _first_file(audio_dirs, cand, ".wav")
            if gt_wav is not None:
                video_id = cand
                break
        if gt_wav is None:
            log.warning("%s: no ground-truth audio (looked for %s); clip skipped", rel_id,
                        ", ".join(str(d / f"{rel_id}.wav") for d in audio_dirs))
            skipped.append(rel_id)
            continue
        if video_id in seen:
            log.warning("%s: matches ground-truth clip %s, already matched by another wav; skipped", rel_id, video_id)
            skipped.append(rel_id)
            continue
        seen.add(video_id)
        by_id += video_id != rel_id
        reference = None
        txt = _first_file(text_dirs, video_id, ".txt")
        if txt is not None:
            reference = read_reference_text(txt)
        beside = wav.with_suffix(".txt")
        if reference is None and beside.is_file():
            reference = read_reference_text(beside)
        clips.append(Clip(video_id, wav, gt_wav, reference))
    log.info("matched %d of %d generated wavs with the ground truth (%d by relative path, %d by id); %d unmatched",
             len(clips), len(generated), len(clips) - by_id, by_id, len(skipped))
    clips.sort(key=lambda c: c.video_id)
    return clips, skipped


# ----------------------------------------------------------------------------- coverage
def _wav_ids(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.wav")
                  if not p.name.endswith("_gt.wav")
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def expected_clips(cfg) -> tuple[list[str], str | None]:
    """(video ids, where the list comes from) of the clips a complete run scores: the clips of
    evaluate.split as inference_full_test_split.py lists them (videos or file lists; the first
    generate.n_samples when set), or, when the split has no videos here, the ground-truth wavs of
    the split's folders (or of evaluate.gt_audios_dir). ([], None) when neither exists."""
    ev, ds = cfg["evaluate"], cfg["dataset"]
    split = ev.get("split")
    n = cfg["generate"].get("n_samples")
    ids, source = [], None
    if split and not ev.get("gt_audios_dir"):
        try:
            ids = [c.split("/", 1)[1] if "/" in c else c for c in list_split_clips(ds, str(split))]
            source = f"split '{split}' of {ds['name']} (its videos)"
        except LipVoicerError:
            ids = []
    if not ids:
        dirs = ground_truth_dirs(cfg, "audio")
        search = dirs if len(dirs) == 1 else ([d for d in dirs[:-1] if d.is_dir()] or dirs[-1:])
        ids = sorted({i for d in search for i in _wav_ids(d)})
        source = f"ground-truth wavs in {', '.join(map(str, search))}" if ids else None
    if n is not None:
        ids = ids[:int(n)]
    return ids, source


def min_coverage(ev) -> float:
    raw = ev.get("min_coverage", 1.0)
    try:
        value = float(raw)
        ok = 0.0 <= value <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LipVoicerError(f"evaluate.min_coverage={raw}: must be a fraction between 0 and 1 "
                             "(1 = every clip of the split, 0 = score whatever is there)")
    return value


def check_coverage(cfg, gen_dir: Path, clips: Sequence["Clip"]) -> dict:
    """Coverage of the split by the clips that can be scored; LipVoicerError below evaluate.min_coverage."""
    need = min_coverage(cfg["evaluate"])
    ids, source = expected_clips(cfg)
    scored = {c.video_id for c in clips}
    if not ids:
        if need > 0:
            raise LipVoicerError(f"{gen_dir}: cannot tell which clips the split has (no videos of split "
                                 f"'{cfg['evaluate'].get('split')}' and no ground-truth wavs found); set "
                                 "evaluate.min_coverage=0 to score the clips that are there")
        return {"scored": len(scored), "expected": None, "fraction": None, "n_missing": None, "missing": [],
                "source": None, "min_coverage": need}
    missing = [i for i in ids if i not in scored]
    fraction = (len(ids) - len(missing)) / len(ids)
    cov = {"scored": len(ids) - len(missing), "expected": len(ids), "fraction": fraction,
           "n_missing": len(missing), "missing": missing[:50], "source": source, "min_coverage": need}
    if fraction < need:
        raise LipVoicerError(f"{gen_dir}: only {cov['scored']} of {len(ids)} clips of the {source} can be scored "
                             f"({100 * fraction:.1f} %, below evaluate.min_coverage={need:g}); missing e.g. "
                             f"{', '.join(missing[:3])}; generate the rest (inference_full_test_split.py) or "
                             "score what is there with evaluate.min_coverage=0")
    if missing:
        log.warning("only %d of %d clips of the %s are scored (%.1f %%); missing e.g. %s", cov["scored"], len(ids),
                    source, 100 * fraction, ", ".join(missing[:3]))
    return cov


def coverage_text(cov: dict | None) -> str:
    if not cov or cov.get("expected") is None:
        return "n/a"
    return f"{cov['scored']} of {cov['expected']} clips ({100 * cov['fraction']:.1f} %)"


# ----------------------------------------------------------------------------- the recogniser
class ASRRecognizer:
    """The project's ASR classifier as a recogniser: wavs -> texts.

    Each wav is turned into a log-mel exactly as in training (peak-normalised, log-mel,
    normalised to the diffusion range), clips are batched (sorted by length, zero-padded as
    in training) and read at diffusion step 0, then decoded greedily or by a beam decoder
    (an object with `decode(logits, lengths) -> texts`, models/asr/decoding.py). The model's
    convolutions are not masked, so in a padded batch the end of a shorter clip can read
    slightly differently than alone; batch_size=1 gives each clip's own result.
    """

    name = "asr"

    def __init__(self, model: torch.nn.Module, tokenizer, audio_cfg=None, device: str | torch.device = "cpu",
                 decoder=None, batch_size: int = 1):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.audio = audio_params(audio_cfg)
        self.device = torch.device(device)
        self.decoder = decoder
        self.batch_size = max(1, int(batch_size))

    def mel(self, wav: np.ndarray) -> torch.Tensor:
        """(n_mels, frames) normalised log-mel of a waveform."""
        x = np.ascontiguousarray(peak_normalise(np.asarray(wav, dtype=np.float32), self.audio["peak_scale"]))
        return normalise_mel(log_mel(torch.from_numpy(x), self.audio), self.audio["clamp_min"])

    @torch.inference_mode()
    def _batch(self, mels: list[torch.Tensor]) -> list[str]:
        lengths = torch.tensor([m.shape[1] for m in mels], dtype=torch.long)
        x = torch.zeros(len(mels), mels[0].shape[0], int(lengths.max()))
        for i, m in enumerate(mels):
            x[i, :, :m.shape[1]] = m
        steps = torch.zeros(len(mels), 1, device=self.device)
        logits, out_lengths = self.model(x.to(self.device), lengths.to(self.device), steps)
        logits, out_lengths = logits.float().cpu(), out_lengths.cpu()
        if self.decoder is not None:
            return list(self.decoder.decode(logits, out_lengths))
        return greedy_texts(logits, out_lengths, self.tokenizer)

    def __call__(self, wavs: Sequence[np.ndarray]) -> list[str]:
        return self.recognize_mels([self.mel(w) for w in wavs])

    def recognize_mels(self, mels: Sequence[torch.Tensor]) -> list[str]:
        """Texts of normalised log-mels (n_mels, frames), e.g. generated mels before the vocoder."""
        order = sorted(range(len(mels)), key=lambda i: mels[i].shape[1])
        texts: list[str] = [""] * len(mels)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            for i, t in zip(idx, self._batch([mels[i] for i in idx])):
                texts[i] = t
        return texts


def asr_checkpoint(cfg) -> Path:
    """evaluate.asr_ckpt, or the published fine-tune of dataset.name (the one generation used)."""
    return asr_checkpoint_path(cfg, ("evaluate", "asr_ckpt"))


def build_recognizer(cfg, device: str | torch.device | None = None) -> Recognizer | None:
    """The recogniser evaluate.recognizer asks for (None for `none`)."""
    ev = cfg["evaluate"]
    kind = str(ev.get("recognizer") or "none").lower()
    if str(ev.get("recognizer") or "").startswith(HF_PREFIX):
        device = torch.device(device) if device is not None else resolve_device(ev.get("device", "auto"))
        return build_hf_recognizer(str(ev["recognizer"]), int(audio_params(cfg["audio"])["sampling_rate"]), device,
                                   int(ev.get("batch_size", 1)))
    if kind not in RECOGNIZERS:
        raise LipVoicerError(f"evaluate.recognizer: unknown recogniser '{kind}' (use {', '.join(RECOGNIZERS)} or "
                             "hf:<Hugging Face model id or folder>, e.g. hf:openai/whisper-small)")
    if kind == "none":
        return None
    decoder_kind = str(ev.get("decoder") or "greedy").lower()
    if decoder_kind not in DECODERS:
        raise LipVoicerError(f"evaluate.decoder: unknown decoder '{decoder_kind}' (use {' or '.join(DECODERS)})")
    device = torch.device(device) if device is not None else resolve_device(ev.get("device", "auto"))
    tok_path = Path(str(ev["tokenizer"]))
    if not tok_path.is_file():
        raise LipVoicerError(f"{tok_path}: tokenizer not found (evaluate.tokenizer); fetch it with: "
                             "python download_checkpoints.py --only tokenizer_bpe256")
    tokenizer = BPETokenizer(tok_path).check_vocab_size(cfg["asr"]["vocab_size"])
    model = load_asr(asr_checkpoint(cfg), cfg, device)
    decoder = None
    if decoder_kind == "beam":
        decoder = build_beam_decoder(cfg, tokenizer, use_lm=bool(ev.get("beam_lm", True)))
    return ASRRecognizer(model, tokenizer, cfg["audio"], device, decoder, int(ev.get("batch_size", 1)))


def generated_mel(wav_path: Path, audio: dict) -> torch.Tensor:
    """The generated log-mel saved beside a generated wav (`<id>.wav.spec`), normalised for the ASR."""
    spec = Path(str(wav_path) + ".spec")
    if not spec.is_file():
        raise LipVoicerError(f"{spec}: generated mel not found (evaluate.recognize_from=mel reads the .wav.spec "
                             "files inference_full_test_split.py writes)")
    return normalise_mel(torch.load(spec, map_location="cpu").float(), audio["clamp_min"])


# ----------------------------------------------------------------------------- metrics
def text_errors(reference: str, hypothesis: str) -> dict:
    """Word and character edits of a (normalised) hypothesis against its (normalised) reference."""
    we, nw = word_errors(reference, hypothesis)
    ce, nc = char_errors(reference, hypothesis)
    return {"word_errors": we, "ref_words": nw, "char_errors": ce, "ref_chars": nc,
            "wer": we / nw if nw else math.nan, "cer": ce / nc if nc else math.nan}


def clip_metrics(generated: np.ndarray, reference_wav: np.ndarray, reference_text: str | None = None,
                 hypothesis: str | None = None, audio_cfg=None, mcd_coeffs: int = 13, dnsmos: bool = False,
                 normalizer: Callable[[str], str] | None = None) -> dict:
    """All metrics of one clip; WER / CER are NaN without a reference text or hypothesis, DNSMOS
    (of the generated wav alone: no reference) NaN unless `dnsmos`. normalizer: the text normaliser applied
    to reference and hypothesis before WER / CER (the recogniser's own, e.g. Whisper's; default the
    project's, dataloaders/text.py). The other keys of CSV_COLUMNS (LSE, speaker similarity, the ground
    truth's own scores) are NaN here; run_evaluation fills them."""
    p = audio_params(audio_cfg)
    sr = int(p["sampling_rate"])
    nan = math.nan
    norm = normalizer or normalize_text
    row = {m: nan for m in (*METRICS, *DNSMOS_KEYS, *LSE_KEYS, "speaker_sim", "stoi_net", *GT_KEYS)}
    row.update(ref_words=0, word_errors=0, ref_chars=0, char_errors=0, gt_word_errors=0, gt_char_errors=0,
               gen_seconds=len(generated) / sr, gt_seconds=len(reference_wav) / sr,
               reference="" if reference_text is None else (norm(reference_text) if normalizer else reference_text),
               hypothesis="" if hypothesis is None else norm(hypothesis), gt_hypothesis="")
    if reference_text is not None and hypothesis is not None:
        row.update(text_errors(row["reference"], row["hypothesis"]))
    row["stoi"], row["estoi"] = stoi_scores(reference_wav, generated, sr)
    row["pesq"] = pesq_wb(reference_wav, generated, sr)
    row["log_mel_l1"] = log_mel_l1(reference_wav, generated, p)
    row["mcd"] = mel_cepstral_distortion(reference_wav, generated, p, n_coeffs=int(mcd_coeffs))
    if dnsmos:
        row.update(dnsmos_scores(generated, sr))
    return row


def ground_truth_metrics(row: dict, reference_wav: np.ndarray, hypothesis: str | None, sr: int, dnsmos: bool,
                         normalizer: Callable[[str], str] | None = None) -> None:
    """The ground truth's own WER / CER (the recogniser on the ground-truth wav) and DNSMOS into `row`."""
    if hypothesis is not None:
        row["gt_hypothesis"] = (normalizer or normalize_text)(hypothesis)
        if row["reference"]:
            e = text_errors(row["reference"], row["gt_hypothesis"])
            row.update(gt_wer=e["wer"], gt_cer=e["cer"], gt_word_errors=e["word_errors"],
                       gt_char_errors=e["char_errors"])
    if dnsmos:
        row.update({f"gt_{k}": v for k, v in dnsmos_scores(reference_wav, sr).items()})


def _finite_mean(values) -> float | None:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return float(v.mean()) if len(v) else None


def _corpus(rows: Sequence[dict], prefix: str = "") -> tuple[float | None, float | None, list, list]:
    """(corpus WER, corpus CER, per-clip word errors, per-clip reference words) over the clips with a WER."""
    scored = [r for r in rows if math.isfinite(r.get(f"{prefix}wer", math.nan))]
    words = sum(r["ref_words"] for r in scored)
    with_cer = [r for r in scored if math.isfinite(r[f"{prefix}cer"])]
    chars = sum(r["ref_chars"] for r in with_cer)
    wer = sum(r[f"{prefix}word_errors"] for r in scored) / words if words else None
    cer = sum(r[f"{prefix}char_errors"] for r in with_cer) / chars if chars else None
    return wer, cer, [r[f"{prefix}word_errors"] for r in scored], [r["ref_words"] for r in scored]


def _block(rows: Sequence[dict], keys: Sequence[str], n_boot: int) -> dict:
    """{"means", "n_valid", "intervals"} of per-clip values (NaNs left out; None / [None, None] when missing)."""
    def values(k):
        return [r.get(k, math.nan) for r in rows]
    return {"means": {k: _finite_mean(values(k)) for k in keys},
            "n_valid": {k: sum(1 for v in values(k) if math.isfinite(v)) for k in keys},
            "intervals": {k: [None if math.isnan(x) else x for x in mean_interval(values(k), n_boot)] for k in keys}}


def summarise(rows: Sequence[dict], settings: dict | None = None, coverage: dict | None = None,
              n_boot: int = 2000) -> dict:
    """Means over clips (NaNs left out; None when no clip has a value), the number of clips
    with a value per metric, and the corpus-level WER / CER over all words / characters
    (total edits / total reference length: what jiwer gives on the lists of texts) of the
    clips that have a reference text and a hypothesis; `coverage` (check_coverage) as given.
    `intervals`: 95 % bootstrap intervals (n_boot resamples of clips, pipelines/intervals.py) of every
    mean and of the corpus WER; `sync` (LSE-C / LSE-D of the generated audio and of the ground truth),
    `speaker_similarity` and `ground_truth` (its own WER / CER and DNSMOS) with their means, counts and
    intervals."""
    wer, cer, errors, words_per_clip = _corpus(rows)
    gt_wer, gt_cer, gt_errors, gt_words = _corpus(rows, "gt_")
    words = sum(words_per_clip)
    intervals = {k: [None if math.isnan(x) else x for x in mean_interval([r.get(k, math.nan) for r in rows], n_boot)]
                 for k in INTERVAL_KEYS}
    intervals["corpus_wer"] = [None if math.isnan(x) else x for x in ratio_interval(errors, words_per_clip, n_boot)]
    intervals["gt_corpus_wer"] = [None if math.isnan(x) else x for x in ratio_interval(gt_errors, gt_words, n_boot)]
    return {
        "n_clips": len(rows),
        "coverage": dict(coverage) if coverage is not None else None,
        "corpus_wer": wer,
        "corpus_cer": cer,
        "n_words": int(words),
        "means": {m: _finite_mean(r[m] for r in rows) for m in METRICS},
        "n_valid": {m: sum(1 for r in rows if math.isfinite(r[m])) for m in METRICS},
        "dnsmos": {"means": {m: _finite_mean(r.get(m, math.nan) for r in rows) for m in DNSMOS_KEYS},
                   "n_valid": {m: sum(1 for r in rows if math.isfinite(r.get(m, math.nan))) for m in DNSMOS_KEYS}},
        "sync": _block(rows, ("lse_c", "lse_d", "gt_lse_c", "gt_lse_d"), n_boot),
        "speaker_similarity": _block(rows, ("speaker_sim",), n_boot),
        "ground_truth": {"corpus_wer": gt_wer, "corpus_cer": gt_cer, **_block(rows, GT_KEYS, n_boot)},
        "intervals": intervals,
        "bootstrap": int(n_boot),
        "settings": dict(settings or {}),
    }


_TABLE = (("WER (%)", "corpus_wer", 100.0, 2), ("CER (%)", "corpus_cer", 100.0, 2),
          ("STOI", "stoi", 1.0, 4), ("ESTOI", "estoi", 1.0, 4), ("PESQ (wide-band)", "pesq", 1.0, 3),
          ("log-mel L1", "log_mel_l1", 1.0, 4), ("MCD (dB)", "mcd", 1.0, 3))
_DNSMOS_TABLE = (("DNSMOS SIG", "dnsmos_sig"), ("DNSMOS BAK", "dnsmos_bak"), ("DNSMOS OVRL", "dnsmos_ovrl"),
                 ("DNSMOS P.808", "dnsmos_p808"))
# rows shown only when some clip has a value: (label, summary block, key, scale, digits)
_MODEL_TABLE = (("LSE-C ↑", "sync", "lse_c", 1.0, 3), ("LSE-D ↓", "sync", "lse_d", 1.0, 3),
                ("LSE-C, ground truth", "sync", "gt_lse_c", 1.0, 3), ("LSE-D, ground truth", "sync", "gt_lse_d", 1.0, 3),
                ("speaker similarity ↑", "speaker_similarity", "speaker_sim", 1.0, 4),
                ("DNSMOS OVRL, ground truth", "ground_truth", "gt_dnsmos_ovrl", 1.0, 3))


def with_interval(value: float | None, interval, scale: float = 1.0, digits: int = 3) -> str:
    """`value [low, high]` (the interval left out when there is none), 'n/a' without a value."""
    if value is None:
        return "n/a"
    text = f"{value * scale:.{digits}f}"
    if interval and interval[0] is not None and interval[1] is not None:
        text += f" [{interval[0] * scale:.{digits}f}, {interval[1] * scale:.{digits}f}]"
    return text


def markdown_table(summary: dict) -> str:
    """| metric | value | table: clips, coverage of the split, corpus WER / CER in %, then the means of the
    signal metrics."""
    lines = ["| metric | value |", "| --- | --- |", f"| clips | {summary['n_clips']} |",
             f"| coverage | {coverage_text(summary.get('coverage'))} |"]
    for label, key, scale, digits in _TABLE:
        v = summary.get(key) if key.startswith("corpus_") else summary["means"].get(key)
        lines.append(f"| {label} | {'n/a' if v is None else f'{v * scale:.{digits}f}'} |")
    dn = (summary.get("dnsmos") or {}).get("means") or {}
    for label, key in _DNSMOS_TABLE:
        if dn.get(key) is not None:
            lines.append(f"| {label} | {dn[key]:.3f} |")
    intervals = summary.get("intervals") or {}
    gt = summary.get("ground_truth") or {}
    if gt.get("corpus_wer") is not None:
        lines.append(f"| WER (%), ground truth | {with_interval(gt['corpus_wer'], intervals.get('gt_corpus_wer'), 100.0, 2)} |")
    for label, block, key, scale, digits in _MODEL_TABLE:
        v = ((summary.get(block) or {}).get("means") or {}).get(key)
        if v is not None:
            n = summary[block]["n_valid"][key]
            count = "" if n == summary["n_clips"] else f" ({n} of {summary['n_clips']} clips)"
            lines.append(f"| {label} | {with_interval(v, intervals.get(key), scale, digits)}{count} |")
    settings = summary.get("settings") or {}
    rec = settings.get("recognizer")
    if rec:
        ckpt = settings.get("asr_ckpt")
        lines.append(f"| recogniser | {rec}{f' ({ckpt})' if rec == 'asr' and ckpt else ''} |")
        if settings.get("text_normalizer"):
            lines.append(f"| text normaliser | {settings['text_normalizer']} |")
    if settings.get("speaker_model"):
        lines.append(f"| speaker model | {settings['speaker_model']} |")
    text = "\n".join(lines) + "\n"
    if any("] |" in line or "] (" in line for line in lines):
        text += (f"\n[low, high]: 95 % bootstrap interval ({summary.get('bootstrap', 2000)} resamples of clips, "
                 "pipelines/intervals.py)\n")
    if summary.get("recognizer_warning"):
        text += f"\nwarning: {summary['recognizer_warning']}\n"
    return text


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _json_safe(x.item())
    if isinstance(x, Path):
        return str(x)
    return x


def _csv_value(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return v


def write_outputs(rows: Sequence[dict], summary: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """metrics_per_clip.csv, metrics_summary.json, metrics.md in out_dir (each atomically)."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([_csv_value(r[c]) for c in CSV_COLUMNS])
    paths = {
        "csv": atomic_text(out_dir / OUTPUT_FILES[0], buf.getvalue()),
        "json": atomic_text(out_dir / OUTPUT_FILES[1],
                                  json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n"),
        "md": atomic_text(out_dir / OUTPUT_FILES[2], markdown_table(summary)),
    }
    return paths


# ----------------------------------------------------------------------------- the whole run
def check_extra_metrics(names) -> list[str]:
    names = [str(n) for n in (names or [])]
    for n in names:
        if n.lower() == "dnsmos":
            raise LipVoicerError("evaluate.extra_metrics: 'dnsmos' is built in now: it is on by default "
                                 "(evaluate.dnsmos=true); remove it from evaluate.extra_metrics")
        if n.lower() in ("lse", "lse_c", "lse_d", "syncnet"):
            raise LipVoicerError(f"evaluate.extra_metrics: '{n}' has its own key: LSE-C / LSE-D are scored with "
                                 "evaluate.lse=auto|true (SyncNet weights: python download_checkpoints.py --only "
                                 "syncnet_v2); remove it from evaluate.extra_metrics")
        if n.lower() not in EXTRA_METRICS:
            raise LipVoicerError(f"evaluate.extra_metrics: unknown metric '{n}' (available: "
                                 f"{', '.join(EXTRA_METRICS) or 'none; DNSMOS, LSE-C / LSE-D and speaker similarity have their own keys: evaluate.dnsmos, evaluate.lse, evaluate.speaker_model'})")
    return names


_UNSET = object()


def guidance_warning(cfg, recognizer) -> str | None:
    """One line when the recogniser is the ASR checkpoint that guided generation (generate.asr_ckpt, or
    the published fine-tune of dataset.name), whose WER favours guidance by construction."""
    if not isinstance(recognizer, ASRRecognizer):
        return None
    try:
        same = asr_checkpoint(cfg).resolve() == asr_checkpoint_path(cfg, ("generate", "asr_ckpt")).resolve()
    except LipVoicerError:
        return None
    if not same:
        return None
    return (f"the recogniser is the ASR checkpoint that guided generation ({asr_checkpoint(cfg)}): its WER favours "
            "guidance by construction; use an independent one, e.g. evaluate.recognizer=hf:openai/whisper-small")


def text_normaliser(recognizer) -> tuple[Callable[[str], str] | None, str | None]:
    """(function, name) of the text normaliser WER / CER use with this recogniser: its own (`text_normalizer`,
    e.g. Whisper's English normaliser for a Whisper model), else the project's (dataloaders/text.py)."""
    if recognizer is None:
        return None, None
    own = getattr(recognizer, "text_normalizer", None)
    if own is not None:
        return own, str(getattr(recognizer, "text_normalizer_name", "the recogniser's own"))
    return None, "project (dataloaders/text.py: lower case, markers and punctuation removed, numbers as words)"


def build_speaker_model(cfg, device=None):
    """The speaker-similarity model of evaluate.speaker_model (None when unset)."""
    ev = cfg["evaluate"]
    spec = ev.get("speaker_model")
    if not spec:
        return None
    device = torch.device(device) if device is not None else resolve_device(ev.get("device", "auto"))
    return build_speaker_similarity(str(spec), int(audio_params(cfg["audio"])["sampling_rate"]), device)


TABLES = ("default", "paper")


def table_kind(ev) -> str:
    """evaluate.table: default | paper (one-line error otherwise)."""
    kind = str(ev.get("table") or "default").lower()
    if kind not in TABLES:
        raise LipVoicerError(f"evaluate.table={ev.get('table')}: use default or paper (LipVoicer's columns with "
                             "intervals, for the generated audio and the ground truth)")
    return kind


def scores_ground_truth(ev) -> bool:
    """evaluate.score_ground_truth, or a paper table (whose ground-truth row needs it)."""
    return bool(ev.get("score_ground_truth", False)) or table_kind(ev) == "paper"


def run_evaluation(cfg, recognizer: Recognizer | None = _UNSET, sync=_UNSET, speaker=_UNSET,
                   stoi_net: Callable[[np.ndarray], float] | None = None) -> dict:
    """Score evaluate.generated_dir; writes the three output files and returns the summary
    (with `rows` (per-clip dicts), `outputs` (paths) and `table` (Markdown) added).

    recognizer: a callable wavs -> texts to use instead of the configured one; None turns WER /
    CER off; left out, evaluate.recognizer decides (build_recognizer). sync (pipelines/clip_sync.ClipSync)
    and speaker (a callable (generated wav, ground-truth wav) -> similarity): likewise, for LSE-C / LSE-D
    (evaluate.lse) and speaker similarity (evaluate.speaker_model); None turns them off. stoi_net: a
    non-intrusive intelligibility model (a callable wav -> score, e.g. a STOI-Net) scoring each generated (and,
    with evaluate.score_ground_truth, ground-truth) wav; the paper table then shows it instead of intrusive STOI.
    With evaluate.table=paper, also paper_table.md / .json (pipelines/paper_table.py).
    """
    ev = cfg["evaluate"]
    check_extra_metrics(ev.get("extra_metrics"))
    table = table_kind(ev)
    if ev.get("generated_dir"):
        gen_dir = Path(str(ev["generated_dir"]))
    else:  # the folder inference_full_test_split.py writes for the same generate.* settings
        g = cfg["generate"]
        gen_dir = run_dir(g["save_dir"], cfg["dataset"]["name"], g["w_video"], g["w_asr"], g["asr_start"])
        log.info("evaluate.generated_dir not set: scoring %s (from generate.save_dir and the guidance settings)",
                 gen_dir)
    generated = find_generated_wavs(gen_dir)
    clips, skipped = match_ground_truth(cfg, generated)
    if not clips:
        raise LipVoicerError(f"{gen_dir}: none of the {len(generated)} generated clips has a ground-truth wav "
                             f"(looked in {', '.join(map(str, ground_truth_dirs(cfg, 'audio')))})")
    coverage = check_coverage(cfg, gen_dir, clips)
    if recognizer is _UNSET:
        recognizer = build_recognizer(cfg)
    if sync is _UNSET:
        sync = build_clip_sync(cfg, ground_truth_dirs(cfg, "video"), resolve_device(ev.get("device", "auto")))
    if speaker is _UNSET:
        speaker = build_speaker_model(cfg)
    normalizer, normalizer_name = text_normaliser(recognizer)
    score_gt = scores_ground_truth(ev)
    audio = audio_params(cfg["audio"])
    sr = int(audio["sampling_rate"])
    no_text = [c.video_id for c in clips if c.reference is None]
    if recognizer is not None and no_text:
        log.warning("%d clip(s) have no ground-truth text (no WER / CER for them), e.g. %s", len(no_text), no_text[0])

    source = str(ev.get("recognize_from") or "wav").lower()
    if source not in ("wav", "mel"):
        raise LipVoicerError(f"evaluate.recognize_from: '{source}' (use wav or mel)")
    from_mels = source == "mel" and recognizer is not None
    if from_mels and not hasattr(recognizer, "recognize_mels"):
        raise LipVoicerError("evaluate.recognize_from=mel needs the ASR recogniser (evaluate.recognizer=asr)")
    batch = max(1, int(ev.get("batch_size", 1)))
    use_dnsmos = bool(ev.get("dnsmos", True))
    rows = []
    with tqdm(total=len(clips), desc="evaluate", unit="clip", disable=not bool(ev.get("progress", True))) as bar:
        for s in range(0, len(clips), batch):
            chunk = clips[s:s + batch]
            gens = [read_wav(c.wav, sr) for c in chunk]
            gts = [read_wav(c.gt_wav, sr) for c in chunk]
            hyps = gt_hyps = [None] * len(chunk)
            if recognizer is not None and from_mels:
                hyps = list(recognizer.recognize_mels([generated_mel(c.wav, audio) for c in chunk]))
            elif recognizer is not None:
                hyps = list(recognizer(gens))
                if len(hyps) != len(chunk):
                    raise RuntimeError(f"recogniser returned {len(hyps)} texts for {len(chunk)} wavs")
            if recognizer is not None and score_gt:
                gt_hyps = list(recognizer(gts))
            for c, g, t, h, gh in zip(chunk, gens, gts, hyps, gt_hyps):
                row = {"video_id": c.video_id,
                       **clip_metrics(g, t, c.reference, h, audio, int(ev.get("mcd_coeffs", 13)), use_dnsmos,
                                      normalizer)}
                if math.isnan(row["pesq"]):
                    log.warning("%s: PESQ could not be computed (silent or too short audio); recorded as NaN",
                                c.video_id)
                if score_gt:
                    ground_truth_metrics(row, t, gh, sr, use_dnsmos, normalizer)
                if sync is not None:
                    row.update(sync(c.video_id, g, t))
                if speaker is not None:
                    row["speaker_sim"] = speaker(g, t)
                if stoi_net is not None:
                    row["stoi_net"] = float(stoi_net(g))
                    if score_gt:
                        row["gt_stoi_net"] = float(stoi_net(t))
                rows.append(row)
                bar.update(1)

    settings = {
        "generated_dir": str(gen_dir),
        "gt_audio_dirs": [str(d) for d in ground_truth_dirs(cfg, "audio")],
        "gt_text_dirs": [str(d) for d in ground_truth_dirs(cfg, "text")],
        "split": ev.get("split"),
        "dataset": cfg["dataset"]["name"],
        "recognizer": None if recognizer is None else getattr(recognizer, "name", type(recognizer).__name__),
        "recognize_from": source if recognizer is not None else None,
        "sampling_rate": sr,
        "mcd_coeffs": int(ev.get("mcd_coeffs", 13)),
        "dnsmos": "speechmos DNSMOS P.835 (sig_bak_ovr.onnx) + P.808 (model_v8.onnx)" if use_dnsmos else None,
        "text_normalizer": normalizer_name,
        "speaker_model": None if speaker is None else getattr(speaker, "name", type(speaker).__name__),
        "lse": None if sync is None else sync.settings(),
        "score_ground_truth": score_gt,
        "n_generated": len(generated),
        "n_matched": len(clips),
        "n_skipped": len(skipped),
        "skipped": skipped,
    }
    if isinstance(recognizer, ASRRecognizer):
        settings.update(asr_ckpt=str(asr_checkpoint(cfg)), tokenizer=str(ev["tokenizer"]),
                        decoder=str(ev.get("decoder")), beam_lm=bool(ev.get("beam_lm", True)),
                        device=str(recognizer.device))
    summary = summarise(rows, settings, coverage, int(ev.get("bootstrap", 2000)))
    warning = guidance_warning(cfg, recognizer)
    if warning:
        log.warning("%s", warning)
        summary["recognizer_warning"] = warning
    out_dir = Path(str(ev.get("out_dir") or gen_dir))
    outputs = write_outputs(rows, summary, out_dir)
    text = markdown_table(summary)
    if table == "paper":
        from pipelines.paper_table import write_paper_table

        paper = write_paper_table({gen_dir.name or str(gen_dir): rows}, out_dir, int(ev.get("bootstrap", 2000)),
                                  settings["recognizer"], normalizer_name)
        outputs.update(paper["outputs"])
        text += "\n" + paper["table"]
    return {**summary, "rows": rows, "outputs": outputs, "table": text}

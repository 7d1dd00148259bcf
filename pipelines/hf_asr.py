"""Speech recognisers from Hugging Face `transformers`, independent of generation (evaluate.recognizer=hf:<model>).

`<model>` is a Hub model id (e.g. facebook/wav2vec2-large-960h-lv60-self, openai/whisper-small) or a
local folder written by `save_pretrained` (a model plus its processor). CTC models (wav2vec2,
HuBERT, ...) are decoded greedily; sequence-to-sequence models (Whisper, ...) by `generate`
(Whisper in English transcription mode). Hub weights are fetched into the Hugging Face cache on
first use; offline, point it at a folder saved with `save_pretrained`.

Text normalisation before WER / CER: a Whisper model brings Whisper's own English normaliser (the
`EnglishTextNormalizer` of transformers, as OpenAI's and the papers' Whisper WERs use it: lower case,
bracketed and filler words removed, contractions and British spellings standardised (the
`normalizer.json` list of the model's tokenizer), numbers written as digits), applied to reference and
hypothesis alike (`text_normalizer`); other models leave it to the project's normaliser
(dataloaders/text.py). WERs under different normalisers are not comparable.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from utils.errors import LipVoicerError

log = logging.getLogger(__name__)
PREFIX = "hf:"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise LipVoicerError("evaluate.recognizer: a Hugging Face recogniser needs the transformers package "
                             "(pip install -r requirements.txt)") from None
    return transformers


def load_hf_asr(model_id: str, local_only: bool = False):
    """(model, processor, kind) with kind 'ctc' or 'seq2seq'; one-line LipVoicerError when it cannot be loaded."""
    tf = _transformers()
    where = f"evaluate.recognizer=hf:{model_id}"
    if not model_id:
        raise LipVoicerError("evaluate.recognizer: hf: needs a model id or folder (e.g. hf:openai/whisper-small)")
    if (model_id.startswith((".", "/", "~")) or Path(model_id).exists()) and not Path(model_id).expanduser().is_dir():
        raise LipVoicerError(f"{model_id}: model folder not found ({where})")
    kw = {"local_files_only": True} if local_only else {}
    try:
        config = tf.AutoConfig.from_pretrained(model_id, **kw)
        processor = tf.AutoProcessor.from_pretrained(model_id, **kw)
    except Exception as e:  # noqa: BLE001 - network, missing files, unknown id: one line
        raise LipVoicerError(f"{where}: cannot load the model's config / processor ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]})") from None
    kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "ctc"
    cls = tf.AutoModelForSpeechSeq2Seq if kind == "seq2seq" else tf.AutoModelForCTC
    try:
        model = cls.from_pretrained(model_id, **kw)
    except Exception as e:  # noqa: BLE001
        raise LipVoicerError(f"{where}: not a {kind} speech-recognition model, or its weights cannot be loaded "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    return model.eval(), processor, kind


class HFRecognizer:
    """wavs (1-D float arrays at `sampling_rate`) -> texts, with a transformers speech-recognition model."""

    def __init__(self, model, processor, kind: str, name: str, sampling_rate: int = 16000,
                 device: str | torch.device = "cpu", batch_size: int = 1, max_new_tokens: int = 128):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.processor, self.kind, self.name = processor, kind, name
        self.sampling_rate = int(sampling_rate)
        fe = getattr(processor, "feature_extractor", processor)
        self.model_rate = int(getattr(fe, "sampling_rate", 16000))
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens)
        self.text_normalizer, self.text_normalizer_name = whisper_normaliser(model, processor, name)

    def _prepare(self, wav: np.ndarray) -> np.ndarray:
        x = np.asarray(wav, dtype=np.float32).reshape(-1)
        if self.sampling_rate != self.model_rate:
            import librosa

            x = librosa.resample(x, orig_sr=self.sampling_rate, target_sr=self.model_rate)
        return x.astype(np.float32)

    @torch.inference_mode()
    def _batch(self, wavs: list[np.ndarray]) -> list[str]:
        feats = self.processor(wavs, sampling_rate=self.model_rate, return_tensors="pt",
                               **({"padding": True} if len(wavs) > 1 or self.kind == "ctc" else {}))
        feats = {k: v.to(self.device) for k, v in feats.items()}
        if self.kind == "ctc":
            logits = self.model(**feats).logits
            ids = logits.argmax(-1).cpu()
            return [str(t) for t in self.processor.batch_decode(ids)]
        limit = int(getattr(self.model.config, "max_target_positions", 448)) - 8
        gen_kw = {"max_new_tokens": max(1, min(self.max_new_tokens, limit))}
        if getattr(self.model.config, "model_type", "") == "whisper" and \
                getattr(self.model.generation_config, "is_multilingual", False):
            gen_kw.update(language="en", task="transcribe")
        out = self.model.generate(**feats, **gen_kw).cpu()
        return [str(t) for t in self.processor.batch_decode(out, skip_special_tokens=True)]

    def __call__(self, wavs: Sequence[np.ndarray]) -> list[str]:
        xs = [self._prepare(w) for w in wavs]
        order = sorted(range(len(xs)), key=lambda i: len(xs[i]))
        texts = [""] * len(xs)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            for i, t in zip(idx, self._batch([xs[i] for i in idx])):
                texts[i] = t
        return texts


def whisper_normaliser(model, processor, name: str):
    """(normaliser, its name) for a Whisper model: transformers' EnglishTextNormalizer with the tokenizer's
    British-American spelling list (normalizer.json); (None, None) for other models. A Whisper tokenizer
    without the list still normalises (a warning says the spellings are left as they are)."""
    if getattr(getattr(model, "config", None), "model_type", "") != "whisper":
        return None, None
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spelling = getattr(getattr(processor, "tokenizer", processor), "english_spelling_normalizer", None)
    label = "Whisper EnglishTextNormalizer (transformers)"
    if spelling is None:
        log.warning("%s: the tokenizer has no normalizer.json (British-American spellings); Whisper's English "
                    "normaliser runs without it", name)
        spelling, label = {}, label + " without its spelling list"
    return EnglishTextNormalizer(spelling), label


def build_hf_recognizer(spec: str, sampling_rate: int, device, batch_size: int = 1) -> HFRecognizer:
    """The recogniser of `hf:<model id or folder>`."""
    model_id = spec[len(PREFIX):].strip()
    model, processor, kind = load_hf_asr(model_id)
    log.info("recogniser: %s (%s, transformers)", model_id, kind)
    return HFRecognizer(model, processor, kind, f"hf:{model_id}", sampling_rate, device, batch_size)

"""Speaker similarity with a Hugging Face speaker-verification model (evaluate.speaker_model=hf:<model>).

`<model>` is a Hub id (e.g. microsoft/wavlm-base-plus-sv, the model recent lip-to-speech papers use) or a
local folder written by `save_pretrained` (model + feature extractor): any `transformers` model with an
x-vector head (AutoModelForAudioXVector: WavLM, wav2vec 2.0, UniSpeech-SAT, Data2Vec-Audio ... *ForXVector).
Each waveform, alone (no padding), goes through the model's feature extractor at its sampling rate; the
x-vector embedding it returns is compared by cosine similarity:

    similarity(generated, ground truth) = <e_gen, e_gt> / (||e_gen|| ||e_gt||)     (-1 .. 1; same speaker: high)

Hub weights are fetched into the Hugging Face cache on first use; offline, give a saved folder.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from utils.errors import LipVoicerError

log = logging.getLogger(__name__)
PREFIX = "hf:"
SETTING = "evaluate.speaker_model"


def load_hf_speaker_model(model_id: str, local_only: bool = False):
    """(model, feature extractor); one-line LipVoicerError when it cannot be loaded or has no x-vector head."""
    try:
        import transformers as tf
    except ImportError:
        raise LipVoicerError(f"{SETTING}: a Hugging Face speaker model needs the transformers package "
                             "(pip install -r requirements.txt)") from None
    where = f"{SETTING}=hf:{model_id}"
    if not model_id:
        raise LipVoicerError(f"{SETTING}: hf: needs a model id or folder (e.g. hf:microsoft/wavlm-base-plus-sv)")
    if (model_id.startswith((".", "/", "~")) or Path(model_id).exists()) and not Path(model_id).expanduser().is_dir():
        raise LipVoicerError(f"{model_id}: model folder not found ({where})")
    kw = {"local_files_only": True} if local_only else {}
    try:
        extractor = tf.AutoFeatureExtractor.from_pretrained(model_id, **kw)
    except Exception as e:  # noqa: BLE001 - network, missing files, unknown id: one line
        raise LipVoicerError(f"{where}: cannot load the model's feature extractor ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]})") from None
    try:
        model, info = tf.AutoModelForAudioXVector.from_pretrained(model_id, output_loading_info=True, **kw)
    except Exception as e:  # noqa: BLE001
        raise LipVoicerError(f"{where}: not a speaker-verification model with an x-vector head, or its weights "
                             f"cannot be loaded ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:  # e.g. a speech-recognition checkpoint: its x-vector head would be random
        raise LipVoicerError(f"{where}: not a speaker-verification model with an x-vector head: its weights lack "
                             f"{len(missing)} of the model's tensors (e.g. {', '.join(missing[:3])})")
    return model.eval(), extractor


class SpeakerSimilarity:
    """(generated wav, ground-truth wav) -> cosine similarity of their speaker embeddings."""

    def __init__(self, model, extractor, name: str, sampling_rate: int = 16000, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.extractor, self.name = extractor, name
        self.sampling_rate = int(sampling_rate)
        self.model_rate = int(getattr(extractor, "sampling_rate", 16000))

    @torch.inference_mode()
    def embedding(self, wav: np.ndarray) -> torch.Tensor:
        """The speaker embedding of one waveform (1-D float at the config's sampling rate)."""
        x = np.asarray(wav, dtype=np.float32).reshape(-1)
        if self.sampling_rate != self.model_rate:
            import librosa

            x = librosa.resample(x, orig_sr=self.sampling_rate, target_sr=self.model_rate).astype(np.float32)
        feats = self.extractor(x, sampling_rate=self.model_rate, return_tensors="pt")
        feats = {k: v.to(self.device) for k, v in feats.items() if k in ("input_values", "input_features",
                                                                          "attention_mask")}
        return self.model(**feats).embeddings[0].float().cpu()

    def __call__(self, generated: np.ndarray, reference: np.ndarray) -> float:
        a, b = self.embedding(generated), self.embedding(reference)
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def build_speaker_similarity(spec: str, sampling_rate: int, device) -> SpeakerSimilarity:
    """The similarity of `hf:<model id or folder>`; any other value is a one-line LipVoicerError."""
    if not str(spec).startswith(PREFIX):
        raise LipVoicerError(f"{SETTING}={spec}: use hf:<Hugging Face model id or folder> (e.g. "
                             "hf:microsoft/wavlm-base-plus-sv), or null for no speaker similarity")
    model_id = str(spec)[len(PREFIX):].strip()
    model, extractor = load_hf_speaker_model(model_id)
    log.info("speaker model: %s (transformers)", model_id)
    return SpeakerSimilarity(model, extractor, f"hf:{model_id}", sampling_rate, device)

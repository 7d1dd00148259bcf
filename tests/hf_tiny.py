"""Tiny randomly initialised Hugging Face speech recognisers saved locally (nothing downloaded)."""
from __future__ import annotations

import json
from pathlib import Path

CHARS = list("abcdefghijklmnopqrstuvwxyz'")


def tiny_wav2vec2(folder: Path) -> Path:
    """A 1-layer Wav2Vec2ForCTC with a character tokenizer and its processor, saved in `folder`."""
    import torch
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate(CHARS)}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tok = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                               word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=True)
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, pad_token_id=0,
                         do_stable_layer_norm=False, feat_extract_norm="group")
    Wav2Vec2ForCTC(cfg).save_pretrained(folder)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    return folder


def tiny_whisper(folder: Path, multilingual: bool = False, spelling: dict | None = None) -> Path:
    """A 1+1-layer WhisperForConditionalGeneration with a byte-level BPE of single letters, saved in `folder`.
    multilingual: its generation config is a multilingual one's (language and task tokens: Whisper-large-v3's
    kind, which generate() must be told to read English with); spelling: a normalizer.json (British-American
    spellings) written beside the tokenizer, as the Hub's Whisper tokenizers have one."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)

    folder.mkdir(parents=True, exist_ok=True)
    letters = CHARS + ["Ġ" + c for c in CHARS[:26]] + ["Ġ"]
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    vocab = {t: i for i, t in enumerate(letters + specials)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token="<|endoftext|>",
                           bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        num_mel_bins=80, max_source_positions=1500, max_target_positions=24,
                        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
                        suppress_tokens=[], begin_suppress_tokens=[])
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot,
                                               bos_token_id=eot, max_length=24)
    if multilingual:
        gc = model.generation_config
        gc.is_multilingual, gc.lang_to_id = True, {"<|en|>": vocab["<|en|>"]}
        gc.task_to_id, gc.no_timestamps_token_id = {"transcribe": vocab["<|transcribe|>"]}, vocab["<|notimestamps|>"]
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    if spelling is not None:
        (folder / "normalizer.json").write_text(json.dumps(spelling))
    return folder


def tiny_wavlm_sv(folder: Path) -> Path:
    """A 1-layer WavLMForXVector (a speaker-verification x-vector head, 8-d embeddings) and its feature
    extractor, saved in `folder`."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = WavLMConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                      conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=2, num_buckets=8, max_bucket_distance=16,
                      tdnn_dim=(8, 8, 8), tdnn_kernel=(3, 3, 1), tdnn_dilation=(1, 2, 1), xvector_output_dim=8,
                      do_stable_layer_norm=True, feat_extract_norm="layer")
    WavLMForXVector(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder

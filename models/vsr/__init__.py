"""Lip reader (visual speech recognition) compatible with the published LRS3_V_WER19.1 model."""
from models.vsr.reader import LipReader, load_lip_reader, load_mouth_npz, preprocess_mouth_crops  # noqa: F401

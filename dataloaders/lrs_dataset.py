"""LRS2 / LRS3 (and the synthetic corpus, same layout) for MelGen.

Layout (configs/dataset/*.yaml): `videos_dir`, `audios_dir`, `mouthrois_dir` hold the
same relative clip paths `<source dir>/<speaker>/<clip>` with `.mp4` (+ `.txt`
transcript), `.wav` + `.wav.spec` (log-mel, 80 x frames) and `.npz` (mouth crops,
key `data`, uint8 T x 96 x 96) respectively.

Training items are 1-second windows (25 video frames, 100 mel frames) at a random,
aligned position, with the training augmentations. Test items are whole clips with
their audio, text and id.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import av
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from dataloaders.audio import normalise_mel, read_wav
from dataloaders.transcript import read_transcript
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- clip lists
def list_split_clips(dataset_cfg, split: str) -> list[str]:
    """Clip ids (`<dir>/<speaker>/<clip>`, no extension) of a split, sorted.

    A source `{dir: D}` lists every .mp4 under `videos_dir/D`; `{dir: D, list: F}` reads
    clip ids (first token of each line, relative to D) from the file F under the dataset root.
    """
    splits = dataset_cfg["splits"]
    if split not in splits:
        raise LipVoicerError(f"dataset '{dataset_cfg['name']}' has no split '{split}' (has: {', '.join(splits)})")
    videos_dir = Path(dataset_cfg["videos_dir"])
    if not videos_dir.is_dir():
        raise LipVoicerError(f"{videos_dir}: videos directory not found (dataset.videos_dir)")
    clips = []
    for src in splits[split]:
        d = videos_dir / src["dir"]
        if src.get("list"):
            lst = Path(dataset_cfg["root"]) / src["list"]
            if not lst.is_file():
                raise LipVoicerError(f"{lst}: file list of split '{split}' not found")
            for line in lst.read_text().splitlines():
                if line.strip():
                    clips.append(f"{src['dir']}/{line.split()[0]}")
        else:
            if not d.is_dir():
                raise LipVoicerError(f"{d}: directory of split '{split}' not found")
            clips.extend(str(p.relative_to(videos_dir).with_suffix("")) for p in d.rglob("*.mp4"))
    if not clips:
        raise LipVoicerError(f"{videos_dir}: split '{split}' of dataset '{dataset_cfg['name']}' has no clips")
    return sorted(clips)


class ClipPaths:
    def __init__(self, dataset_cfg, clip: str):
        self.id = clip
        self.video = Path(dataset_cfg["videos_dir"]) / f"{clip}.mp4"
        self.text = Path(dataset_cfg["videos_dir"]) / f"{clip}.txt"
        self.wav = Path(dataset_cfg["audios_dir"]) / f"{clip}.wav"
        self.mel = Path(dataset_cfg["audios_dir"]) / f"{clip}.wav.spec"
        self.mouth = Path(dataset_cfg["mouthrois_dir"]) / f"{clip}.npz"

    def missing(self, need_wav: bool = False) -> list[Path]:
        need = [self.video, self.mel, self.mouth] + ([self.wav] if need_wav else [])
        return [p for p in need if not p.is_file()]


# ----------------------------------------------------------------------------- readers
def load_mouth(path: Path) -> np.ndarray:
    try:
        with np.load(path) as z:
            data = z["data"]
    except Exception as e:  # noqa: BLE001
        raise LipVoicerError(f"{path}: not a readable mouth-crop file ({e})") from e
    if data.ndim != 3 or data.shape[0] == 0:
        raise LipVoicerError(f"{path}: mouth crops must be (T, H, W), got {data.shape}")
    return data


def load_mel(path: Path) -> torch.Tensor:
    try:
        mel = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise LipVoicerError(f"{path}: not a readable mel file ({e})") from e
    if mel.dim() != 2:
        raise LipVoicerError(f"{path}: mel must be (n_mels, frames), got {tuple(mel.shape)}")
    return mel.float()


def read_video_frame(path: Path, index: int) -> np.ndarray:
    """One RGB frame (H, W, 3) uint8: frame `index`, or the last one if the video is shorter."""
    try:
        with av.open(str(path)) as container:
            frame = None
            for i, f in enumerate(container.decode(video=0)):
                frame = f
                if i >= index:
                    break
    except Exception as e:  # noqa: BLE001
        raise LipVoicerError(f"{path}: cannot decode video ({e})") from e
    if frame is None:
        raise LipVoicerError(f"{path}: video has no frames")
    return frame.to_ndarray(format="rgb24")


def check_lengths(clip: ClipPaths, video_frames: int, mel_frames: int, per_frame: int) -> int:
    """Aligned length in video frames; more than one frame of disagreement is an error."""
    mel_video = mel_frames // per_frame
    if abs(mel_video - video_frames) > 1:
        raise LipVoicerError(
            f"{clip.mouth}: mouth crops have {video_frames} frames but {clip.mel} covers {mel_video} "
            f"video frames ({mel_frames} mel frames); they differ by more than one frame")
    return min(video_frames, mel_video)


# ----------------------------------------------------------------------------- transforms
def mouth_to_tensor(crops: np.ndarray, video_cfg, train: bool, rng: random.Random | None = None) -> torch.Tensor:
    """uint8 (T, 96, 96) -> normalised (1, T, 88, 88): random crop + flip in training, centre crop else."""
    size = int(video_cfg["mouth_crop"])
    h, w = crops.shape[1:]
    if train:
        top, left = rng.randint(0, h - size), rng.randint(0, w - size)
    else:
        top, left = (h - size) // 2, (w - size) // 2
    x = torch.from_numpy(np.ascontiguousarray(crops[:, top:top + size, left:left + size])).float() / 255.0
    if train and rng.random() < 0.5:
        x = x.flip(-1)
    x = (x - float(video_cfg["mouth_mean"])) / float(video_cfg["mouth_std"])
    return x.unsqueeze(0)


def face_to_tensor(frame: np.ndarray, video_cfg, train: bool, rng: random.Random | None = None) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (3, S, S): short side resized to S (224), centre square, ImageNet
    normalisation; in training a random horizontal flip and brightness/colour jitter."""
    size = int(video_cfg["face_size"])
    img = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    img = TF.resize(img, size, antialias=True)
    img = TF.center_crop(img, [size, size])
    img = img.float() / 255.0
    if train:
        lo, hi = video_cfg["face_jitter"]
        if rng.random() < 0.5:
            img = img.flip(-1)
        img = TF.adjust_brightness(img, rng.uniform(lo, hi))
        img = TF.adjust_saturation(img, rng.uniform(lo, hi))
    return TF.normalize(img, IMAGENET_MEAN, IMAGENET_STD)


# ----------------------------------------------------------------------------- datasets
class MelGenTrainDataset(Dataset):
    """1-second aligned windows. Index with an int, or with (int, seed) to make the
    augmentation of that item reproducible (used by the resumable sampler)."""

    def __init__(self, cfg, split: str = "train"):
        self.cfg = cfg
        self.dataset_cfg = cfg["dataset"]
        self.video_cfg = cfg["video"]
        self.window = int(cfg["train"]["window_frames"])
        self.per_frame = int(cfg["video"]["mel_frames_per_video_frame"])
        self.clamp_min = float(cfg["audio"]["clamp_min"])
        clips = list_split_clips(self.dataset_cfg, split)
        self.clips = []
        skipped = 0
        for c in clips:
            paths = ClipPaths(self.dataset_cfg, c)
            miss = paths.missing()
            if miss:
                skipped += 1
                log.warning("skipping %s: missing %s", c, ", ".join(str(m) for m in miss))
            else:
                self.clips.append(paths)
        if not self.clips:
            raise LipVoicerError(f"{self.dataset_cfg['videos_dir']}: no clip of split '{split}' has its video, "
                                 f"mel (.wav.spec) and mouth crops (.npz); {skipped} incomplete")
        if skipped:
            log.warning("%d of %d clips of split '%s' skipped (incomplete)", skipped, len(clips), split)

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        rng = random.Random(seed)
        clip = self.clips[index]
        crops = load_mouth(clip.mouth)
        mel = load_mel(clip.mel)
        n = check_lengths(clip, crops.shape[0], mel.shape[1], self.per_frame)
        w = self.window
        if n < w:  # short clip: pad video by repeating its last frame, mel with silence
            crops = np.concatenate([crops[:n], np.repeat(crops[n - 1:n], w - n, axis=0)])
            pad = torch.full((mel.shape[0], w * self.per_frame - n * self.per_frame), np.log(self.clamp_min))
            mel = torch.cat((mel[:, :n * self.per_frame], pad), dim=1)
            start = 0
        else:
            start = rng.randint(0, n - w)
        mouth = mouth_to_tensor(crops[start:start + w], self.video_cfg, True, rng)
        mel_w = mel[:, start * self.per_frame:(start + w) * self.per_frame]
        face = face_to_tensor(read_video_frame(clip.video, rng.randint(0, max(n - 1, 0))), self.video_cfg, True, rng)
        return {"mel": normalise_mel(mel_w, self.clamp_min), "mouthroi": mouth, "face_image": face}


class MelGenTestDataset(Dataset):
    """Whole clips: mouth (1, T, 88, 88), face (first frame), normalised mel (80, 4T), wav, text, id."""

    def __init__(self, cfg, split: str = "test", clips: list[str] | None = None):
        self.dataset_cfg = cfg["dataset"]
        self.video_cfg = cfg["video"]
        self.audio_cfg = cfg["audio"]
        self.per_frame = int(cfg["video"]["mel_frames_per_video_frame"])
        self.clips = [ClipPaths(self.dataset_cfg, c) for c in (clips or list_split_clips(self.dataset_cfg, split))]

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        clip = self.clips[index]
        miss = clip.missing(need_wav=True)
        if miss:
            raise LipVoicerError(f"{miss[0]}: file of clip {clip.id} not found")
        crops = load_mouth(clip.mouth)
        mel = load_mel(clip.mel)
        n = check_lengths(clip, crops.shape[0], mel.shape[1], self.per_frame)
        wav = read_wav(clip.wav, int(self.audio_cfg["sampling_rate"]))
        text = read_transcript(clip.text) if clip.text.is_file() else ""
        return {
            "id": clip.id,
            "mouthroi": mouth_to_tensor(crops[:n], self.video_cfg, False),
            "face_image": face_to_tensor(read_video_frame(clip.video, 0), self.video_cfg, False),
            "mel": normalise_mel(mel[:, :n * self.per_frame], float(self.audio_cfg["clamp_min"])),
            "audio": torch.from_numpy(wav),
            "text": text,
        }

"""LRS2 / LRS3 (and the synthetic corpus, same layout) for MelGen.

Clips and their files come from dataloaders/layout.py (`list_split_clips`, `ClipPaths`);
the model-input transforms from dataloaders/transforms.py.

Training items are 1-second windows (25 video frames, 100 mel frames) at a random,
aligned position, with the training augmentations. Test items are whole clips with
their audio, text and id.

Every item is checked as it is read: mouth crops uint8 (T, video.mouth_size, video.mouth_size),
a finite (audio.n_mels, frames) mel, and as many crop frames as the mel covers (within one
frame; a truncated video gives fewer crops than its audio). A bad clip raises LipVoicerError
`<file>: <reason>`; training skips it (trainers/base.py), split generation reports it.
"""
from __future__ import annotations

import logging
import pickle
import random
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import Dataset

from dataloaders.audio import normalise_mel, read_wav
from dataloaders.face_image import face_square
from dataloaders.layout import ClipPaths, list_split_clips
from dataloaders.text import read_transcript
from dataloaders.transforms import face_to_tensor, mouth_to_tensor
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- readers
def _why(e: BaseException) -> str:
    """`<type>: <first line of the message>` (some decoders explain themselves over many lines)."""
    lines = str(e).strip().splitlines()
    if not lines and isinstance(e, EOFError):
        return "the file is empty or cut short"
    return f"{type(e).__name__}: {lines[0].strip()}" if lines else type(e).__name__


def load_mouth(path: Path, size: int | None = None) -> np.ndarray:
    """Mouth crops of a `.npz` (key `data`): uint8 (T, size, size), T >= 1; anything else is a
    LipVoicerError `<path>: <reason>` (e.g. `mouth crops are 20 x 20, expected 96 x 96`)."""
    try:
        with np.load(path) as z:
            data = z["data"]
    except Exception as e:  # noqa: BLE001 - any decoding problem is a bad file for the user
        raise LipVoicerError(f"{path}: not a readable mouth-crop file ({_why(e)})") from e
    if data.ndim != 3:
        raise LipVoicerError(f"{path}: mouth crops must be (T, H, W), got {data.shape}")
    if data.shape[0] == 0:
        raise LipVoicerError(f"{path}: mouth crops have no frames")
    if size is not None and tuple(data.shape[1:]) != (int(size), int(size)):
        raise LipVoicerError(f"{path}: mouth crops are {data.shape[1]} x {data.shape[2]}, expected {size} x {size} "
                             "(video.mouth_size)")
    if data.dtype != np.uint8:
        raise LipVoicerError(f"{path}: mouth crops are {data.dtype}, expected uint8")
    return data


def load_mel(path: Path, n_mels: int | None = None) -> torch.Tensor:
    """A `.wav.spec` log-mel: a finite (n_mels, frames) tensor; anything else is a LipVoicerError."""
    try:
        mel = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's long "Weights only load failed ..." explanation
        raise LipVoicerError(f"{path}: not a readable mel file (not a saved tensor)") from e
    except Exception as e:  # noqa: BLE001
        raise LipVoicerError(f"{path}: not a readable mel file ({_why(e)})") from e
    if not isinstance(mel, torch.Tensor):
        raise LipVoicerError(f"{path}: not a mel file (holds a {type(mel).__name__}, expected a tensor)")
    if mel.dim() != 2 or mel.shape[1] == 0:
        raise LipVoicerError(f"{path}: mel must be (n_mels, frames), got {tuple(mel.shape)}")
    if n_mels is not None and mel.shape[0] != int(n_mels):
        raise LipVoicerError(f"{path}: mel has {mel.shape[0]} bands, expected {n_mels}")
    mel = mel.float()
    if not bool(torch.isfinite(mel).all()):
        raise LipVoicerError(f"{path}: mel holds NaN or infinite values")
    return mel


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
        raise LipVoicerError(f"{path}: cannot decode video ({_why(e)})") from e
    if frame is None:
        raise LipVoicerError(f"{path}: video has no frames")
    return frame.to_ndarray(format="rgb24")


def load_face_track(path: Path) -> tuple[np.ndarray | None, int]:
    """((T, 4) face boxes, identity frame) that data preparation stores beside the mouth crops
    (dataloaders/prep/mouthcrops.py), or (None, 0) for crops made without them (whole frames are then used)."""
    try:
        with np.load(path) as z:
            if "face_boxes" not in z.files:
                return None, 0
            boxes = np.asarray(z["face_boxes"], dtype=np.float64)
            frame = int(z["face_frame"]) if "face_frame" in z.files else 0
    except Exception as e:  # noqa: BLE001
        raise LipVoicerError(f"{path}: not a readable mouth-crop file ({_why(e)})") from e
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0 or not np.isfinite(boxes).all():
        raise LipVoicerError(f"{path}: face_boxes must be a finite (T, 4) array, got {boxes.shape}")
    return boxes, frame


def identity_image(clip: ClipPaths, index: int, boxes: np.ndarray | None) -> np.ndarray:
    """Frame `index` of the clip's video as the identity image: face-centred (dataloaders/face_image.py)
    when data preparation stored the face boxes, the whole frame otherwise (LRS2/LRS3 frames are
    face-centred already)."""
    frame = read_video_frame(clip.video, index)
    if boxes is None:
        return frame
    return face_square(frame, boxes[min(index, len(boxes) - 1)])


def check_lengths(clip: ClipPaths, video_frames: int, mel_frames: int, per_frame: int) -> int:
    """Aligned length in video frames; more than one frame of disagreement is an error."""
    mel_video = mel_frames // per_frame
    if abs(mel_video - video_frames) > 1:
        raise LipVoicerError(
            f"{clip.mouth}: mouth crops have {video_frames} frames but {clip.mel} covers {mel_video} "
            f"video frames ({mel_frames} mel frames); they differ by more than one frame")
    return min(video_frames, mel_video)


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
        self.mouth_size = int(cfg["video"]["mouth_size"])
        self.n_mels = int(cfg["audio"]["n_mels"])
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
        # train.preload: read every clip once (crops, mel, and its identity frame as the face image, no
        # other frame) and keep it in memory; for small corpora on few CPU cores (the synthetic recipe),
        # where decoding a video frame per item dominates. A bad clip still raises when it is used.
        self.preload = bool(cfg["train"].get("preload", False))
        self.cache: dict[int, tuple] = {}
        if self.preload:
            for i in range(len(self.clips)):
                try:
                    self._cached(i)
                except LipVoicerError:
                    pass
            log.info("preloaded %d of %d clips", len(self.cache), len(self.clips))

    def _cached(self, index: int) -> tuple:
        """(crops, mel, aligned length, identity image) of a clip, read once (train.preload)."""
        if index not in self.cache:
            clip = self.clips[index]
            crops = load_mouth(clip.mouth, self.mouth_size)
            mel = load_mel(clip.mel, self.n_mels)
            n = check_lengths(clip, crops.shape[0], mel.shape[1], self.per_frame)
            boxes, frame = load_face_track(clip.mouth)
            self.cache[index] = (crops, mel, n, identity_image(clip, min(frame, n - 1), boxes))
        return self.cache[index]

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, key):
        """The item; a clip whose files are unreadable or disagree raises LipVoicerError naming the file
        (training skips it: trainers/base.py SkipBadClips)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        rng = random.Random(seed)
        clip = self.clips[index]
        face_image = None
        if self.preload:
            crops, mel, n, face_image = self._cached(index)
        else:
            crops = load_mouth(clip.mouth, self.mouth_size)
            mel = load_mel(clip.mel, self.n_mels)
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
        frame_index = rng.randint(0, max(n - 1, 0))
        if face_image is None:
            face_image = identity_image(clip, frame_index, load_face_track(clip.mouth)[0])
        face = face_to_tensor(face_image, self.video_cfg, True, rng)
        return {"mel": normalise_mel(mel_w, self.clamp_min), "mouthroi": mouth, "face_image": face}


class MelGenTestDataset(Dataset):
    """Whole clips: mouth (1, T, 88, 88), face (the identity frame, face-centred; see identity_image),
    normalised mel (80, 4T), wav, text, id."""

    def __init__(self, cfg, split: str = "test", clips: list[str] | None = None):
        self.dataset_cfg = cfg["dataset"]
        self.video_cfg = cfg["video"]
        self.audio_cfg = cfg["audio"]
        self.per_frame = int(cfg["video"]["mel_frames_per_video_frame"])
        self.mouth_size = int(cfg["video"]["mouth_size"])
        self.n_mels = int(cfg["audio"]["n_mels"])
        self.clips = [ClipPaths(self.dataset_cfg, c) for c in (clips or list_split_clips(self.dataset_cfg, split))]

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        clip = self.clips[index]
        miss = clip.missing(need_wav=True)
        if miss:
            raise LipVoicerError(f"{miss[0]}: file of clip {clip.id} not found")
        crops = load_mouth(clip.mouth, self.mouth_size)
        mel = load_mel(clip.mel, self.n_mels)
        n = check_lengths(clip, crops.shape[0], mel.shape[1], self.per_frame)
        wav = read_wav(clip.wav, int(self.audio_cfg["sampling_rate"]))
        text = read_transcript(clip.text) if clip.text.is_file() else ""
        boxes, face_frame = load_face_track(clip.mouth)
        return {
            "id": clip.id,
            "mouthroi": mouth_to_tensor(crops[:n], self.video_cfg, False),
            "face_image": face_to_tensor(identity_image(clip, face_frame, boxes), self.video_cfg, False),
            "mel": normalise_mel(mel[:, :n * self.per_frame], float(self.audio_cfg["clamp_min"])),
            "audio": torch.from_numpy(wav),
            "text": text,
        }

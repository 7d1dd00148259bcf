"""LSE-C and LSE-D: how well speech is in sync with the lips, scored by SyncNet as the papers score it.

The score of one clip follows syncnet_python's SyncNetInstance.evaluate (the code behind the LSE columns of
Wav2Lip, LipVoicer and the lip-to-speech papers after them):

1. T face crops (224 x 224 BGR, dataloaders/prep/syncnet_crop.py) and the audio as 16-bit samples with its
   MFCCs (13 x 100 per second, dataloaders/mfcc.py); n = min(T, samples // 640) - 5 windows (640 samples =
   one video frame at 16 kHz and 25 fps), so at least 6 frames of both are needed;
2. window i (i = 0 .. n-1): video frames i .. i+4 -> lip embedding, MFCC frames 4i .. 4i+19 -> audio
   embedding (models/syncnet.py);
3. dists[i, j] = || lip_i - audio_{i+j-vshift} + 1e-6 || for j = 0 .. 2 vshift (the audio embeddings
   zero-padded by vshift at both ends, as torch's pairwise_distance computes it);
4. mean_dists = the mean of dists over i; offset = vshift - argmin(mean_dists) (in video frames, with the
   original's sign), LSE-D = min(mean_dists), LSE-C = median(mean_dists) - LSE-D. Papers report the means of LSE-D (lower is better) and LSE-C (higher is better) over clips.

    scorer = SyncScorer(load_syncnet(path), device="cuda")
    s = scorer.score(crops_bgr, int16_samples)          # s.lse_c, s.lse_d, s.offset
    lips = scorer.lip_embeddings(crops_bgr)             # once per video, then for several soundtracks:
    s_gen, s_gt = scorer.score(crops_bgr, gen, lips=lips), scorer.score(crops_bgr, gt, lips=lips)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dataloaders.mfcc import syncnet_mfcc
from models.builders import load_syncnet_model, syncnet_checkpoint_path, syncnet_settings
from models.syncnet import AUDIO_WINDOW, VIDEO_WINDOW, SyncNet
from utils.errors import LipVoicerError

VSHIFT = 15                   # run_syncnet.py's --vshift
BATCH_SIZE = 20               # run_syncnet.py's --batch_size (any value gives the same scores)
SAMPLES_PER_FRAME = 640       # 16 kHz audio per 25 fps video frame
MFCC_PER_FRAME = 4            # 100 MFCC frames per second / 25 video frames per second
MIN_FRAMES = VIDEO_WINDOW + 1  # n = frames - 5 windows must be at least 1
PAIRWISE_EPS = 1e-6           # torch.nn.functional.pairwise_distance's eps


@dataclass
class SyncScore:
    lse_c: float                # confidence: median - min of the mean distances (higher: more in sync)
    lse_d: float                # the minimum mean distance (lower: more in sync)
    offset: int                 # video frames: vshift - argmin of the mean distances
    offset_margin: float        # second smallest - smallest mean distance (how clear the offset is)
    windows: int                # n, the windows scored
    mean_dists: np.ndarray = field(repr=False, default=None)   # (2 vshift + 1,)
    dists: np.ndarray = field(repr=False, default=None)        # (n, 2 vshift + 1)
    mfcc: np.ndarray = field(repr=False, default=None)         # (13, frames)

    def as_dict(self) -> dict:
        return {"lse_c": round(self.lse_c, 4), "lse_d": round(self.lse_d, 4), "offset": self.offset,
                "windows": self.windows}


def offset_distances(lips: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """(n, 2 vshift + 1) distances of each lip embedding i to the audio embeddings i - vshift .. i + vshift
    (zero vectors outside the clip): || lip_i - audio_k + eps ||."""
    n, dim = lips.shape
    padded = torch.cat([audio.new_zeros(vshift, dim), audio, audio.new_zeros(vshift, dim)])
    shifted = padded.unfold(0, 2 * vshift + 1, 1)[:n]           # (n, dim, 2 vshift + 1)
    return torch.linalg.vector_norm(lips[:, :, None] - shifted + PAIRWISE_EPS, dim=1)


def score_from_distances(dists: torch.Tensor, vshift: int = VSHIFT) -> SyncScore:
    """Offset, LSE-D and LSE-C from the (n, 2 vshift + 1) distances (step 4 of the module text)."""
    mean = dists.mean(dim=0)
    min_dist, min_idx = torch.min(mean, dim=0)
    two = torch.topk(mean, min(2, len(mean)), largest=False).values
    margin = float(two[1] - two[0]) if len(two) > 1 else float("inf")
    return SyncScore(lse_c=float(torch.median(mean) - min_dist), lse_d=float(min_dist), offset=int(vshift - min_idx),
                     offset_margin=margin, windows=int(dists.shape[0]), mean_dists=mean.cpu().numpy(),
                     dists=dists.cpu().numpy())


def windows_of(frames: int, samples: int) -> int:
    """Windows a clip of `frames` video frames and `samples` audio samples gets (may be < 1: too short)."""
    return min(int(frames), int(samples) // SAMPLES_PER_FRAME) - VIDEO_WINDOW


class SyncScorer:
    """SyncNet with the original's windowing and offsets (see the module text)."""

    def __init__(self, net: SyncNet, device: str | torch.device = "cpu", vshift: int = VSHIFT,
                 batch_size: int = BATCH_SIZE):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.vshift, self.batch_size = int(vshift), max(1, int(batch_size))
        self.weights: str | None = None   # the weights file, for reports (build_sync_scorer sets it)
        if self.vshift < 1:
            raise LipVoicerError(f"syncnet.vshift={vshift}: must be an integer >= 1")

    @torch.inference_mode()
    def lip_embeddings(self, crops: np.ndarray, windows: int | None = None) -> torch.Tensor:
        """(windows, 1024) embeddings of the 5-frame windows starting at frames 0 .. windows - 1 of (T, 224, 224, 3)
        uint8 BGR crops (default: T - 5 windows, all the original ever scores), on the CPU."""
        crops = np.asarray(crops)
        n = len(crops) - VIDEO_WINDOW if windows is None else int(windows)
        out = []
        for s in range(0, max(n, 0), self.batch_size):
            e = min(n, s + self.batch_size)
            frames = torch.from_numpy(np.ascontiguousarray(crops[s:e + VIDEO_WINDOW - 1])).to(self.device)
            frames = frames.permute(3, 0, 1, 2).float()                        # (3, frames, 224, 224)
            batch = torch.stack([frames[:, i:i + VIDEO_WINDOW] for i in range(e - s)])
            out.append(self.net.lip_embedding(batch).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 1024)

    @torch.inference_mode()
    def audio_embeddings(self, mfcc: np.ndarray, windows: int) -> torch.Tensor:
        """(windows, 1024) embeddings of the 20-frame MFCC windows starting at MFCC frames 0, 4, 8, ..."""
        m = torch.from_numpy(np.ascontiguousarray(mfcc, dtype=np.float32))
        out = []
        for s in range(0, windows, self.batch_size):
            e = min(windows, s + self.batch_size)
            batch = torch.stack([m[:, MFCC_PER_FRAME * i:MFCC_PER_FRAME * i + AUDIO_WINDOW] for i in range(s, e)])
            out.append(self.net.audio_embedding(batch[:, None].to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 1024)

    def score(self, crops: np.ndarray, samples: np.ndarray, lips: torch.Tensor | None = None,
              source: str = "clip") -> SyncScore:
        """The score of T face crops (uint8 BGR) with 16-bit audio samples (dataloaders/mfcc.int16_samples);
        lips: their lip_embeddings when already computed. Fewer than 6 frames of video or audio is one
        LipVoicerError naming `source`."""
        samples = np.asarray(samples)
        n = windows_of(len(crops), len(samples))
        if n < 1:
            raise LipVoicerError(f"{source}: {len(crops)} video frames and {len(samples) / 16000:.2f} s of audio; "
                                 f"SyncNet needs at least {MIN_FRAMES} frames ({MIN_FRAMES / 25:.2f} s) of both")
        mfcc = syncnet_mfcc(samples)
        if lips is None or len(lips) < n:
            lips = self.lip_embeddings(crops, n)
        score = score_from_distances(offset_distances(lips[:n], self.audio_embeddings(mfcc, n), self.vshift),
                                     self.vshift)
        score.mfcc = mfcc
        return score


def build_sync_scorer(cfg, device) -> SyncScorer:
    """The scorer of the config: SyncNet from syncnet.ckpt (one-line error naming the file when it is missing or
    not SyncNet's), syncnet.vshift and syncnet.batch_size."""
    scorer = SyncScorer(load_syncnet_model(cfg, device), device, **syncnet_settings(cfg))
    scorer.weights = str(syncnet_checkpoint_path(cfg))
    return scorer

"""Whole clips in batches for generation: length buckets and a padding collate."""
from __future__ import annotations

import torch


def length_batches(lengths: dict[str, int], batch_size: int) -> list[list[str]]:
    """Group ids of similar length (sorted by length, then id) into batches of at most batch_size."""
    order = sorted(lengths, key=lambda k: (lengths[k], k))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate_clips(items: list[dict]) -> dict:
    """Pad whole-clip items (as MelGenTestDataset returns them) to one batch.

    mouthroi (B, 1, Tmax, H, W) zero-padded, face_image (B, 3, S, S), mel (B, 80, 4 Tmax) padded with -1
    (silence), lengths in mel frames, frames in video frames.
    """
    frames = torch.tensor([it["mouthroi"].shape[1] for it in items])
    tmax = int(frames.max())
    b = len(items)
    h, w = items[0]["mouthroi"].shape[-2:]
    mouth = torch.zeros(b, 1, tmax, h, w)
    per_frame = items[0]["mel"].shape[1] // max(items[0]["mouthroi"].shape[1], 1)
    mel = torch.full((b, items[0]["mel"].shape[0], tmax * per_frame), -1.0)
    for i, it in enumerate(items):
        mouth[i, :, :it["mouthroi"].shape[1]] = it["mouthroi"]
        mel[i, :, :it["mel"].shape[1]] = it["mel"]
    return {"mouthroi": mouth, "face_image": torch.stack([it["face_image"] for it in items]), "mel": mel,
            "frames": frames, "lengths": frames * per_frame, "ids": [it["id"] for it in items],
            "texts": [it["text"] for it in items], "audio": [it["audio"] for it in items]}

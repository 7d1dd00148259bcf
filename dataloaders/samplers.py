"""An endless, shardable, resumable stream of (index, seed) keys for training.

Epoch e visits a permutation drawn from (seed, e); rank r of W takes every W-th
item. Each key carries its own augmentation seed, so the stream and the
augmentations depend only on (seed, position), not on worker scheduling: a run
resumed at position p sees exactly the items an uninterrupted run would.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler):
    def __init__(self, n_items: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        self.n, self.seed, self.rank, self.world, self.start = n_items, int(seed), rank, world_size, int(start)

    def _epoch(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        # every rank gets the same number of items per epoch (wrap around)
        per_rank = -(-self.n // self.world)
        perm = (perm * (per_rank * self.world // self.n + 1))[:per_rank * self.world]
        return perm[self.rank::self.world]

    def __iter__(self):
        pos = self.start
        per_rank = -(-self.n // self.world)
        while True:
            epoch, offset = divmod(pos, per_rank)
            items = self._epoch(epoch)
            for i in range(offset, per_rank):
                yield items[i], (self.seed * 7919 + self.rank) * 10_000_019 + pos
                pos += 1

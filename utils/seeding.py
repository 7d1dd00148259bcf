"""Seeding and RNG state (saved in training checkpoints so that a resumed run continues exactly)."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states(info) -> list:
    """Every rank's RNG state (gathered on all ranks under torchrun), so that each continues exactly."""
    if not info.distributed:
        return [rng_state()]
    states = [None] * info.world_size
    torch.distributed.all_gather_object(states, rng_state())
    return states

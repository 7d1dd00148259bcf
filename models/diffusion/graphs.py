"""One sampling step, captured once as a CUDA graph and replayed for every timestep.

A guided step launches hundreds of small kernels (MelGen's two passes, the ASR forward and
backward, the update); on a GPU their launch cost, not their arithmetic, sets the speed. A
CUDA graph records the launches once and replays them with one call. That needs static
shapes and no host synchronisation inside the step: the samplers write each step as
`step(*tensors) -> tuple of tensors`, where every per-step value (the timestep, the
schedule's coefficients, the noise) is a device tensor.

`StepRunner(step, mode)` runs such a step in one of three ways:

* "eager": calls `step` on the given tensors;
* "static": copies the inputs into buffers made at the first call and calls `step` on those
  buffers. This is exactly the data flow of a replay, without CUDA; CPU tests run it
  against the plain samplers (the seam that keeps the graph path honest);
* "graph" (CUDA only): like "static", but the first call captures `step` into a CUDA graph
  (after a warm-up on a side stream) and every call replays it. If capture fails, the
  runner warns once and falls back to "eager".

The outputs of "static" and "graph" live in buffers that the next call overwrites: use or
copy them before calling again (the samplers feed them straight back as inputs).

A step also reads tensors that are fixed for a whole batch (the frame mask, MelGen's condition
projections, the ASR texts): a captured graph reads them at the addresses it saw at capture.
`RunnerCache` keeps the runners of one batch shape together with the object that owns those
tensors (the first batch's `Guidance`); a later batch of the same shape copies its own
constants into them once (`Guidance.load_`, not per step) and replays the same runners. The
cache is bounded (`max_entries`, least recently used first out); its graphs share one memory
pool, which is safe because every replay's outputs are consumed (copied into the next runner's
inputs, or cloned at the end of a run) before any other graph replays.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import torch

log = logging.getLogger(__name__)

MODES = ("eager", "static", "graph")


class StepRunner:
    def __init__(self, step: Callable[..., Sequence[torch.Tensor]], mode: str = "eager", pool=None,
                 name: str = "step"):
        if mode not in MODES:
            raise ValueError(f"unknown step mode {mode!r} (use {', '.join(MODES)})")
        self.step, self.mode, self.pool, self.name = step, mode, pool, name
        self.inputs: list[torch.Tensor] | None = None
        self.outputs: tuple[torch.Tensor, ...] | None = None
        self.graph = None

    def _buffers(self, args: Sequence[torch.Tensor]) -> None:
        self.inputs = [a.detach().clone() for a in args]

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: lazy initialisation, cuDNN/cuBLAS workspaces, autograd set-up
                self.step(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.outputs = tuple(self.step(*self.inputs))
        self.graph = graph

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.mode == "eager":
            return tuple(self.step(*args))
        first = self.inputs is None
        if first:
            self._buffers(args)
        else:
            for buf, a in zip(self.inputs, args):
                if buf.data_ptr() != a.data_ptr():
                    buf.copy_(a)
        if self.mode == "static":
            return tuple(self.step(*self.inputs))
        if first:
            try:
                self._capture()
            except Exception as e:  # noqa: BLE001 - any capture failure: run eagerly instead, and say so
                log.warning("%s: CUDA graph capture failed (%s: %s); running eagerly", self.name,
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                self.mode, self.graph = "eager", None
                return tuple(self.step(*args))
        self.graph.replay()
        return self.outputs


@dataclass
class CachedSteps:
    """The runners of one batch shape (by step kind), the owner of the tensors they read, and how often
    this entry served a batch."""
    owner: Any
    runners: dict = field(default_factory=dict)
    uses: int = 0


class RunnerCache:
    """Step runners kept across batches: key (sampler, batch shape, ...) -> CachedSteps; at most
    `max_entries` keys (the least recently used is dropped, its graphs and buffers freed). An entry holds
    device memory while it is kept: its input buffers, its graphs' outputs and its owner's constants
    (for the published MelGen, the condition projections are the largest: 12 blocks x 2B x 1024
    channels x mel frames in float32, about 0.5 GB for 8 clips of 6 s)."""

    def __init__(self, max_entries: int = 4):
        self.max_entries = int(max_entries)
        self.entries: "OrderedDict[Hashable, CachedSteps]" = OrderedDict()
        self._pool = None

    def pool(self):
        """One CUDA graph memory pool for every graph of this cache (made on first use)."""
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        return self._pool

    def get(self, key: Hashable, owner: Any) -> tuple[CachedSteps, bool]:
        """(entry, hit): the entry of `key`, made with `owner` when new (hit False)."""
        entry = self.entries.get(key)
        hit = entry is not None
        if hit:
            self.entries.move_to_end(key)
        else:
            entry = self.entries[key] = CachedSteps(owner)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        entry.uses += 1
        return entry, hit

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

"""Pictures of mel spectrograms (TensorBoard figures and PNG files); matplotlib is imported on the first one
(scripts that import this module start 0.3-0.4 s sooner)."""
from __future__ import annotations

import os
from pathlib import Path

from utils.files import atomic_write


def mel_figure(mel, title: str | None = None):
    """A matplotlib figure of a (n_mels, frames) mel (tensor or array)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = mel.detach().float().cpu().numpy() if hasattr(mel, "detach") else mel
    fig, ax = plt.subplots(figsize=(max(4, m.shape[1] / 50), 3))
    im = ax.imshow(m, aspect="auto", origin="lower", interpolation="none")
    fig.colorbar(im, ax=ax)
    ax.set_xlabel("frame (10 ms)")
    ax.set_ylabel("mel band")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save_mel_png(mel, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write the picture of a mel to `path` atomically."""
    fig = mel_figure(mel, title)
    import matplotlib.pyplot as plt
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)

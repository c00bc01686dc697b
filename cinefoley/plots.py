"""Figures the notebooks show: frame strips with windows and boxes, mels, histograms."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

Box = Sequence[int]  # (top, left, height, width)


def to_image(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 or float in [0, 1] -> (H, W, C) float for imshow."""
    x = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    x = x.transpose(1, 2, 0)
    return x / 255.0 if x.dtype == np.uint8 or x.max() > 1.0 else x


def frame_strip(axes, video, *, windows: Sequence[Box] | None = None, boxes: Sequence[Box] | None = None,
                label: str | None = None, window_colour: str = "white", box_colour: str = "lime") -> None:
    """Draw the frames of ``video`` (T, C, H, W) on a row of axes, with crop windows and object boxes."""
    for t, ax in enumerate(axes):
        ax.imshow(to_image(video[t]), interpolation="nearest")
        for boxes_, colour, style in ((windows, window_colour, "-"), (boxes, box_colour, "--")):
            if boxes_ is not None:
                top, left, h, w = boxes_[t]
                ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec=colour, lw=1.2, ls=style))
        ax.set_xticks([])
        ax.set_yticks([])
        if t == 0 and label:
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)


def paired_figure(rows: list[dict], *, frame_inches: float = 1.1):
    """One row per entry of ``rows`` (keys: video, label, optional windows/boxes)."""
    n_frames = rows[0]["video"].shape[0]
    fig, axes = plt.subplots(len(rows), n_frames, figsize=(frame_inches * n_frames + 1.2, frame_inches * len(rows)),
                             squeeze=False)
    for ax_row, row in zip(axes, rows):
        frame_strip(ax_row, row["video"], windows=row.get("windows"), boxes=row.get("boxes"), label=row.get("label"))
    fig.subplots_adjust(wspace=0.04, hspace=0.08, left=0.12, right=0.99, top=0.97, bottom=0.02)
    return fig


def mel_image(ax, mel: np.ndarray, *, events: Sequence[float] = (), duration: float | None = None,
              title: str | None = None) -> None:
    """A Diff-Foley mel (128, N) in [0, 1] with event onsets as vertical lines."""
    n = mel.shape[1]
    duration = duration or n * 256 / 16000
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1, extent=(0, duration, 0, 128))
    for e in events:
        ax.axvline(e, color="cyan", lw=0.8, ls="--")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    if title:
        ax.set_title(title, fontsize=10)

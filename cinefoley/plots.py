"""Figures the notebooks show, one function each: frame strips with windows and boxes, mels, loss curves,
Table 1 and Figures 5 and 6. They take numbers the package computed and only draw."""

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


def paired_figure(rows: list[dict], *, frame_inches: float = 1.1, max_frames: int | None = 8):
    """One row per entry of ``rows`` (keys: video, label, optional windows/boxes); long clips show
    ``max_frames`` evenly spaced frames."""
    pick = _pick(min(r["video"].shape[0] for r in rows), max_frames)
    fig, axes = plt.subplots(len(rows), len(pick), figsize=(frame_inches * len(pick) + 1.2, frame_inches * len(rows)),
                             squeeze=False)
    for ax_row, row in zip(axes, rows):
        sub = {k: (None if row.get(k) is None else [row[k][t] for t in pick]) for k in ("windows", "boxes")}
        frame_strip(ax_row, row["video"][pick], label=row.get("label"), **sub)
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


def _pick(n: int, max_frames: int | None) -> np.ndarray:
    """Evenly spaced frame indices, at most ``max_frames`` of ``n``."""
    if max_frames is None or n <= max_frames:
        return np.arange(n)
    return np.linspace(0, n - 1, max_frames).round().astype(int)


def clips_figure(clips, *, max_frames: int = 8):
    """A frame strip per :class:`~cinefoley.worlds.base.Clip`, with the sounding object's box when known."""
    return paired_figure([{"video": c.video, "label": f"{c.label}\n{c.clip_id[-11:]}", "boxes": c.boxes}
                          for c in clips], max_frames=max_frames)


def window_statistics(sets: dict, *, with_object: bool):
    """How much of the frame the CU / CM windows keep, and (with ground-truth boxes) how much of the
    sounding object stays in view."""
    import json

    fig, axes = plt.subplots(1, 2 if with_object else 1, figsize=(11 if with_object else 5.5, 3), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for kind, label in (("cu", "f_cu"), ("cm", "f_cm")):
        params = [json.loads(p) for p in sets[kind]["variation_params"]]
        area = np.array([p["r_h"] * p["r_w"] for p in params])
        axes[0, 0].hist(area, bins=bins, alpha=0.6, label=f"{label} (mean {area.mean():.2f})")
        if with_object:
            visible = sets[kind]["visible_fraction"].to_numpy(float)
            axes[0, 1].hist(visible, bins=bins, alpha=0.6, label=f"{label} (mean {visible.mean():.2f})")
    axes[0, 0].set_xlabel("share of the frame inside the window")
    if with_object:
        axes[0, 1].set_xlabel("visible share of the sounding object's box")
    for ax in axes[0]:
        ax.set_ylabel("test clips")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def mel_rows(rows: list[list[tuple[str, np.ndarray]]], *, events=None, width: float = 4.5):
    """A grid of mels, one list of (title, mel) per row (all at the same scale: mel bins x seconds, 0-1;
    a None mel leaves its place empty); ``events[i]`` (seconds) are drawn on row i."""
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(width * n_cols, 2.2 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            if j < len(row) and row[j][1] is not None:
                title, mel = row[j]
                mel_image(axes[i, j], np.asarray(mel, np.float32), events=(events or [()] * len(rows))[i] or (),
                          title=title)
            else:
                axes[i, j].axis("off")
    fig.tight_layout()
    return fig


def loss_curves(histories: dict[str, dict], *, main: str | None = None, smooth: int = 5):
    """L_p per step of every distillation run (a running mean over ``smooth`` steps)."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for name, h in histories.items():
        steps = np.asarray(h["step_loss"])
        curve = np.convolve(steps, np.ones(smooth) / smooth, mode="valid") if len(steps) > smooth else steps
        ax.plot(curve, lw=2.2 if name == main else 1, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(f"$L_p$ ({smooth}-step mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def feature_drift(curves: dict[str, tuple[np.ndarray, np.ndarray]], names: dict[str, str] | None = None):
    """Per test set: per-frame cosine to the teacher's full-clip features, teacher vs student."""
    fig, axes = plt.subplots(1, len(curves), figsize=(11, 3), sharey=True, squeeze=False)
    for ax, (kind, (before, after)) in zip(axes[0], curves.items()):
        ax.plot(before, "o-", ms=3, label="teacher T(x^f)")
        ax.plot(after, "o-", ms=3, label="student S(x^f)")
        ax.set_title((names or {}).get(kind, kind))
        ax.set_xlabel("frame (4 fps)")
    axes[0, 0].set_ylabel("cos to T(x) (full frame)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def table1_figure(table, metrics: Sequence[str], names: dict[str, str] | None = None):
    """Each metric of Table 1 per test set, baseline against ours, with the 95 % intervals.

    An interval is drawn from its ends, not as error bars around the estimate: a set-level metric (IS, KID)
    of a resample that repeats clips is biased, so its percentile interval can miss the full set's value.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.5 * len(metrics), 3), squeeze=False)
    axes = axes[0]
    kinds = list(dict.fromkeys(table.test_set))
    for ax, m in zip(axes, metrics):
        for j, system in enumerate(("baseline", "ours")):
            t = table[table.system == system]
            x = np.arange(len(t)) + (j - 0.5) * 0.3
            dots = ax.plot(x, t[m], "o", label=system)
            ax.vlines(x, t[f"{m}_lo"], t[f"{m}_hi"], color=dots[0].get_color())
        ax.set_xticks(range(len(kinds)), [(names or {}).get(k, k) for k in kinds], fontsize=8)
        ax.set_title(m)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def per_class_gain_figure(gain, *, top: int = 25, ylabel: str = "Align Acc gain (points)"):
    """Figure 5: the Align Acc gain of each class (the first ``top`` by gain)."""
    shown = gain.head(top)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(shown)), 3))
    ax.bar(shown.index, shown["gain"], color=["tab:green" if g > 0 else "tab:red" for g in shown["gain"]])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    return fig


def gradcam_figure(frames, maps: dict[str, np.ndarray], mel: np.ndarray, *, events: Sequence[float] = (),
                   title: str = "", row_names: dict[str, str] | None = None, max_frames: int = 8):
    """Figure 6: the frames the encoders see, each encoder's Grad-CAM over them, the real sound below."""
    pick = _pick(len(frames), max_frames)
    fig = plt.figure(figsize=(1.3 * len(pick), 4.6))
    grid = fig.add_gridspec(len(maps) + 2, len(pick), height_ratios=[1] * (len(maps) + 1) + [1.1])
    for col, t in enumerate(pick):
        image = to_image(frames[t])
        for row, (name, m) in enumerate([("input", None), *maps.items()]):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(image)
            if m is not None:
                ax.imshow(m[t], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel((row_names or {}).get(name, name), fontsize=9)
    mel_image(fig.add_subplot(grid[-1, :]), mel, events=events, title=title)
    fig.tight_layout()
    return fig


def preference_figure(result):
    """Table 2 per clip (share preferring ours, Wilson 95 %) and per participant (grey: excluded)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw=dict(width_ratios=[2, 1]))
    clip = result.per_clip
    err = [clip["share Ours"] - clip["wilson_low"], clip["wilson_high"] - clip["share Ours"]]
    axes[0].bar(range(len(clip)), clip["share Ours"], yerr=err, capsize=3, color="tab:orange")
    axes[0].set_xticks(range(len(clip)), clip.index, rotation=60, fontsize=7)
    axes[0].set_title("per clip: share preferring Ours (Wilson 95 %)")
    pp = result.per_participant
    axes[1].bar(range(len(pp)), pp["share Ours"], color=["tab:gray" if x else "tab:orange" for x in pp["excluded"]])
    axes[1].set_xticks(range(len(pp)), pp.index, rotation=60, fontsize=7)
    axes[1].set_title("per participant (grey: excluded)")
    for ax in axes:
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_ylim(0, 1.05)
    fig.tight_layout()
    return fig

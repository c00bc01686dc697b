"""Deterministic close-up and camera-move test sets (the paper's VGG-CU and VGG-CM).

Each clip's variation is derived from a hash of (clip id, kind, seed), so the same clip gets the
same window whatever subset of the dataset a user has. The parameters are written into the test
manifest (column ``variation_params``, JSON of :class:`~cinefoley.variations.VariationParams`),
together with how much of the sounding object stays in view when the manifest has ground-truth
boxes (CineToy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cinefoley.utils import atomic_write_bytes
from cinefoley.variations import VariationParams, params_for_clip, visible_fraction

#: The paper's three test sets: the clips as they are (VGGSound), close-ups (VGG-CU), camera moves (VGG-CM).
TEST_SETS = ("original", "cu", "cm")
KIND_NAMES = {"cu": "close_up", "cm": "camera_move"}


def variation_testset(df: pd.DataFrame, kind: str, *, seed: int = 0, a1: float = 0.4, a2: float = 0.6,
                      n_frames: int | None = None, height: int | None = None,
                      width: int | None = None) -> pd.DataFrame:
    """The manifest ``df`` with one variation per clip (``kind`` ∈ {"cu", "cm"}).

    Windows are placed on each clip's own frame size (``height``/``width`` columns, else the
    arguments); ``n_frames`` likewise.
    """
    if kind not in KIND_NAMES:
        raise ValueError(f"kind must be 'cu' or 'cm', got {kind!r}")
    out = df.copy()
    params, visible = [], []
    for _, row in df.iterrows():
        t = int(row["n_frames"]) if "n_frames" in row and pd.notna(row.get("n_frames")) else n_frames
        h = int(row["height"]) if "height" in row and pd.notna(row.get("height")) else height
        w = int(row["width"]) if "width" in row and pd.notna(row.get("width")) else width
        if None in (t, h, w):
            raise ValueError(f"clip {row['clip_id']}: frame count and size unknown; pass n_frames/height/width")
        p = params_for_clip(str(row["clip_id"]), KIND_NAMES[kind], t, h, w, seed=seed, a1=a1, a2=a2)
        params.append(p.to_json())
        if "boxes" in row and isinstance(row["boxes"], str):
            boxes = json.loads(row["boxes"])
            visible.append(float(np.mean([visible_fraction(tuple(b), win) for b, win in zip(boxes, p.boxes)])))
        else:
            visible.append(np.nan)
    out["variation"] = kind
    out["variation_seed"] = seed
    out["variation_params"] = params
    out["visible_fraction"] = visible
    out.attrs = df.attrs
    return out


def load_params(row: pd.Series) -> VariationParams | None:
    """The variation of a test-manifest row (None for an original clip)."""
    text = row.get("variation_params")
    return VariationParams.from_json(text) if isinstance(text, str) and text else None


def write_testsets(manifest: pd.DataFrame, out_dir: str | Path, *, split: str = "test", seed: int = 0,
                   a1: float = 0.4, a2: float = 0.6) -> dict[str, Path]:
    """Write ``test_original.csv``, ``test_cu.csv`` and ``test_cm.csv`` next to each other.

    Paths in them are made absolute so the manifests can live anywhere.
    """
    out_dir = Path(out_dir)
    rows = manifest[manifest["split"] == split].copy() if "split" in manifest else manifest.copy()
    root = Path(manifest.attrs.get("root", "."))
    for col in ("video_path", "audio_path"):
        if col in rows:
            rows[col] = [str(p if Path(p).is_absolute() else (root / p).resolve()) if isinstance(p, str) else p
                         for p in rows[col]]
    paths = {"original": out_dir / f"{split}_original.csv"}
    original = rows.assign(variation="original", variation_seed=seed, variation_params="", visible_fraction=1.0)
    atomic_write_bytes(paths["original"], original.to_csv(index=False).encode())
    for kind in ("cu", "cm"):
        paths[kind] = out_dir / f"{split}_{kind}.csv"
        atomic_write_bytes(paths[kind], variation_testset(rows, kind, seed=seed, a1=a1, a2=a2)
                           .to_csv(index=False).encode())
    return paths

"""Deterministic close-up and camera-move test sets (the paper's VGG-CU and VGG-CM).

Each clip's *recipe* is derived from a hash of (clip id, kind, seed), so the same clip gets the
same window whatever subset of the dataset a user has. A recipe is resolution-free (:func:`recipe`:
window sizes and places as fractions of the frame, the camera move's direction) and is placed on
each video's own size (:func:`place`). The project ships the recipes of VGGSound's official test
list in ``data_manifests/`` (:data:`VGGSOUND_RECIPES`), so VGG-CU / VGG-CM stay pinned whatever
changes in the RNG, and those of CineToy's test clips (:data:`CINETOY_RECIPES`). The placed parameters are written into the test manifest (column
``variation_params``, JSON of :class:`~cinefoley.variations.VariationParams`), together with how much
of the sounding object stays in view when the manifest has ground-truth boxes (CineToy).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cinefoley.utils import atomic_write_bytes
from cinefoley.variations import VariationParams, params_for_clip, resolve, visible_fraction

#: The paper's three test sets: the clips as they are (VGGSound), close-ups (VGG-CU), camera moves (VGG-CM).
TEST_SETS = ("original", "cu", "cm")
KIND_NAMES = {"cu": "close_up", "cm": "camera_move"}
#: The recipes the project ships: ``data_manifests/`` of the repository (beside the package).
RECIPES_DIR = Path(__file__).resolve().parents[1] / "data_manifests"
VGGSOUND_RECIPES = RECIPES_DIR / "vggsound_test_recipes.csv.gz"
CINETOY_RECIPES = RECIPES_DIR / "cinetoy_test_recipes.csv.gz"
RECIPE_COLUMNS = ("clip_id", "cu_r_h", "cu_r_w", "cu_u_top", "cu_u_left", "cm_r_h", "cm_r_w", "cm_reverse",
                  "cm_square_axis", "cm_square_reverse")


def recipe(clip_id: str, *, seed: int = 0, a1: float = 0.4, a2: float = 0.6) -> dict:
    """The resolution-free close-up and camera move of a clip, from a hash of (clip id, kind, seed).

    ``cu_r_h``/``cu_r_w`` (and ``cm_*``): window height and width as fractions of the frame's;
    ``cu_u_top``/``cu_u_left``: where the close-up sits, as a fraction of the room left above and
    beside it; the camera move runs along the frame's longer side, from the top/left edge unless
    ``cm_reverse``, and on a square frame along ``cm_square_axis`` (``cm_square_reverse``).
    """
    draw = dict(seed=seed, a1=a1, a2=a2)
    cu = params_for_clip(clip_id, "close_up", 1, 3, 4, **draw)
    cm = params_for_clip(clip_id, "camera_move", 1, 3, 4, **draw)  # a landscape frame
    square = params_for_clip(clip_id, "camera_move", 1, 4, 4, **draw)
    return {"clip_id": clip_id, "cu_r_h": cu.r_h, "cu_r_w": cu.r_w, "cu_u_top": cu.u_top, "cu_u_left": cu.u_left,
            "cm_r_h": cm.r_h, "cm_r_w": cm.r_w, "cm_reverse": int(cm.reverse), "cm_square_axis": square.axis,
            "cm_square_reverse": int(square.reverse)}


def place(rec, kind: str, n_frames: int, height: int, width: int) -> VariationParams:
    """A recipe (:func:`recipe`, or a row of the shipped recipes) placed on a clip of the given size."""
    if kind == "cu":
        return resolve("close_up", rec["cu_r_h"], rec["cu_r_w"], rec["cu_u_top"], rec["cu_u_left"], None, False,
                       n_frames, height, width)
    if height == width:
        axis, reverse = rec["cm_square_axis"], rec["cm_square_reverse"]
    else:
        axis, reverse = ("horizontal" if width > height else "vertical"), rec["cm_reverse"]
    return resolve("camera_move", rec["cm_r_h"], rec["cm_r_w"], 0.5, 0.5, axis, bool(reverse), n_frames, height, width)


def recipes_table(clip_ids, **draw) -> pd.DataFrame:
    """:func:`recipe` of every clip, one row each (``draw``: seed, a1, a2)."""
    return pd.DataFrame([recipe(str(c), **draw) for c in clip_ids], columns=list(RECIPE_COLUMNS))


def write_recipes(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a recipes table as CSV, gzipped with no time stamp when the name ends in .gz (same table, same bytes)."""
    path = Path(path)
    data = table.to_csv(index=False, lineterminator="\n").encode()
    return atomic_write_bytes(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def read_recipes(path: str | Path = VGGSOUND_RECIPES) -> pd.DataFrame:
    """A recipes table (as :func:`write_recipes` writes it), indexed by clip id; floats read back exactly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no test-set recipes here (data_manifests/ of the cinefoley repository)")
    table = pd.read_csv(path, dtype={"clip_id": str, "cm_square_axis": str}, keep_default_na=False,
                        float_precision="round_trip")
    missing = [c for c in RECIPE_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"{path}: not a test-set recipes table, it lacks the columns {missing}")
    return table.set_index("clip_id", drop=False)


def variation_testset(df: pd.DataFrame, kind: str, *, seed: int = 0, a1: float = 0.4, a2: float = 0.6,
                      n_frames: int | None = None, height: int | None = None, width: int | None = None,
                      recipes: pd.DataFrame | None = None) -> pd.DataFrame:
    """The manifest ``df`` with one variation per clip (``kind`` ∈ {"cu", "cm"}).

    Each clip's recipe is its row of ``recipes`` (:func:`read_recipes`) when there is one, else
    :func:`recipe` with ``seed``, ``a1``, ``a2``. Windows are placed on each clip's own frame size
    (``height``/``width`` columns, else the arguments); ``n_frames`` likewise.
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
        cid = str(row["clip_id"])
        rec = recipes.loc[cid] if recipes is not None and cid in recipes.index else recipe(cid, seed=seed, a1=a1,
                                                                                          a2=a2)
        p = place(rec, kind, t, h, w)
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
                   a1: float = 0.4, a2: float = 0.6, recipes: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``test_original.csv``, ``test_cu.csv`` and ``test_cm.csv`` next to each other.

    ``recipes``: shipped recipes to use for the clips they list (see :func:`variation_testset`).
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
        atomic_write_bytes(paths[kind], variation_testset(rows, kind, seed=seed, a1=a1, a2=a2, recipes=recipes)
                           .to_csv(index=False).encode())
    return paths

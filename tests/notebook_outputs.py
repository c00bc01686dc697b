"""Reading an executed notebook's outputs (test helpers)."""

from __future__ import annotations

from pathlib import Path

import nbformat


def code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def shows(cell, kind: str) -> bool:
    """Did the cell show a figure (``"figure"``: a PNG) or a table (``"table"``: HTML)?"""
    mime = {"figure": "image/png", "table": "text/html"}[kind]
    return any(mime in o.get("data", {}) for o in cell.get("outputs", []))


def errors(path: Path) -> list:
    return [o for c in code_cells(path) for o in c.get("outputs", []) if o.output_type == "error"]


def drawn_share(png: Path) -> float:
    """The share of a saved figure's pixels in colour (channel spread > 0.25): marks, images and heat maps.

    An empty figure (white, black and grey only: axes, ticks, titles) scores 0 however many bytes it has.
    """
    import matplotlib.image

    rgb = matplotlib.image.imread(png)[..., :3]
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.25).mean())

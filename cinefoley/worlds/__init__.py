"""The two worlds behind one interface (:class:`~cinefoley.worlds.base.World`): ``cinetoy`` (the built-in
procedural world, :mod:`cinefoley.worlds.cinetoy`) and ``vggsound`` (the real tier: VGGSound videos and
Diff-Foley's checkpoints, :mod:`cinefoley.worlds.vggsound`).

A notebook opens its world with :func:`open_world` from its parameters and never asks again which
world it is in. The parameters of a run folder are remembered in ``<out_dir>/world.json``: the real
tier's paths given to notebook 01 or 02 need not be repeated in later notebooks.
"""

from __future__ import annotations

import json
from pathlib import Path

from cinefoley.utils import atomic_write_json
from cinefoley.testsets import TEST_SETS
from cinefoley.worlds.base import Clip, RunSettings, World

WORLDS = ("cinetoy", "vggsound")
#: Parameters only the real tier takes (None on CineToy).
REAL_TIER_OPTIONS = ("vggsound_csv", "video_dir", "cavp_ckpt", "ldm_ckpt", "classifier_ckpt", "panns_ckpt",
                     "vggish_ckpt", "model_options", "num_workers", "frames_dir")


def open_world(world: str = "cinetoy", out_dir: str | Path = "runs/demo", *, profile: str = "demo", seed: int = 0,
               **options) -> World:
    """The world ``world`` for the run folder ``out_dir``.

    ``options`` are the real tier's (:data:`REAL_TIER_OPTIONS`, e.g. ``cavp_ckpt="ckpt/cavp_epoch66.ckpt"``);
    a None value means "as given before for this folder" (read from ``<out_dir>/world.json``).
    """
    if world not in WORLDS:
        raise ValueError(f"world must be one of {WORLDS}, got {world!r}")
    unknown = sorted(set(options) - set(REAL_TIER_OPTIONS))
    if unknown:
        raise TypeError(f"open_world() got unknown options {unknown}; known: {REAL_TIER_OPTIONS}")
    out = Path(out_dir)
    record_path = out / "world.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record and record.get("world") != world:
        raise ValueError(f"{out}: this run folder holds a {record.get('world')!r} run; open it with "
                         f"world={record.get('world')!r} or choose another out_dir")
    remembered = record.get("options", {})
    given = {k: (str(Path(v).resolve()) if k.endswith(("_csv", "_dir", "_ckpt")) else v)
             for k, v in options.items() if v is not None}
    if world == "cinetoy":
        if given:
            raise ValueError(f"{sorted(given)} are the real tier's parameters; world='cinetoy' takes none of them")
        from cinefoley.worlds.cinetoy.world import CineToyWorld

        opened: World = CineToyWorld(out, profile, seed=seed)
    else:
        from cinefoley.worlds.vggsound.world import VGGSoundWorld

        merged = {**remembered, **given}
        opened = VGGSoundWorld(out, profile, seed=seed, **merged)
        record["options"] = merged
    atomic_write_json(record_path, {**record, "world": world, "profile": profile, "seed": seed})
    return opened


__all__ = ["TEST_SETS", "WORLDS", "Clip", "RunSettings", "World", "open_world"]

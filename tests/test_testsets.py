"""Deterministic CU/CM test sets: windows from a hash of (clip id, seed), written into the manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cinefoley.media.clips import read_manifest
from cinefoley.testsets import load_params, variation_testset, write_testsets
from cinefoley.worlds.cinetoy.render import WorldConfig, build_world
from cinefoley.variations import params_for_clip


@pytest.fixture(scope="module")
def world_manifest(tiny_world):
    return read_manifest(tiny_world / "manifest.csv")


@pytest.fixture(scope="module")
def testsets(tmp_path_factory, world_manifest):
    out = tmp_path_factory.mktemp("testsets")
    paths = write_testsets(world_manifest, out, seed=0)
    return {k: pd.read_csv(p) for k, p in paths.items()}, paths


def test_writes_original_cu_and_cm_manifests_with_absolute_paths(testsets, world_manifest, tiny_world):
    sets, paths = testsets
    assert set(paths) == {"original", "cu", "cm"}
    assert [p.name for p in paths.values()] == ["test_original.csv", "test_cu.csv", "test_cm.csv"]
    test_ids = list(world_manifest.loc[world_manifest["split"] == "test", "clip_id"])
    for kind, df in sets.items():
        assert list(df["clip_id"]) == test_ids
        for col in ("video_path", "audio_path"):
            assert all(Path(p).is_absolute() and Path(p).exists() for p in df[col])
            assert all(Path(p).is_relative_to(tiny_world.resolve()) for p in df[col])
    assert (sets["original"]["variation"] == "original").all()
    assert sets["original"]["variation_params"].isna().all()
    assert (sets["original"]["visible_fraction"] == 1.0).all()
    for kind, name in (("cu", "close_up"), ("cm", "camera_move")):
        df = sets[kind]
        assert (df["variation"] == kind).all() and (df["variation_seed"] == 0).all()
        params = [load_params(row) for _, row in df.iterrows()]
        assert all(p.kind == name and (p.n_frames, p.height, p.width) == (8, 64, 64) for p in params)
        assert df["visible_fraction"].between(0, 1).all()
    assert all(load_params(row) is None for _, row in sets["original"].iterrows())


def test_params_in_the_manifest_are_the_hashed_draws(testsets):
    sets, _ = testsets
    for kind, name in (("cu", "close_up"), ("cm", "camera_move")):
        for _, row in sets[kind].iterrows():
            assert load_params(row) == params_for_clip(row["clip_id"], name, 8, 64, 64, seed=0)


def test_a_clip_gets_the_same_window_in_any_subset(world_manifest):
    test = world_manifest[world_manifest["split"] == "test"]
    full = variation_testset(test, "cu", seed=0).set_index("clip_id")
    subset = variation_testset(test.iloc[[4, 1]], "cu", seed=0).set_index("clip_id")
    for clip_id, row in subset.iterrows():
        assert row["variation_params"] == full.loc[clip_id, "variation_params"]
        assert row["visible_fraction"] == full.loc[clip_id, "visible_fraction"]


def test_another_seed_gives_other_windows(world_manifest):
    test = world_manifest[world_manifest["split"] == "test"]
    for kind in ("cu", "cm"):
        a, b = variation_testset(test, kind, seed=0), variation_testset(test, kind, seed=1)
        assert all(x != y for x, y in zip(a["variation_params"], b["variation_params"]))
        assert (b["variation_seed"] == 1).all()


def _visible_by_masks(boxes, windows, size=64) -> float:
    shares = []
    for (ot, ol, oh, ow), (wt, wl, wh, ww) in zip(boxes, windows):
        obj = np.zeros((size, size), bool)
        obj[ot:ot + oh, ol:ol + ow] = True
        win = np.zeros((size, size), bool)
        win[wt:wt + wh, wl:wl + ww] = True
        shares.append((obj & win).sum() / obj.sum())
    return float(np.mean(shares))


@pytest.mark.parametrize("kind", ["cu", "cm"])
def test_visible_fraction_is_the_share_of_the_box_in_the_window(testsets, kind):
    df = testsets[0][kind]
    for _, row in df.iterrows():
        expected = _visible_by_masks(json.loads(row["boxes"]), load_params(row).boxes)
        assert row["visible_fraction"] == pytest.approx(expected)
    assert df["visible_fraction"].max() > 0  # the windows are where the objects can be


def test_frame_size_comes_from_the_manifest_or_the_arguments(world_manifest):
    test = world_manifest[world_manifest["split"] == "test"].drop(columns=["height", "width", "n_frames", "boxes"])
    with pytest.raises(ValueError, match="n_frames/height/width"):
        variation_testset(test, "cm")
    df = variation_testset(test, "cm", n_frames=32, height=224, width=398)
    params = load_params(df.iloc[0])
    assert (params.n_frames, params.height, params.width, params.axis) == (32, 224, 398, "horizontal")
    assert df["visible_fraction"].isna().all()
    with pytest.raises(ValueError, match="'cu' or 'cm'"):
        variation_testset(test, "zoom", n_frames=8, height=64, width=64)


def test_paths_are_resolved_against_the_manifest_folder(tmp_path, tiny_world):
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    df = pd.read_csv(tiny_world / "manifest.csv")
    for col in ("video_path", "audio_path"):
        df[col] = [os.path.relpath(tiny_world / p, elsewhere) for p in df[col]]
    df.to_csv(elsewhere / "manifest.csv", index=False)
    paths = write_testsets(read_manifest(elsewhere / "manifest.csv"), tmp_path / "out", seed=3)
    cm = pd.read_csv(paths["cm"])
    first = pd.read_csv(tiny_world / "manifest.csv").query("split == 'test'").iloc[0]
    assert cm.loc[0, "video_path"] == str((tiny_world / first["video_path"]).resolve())
    assert cm.loc[0, "audio_path"] == str((tiny_world / first["audio_path"]).resolve())


def test_the_manifest_build_world_returns_works_from_any_folder(tmp_path, monkeypatch):
    manifest = build_world(tmp_path / "world", WorldConfig(n_train=0, n_val=0, n_test=2), progress=False)
    monkeypatch.chdir(tmp_path)
    paths = write_testsets(manifest, tmp_path / "sets")
    cu = pd.read_csv(paths["cu"])
    assert all(Path(p).exists() for p in cu["video_path"])


# ------------------------------------------------------------------------------------ shipped recipes

def test_a_recipe_placed_on_any_frame_is_the_hashed_draw():
    from cinefoley.testsets import KIND_NAMES, place, recipe

    for cid in ("c000", "c001", "0_8-g2rof7E_000049", "---g-f_I2yQ_000001"):
        rec = recipe(cid, seed=2)
        for kind in ("cu", "cm"):
            for shape in ((8, 64, 64), (40, 360, 640), (40, 640, 360), (3, 101, 99)):
                assert place(rec, kind, *shape) == params_for_clip(cid, KIND_NAMES[kind], *shape, seed=2)


def shipped_list(tmp_path: Path) -> Path:
    """The official test list carried by the shipped VGGSound recipes, written back in its own format."""
    import csv

    from cinefoley.testsets import read_recipes

    shipped = read_recipes()
    path = tmp_path / "test.csv"
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows((f"{c}.mp4", label)
                                                     for c, label in zip(shipped["clip_id"], shipped["label"]))
    return path


def test_the_shipped_vggsound_recipes_regenerate_byte_for_byte(tmp_path):
    """data_manifests/vggsound_test_recipes.csv.gz is what the recipe gives for the list it carries: the windows
    of VGG-CU / VGG-CM are pinned, and a change of RNG or code that moves one of them fails here."""
    from cinefoley.testsets import VGGSOUND_RECIPES, write_recipes
    from cinefoley.worlds.vggsound.testsets import vggsound_recipes

    again = write_recipes(vggsound_recipes(shipped_list(tmp_path)), tmp_path / "again.csv.gz")
    assert again.read_bytes() == VGGSOUND_RECIPES.read_bytes()
    assert VGGSOUND_RECIPES.stat().st_size < 2_000_000


def test_the_shipped_cinetoy_recipes_regenerate_byte_for_byte_and_make_the_world_s_test_sets(tmp_path):
    from cinefoley.testsets import CINETOY_RECIPES, KIND_NAMES, read_recipes, write_recipes
    from cinefoley.worlds.cinetoy.world import cinetoy_recipes

    again = write_recipes(cinetoy_recipes(), tmp_path / "again.csv.gz")
    assert again.read_bytes() == CINETOY_RECIPES.read_bytes()
    shipped = read_recipes(CINETOY_RECIPES)
    assert len(shipped) == 1000 and shipped.index[0] == "cinetoy_test_00000"
    # the shipped rows are used: a changed row changes the window
    shipped.loc["cinetoy_test_00000", ["cu_r_h", "cu_r_w", "cu_u_top", "cu_u_left"]] = [0.5, 0.25, 0.0, 1.0]
    df = pd.DataFrame({"clip_id": ["cinetoy_test_00000", "cinetoy_test_00001"], "n_frames": 8, "height": 64,
                       "width": 64})
    cu = variation_testset(df, "cu", recipes=shipped)
    assert load_params(cu.iloc[0]).boxes[0] == (0, 48, 32, 16)
    assert load_params(cu.iloc[1]) == params_for_clip("cinetoy_test_00001", KIND_NAMES["cu"], 8, 64, 64)


def test_the_shipped_recipes_carry_vggsound_s_official_test_list(tmp_path):
    from cinefoley.testsets import read_recipes
    from cinefoley.worlds.vggsound.manifest import read_vggsound_csv

    clips = read_vggsound_csv(shipped_list(tmp_path))
    assert len(clips) == 15446 and {c.split for c in clips} == {"test"}
    assert len({c.label for c in clips}) == 309
    by_id = {c.clip_id: c for c in clips}
    heart = by_id["0_8-g2rof7E_000049"]
    assert (heart.youtube_id, heart.start_s, heart.label) == ("0_8-g2rof7E", 49, "heart sounds, heartbeat")
    assert sum("_" in c.youtube_id for c in clips) > 1000
    first = read_recipes().iloc[0]  # pinned by value: glLQrEijrKg_000300, the list's first clip
    assert (first.clip_id, first.label) == ("glLQrEijrKg_000300", "playing hammond organ")
    assert (first.cu_r_h, first.cm_square_axis) == (0.5402840698229154, "vertical")


def test_unreadable_recipes_name_the_file(tmp_path):
    from cinefoley.testsets import read_recipes

    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        read_recipes(tmp_path / "nothing.csv")
    (tmp_path / "other.csv").write_text("clip_id,label\na,b\n")
    with pytest.raises(ValueError, match=r"other.csv: not a test-set recipes table.*cu_r_h"):
        read_recipes(tmp_path / "other.csv")

"""Shared fixtures: one tiny CineToy world per test session (16 clips, about 2 s to build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinefoley.data.toyworld import WorldConfig, build_world

TINY_WORLD = WorldConfig(n_train=8, n_val=2, n_test=6)


@pytest.fixture(scope="session")
def tiny_world_config() -> WorldConfig:
    """The tiny world's config (demo-sized clips: 2.048 s, 8 frames at 4 fps, 64 px)."""
    return TINY_WORLD


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, tiny_world_config) -> Path:
    """Root folder of a built tiny CineToy world (``manifest.csv``, ``train/``, ``val/``, ``test/``).

    Shared by the whole session: tests that change files must copy it first.
    """
    root = tmp_path_factory.mktemp("cinetoy")
    build_world(root, tiny_world_config, progress=False)
    return root

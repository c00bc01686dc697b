"""Shared fixtures: one tiny CineToy world per test session (16 clips, about 2 s to build), the notebook runs
of both worlds, and Debian's Chromium for the browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinefoley.worlds.cinetoy.render import WorldConfig, build_world

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


@pytest.fixture(scope="session")
def cinetoy_smoke_run(tmp_path_factory):
    """The seven notebooks on CineToy under the smoke profile: (out_dir, seconds per notebook)."""
    from cinefoley.reproduce import run_notebooks

    out = tmp_path_factory.mktemp("smoke_run")
    return out, run_notebooks("smoke", out)


@pytest.fixture(scope="session")
def vggsound_smoke_run(tmp_path_factory):
    """The seven notebooks with world="vggsound" under the smoke profile, on VGGSound-shaped synthetic
    videos and small random checkpoints in the released formats: (out_dir, seconds per notebook)."""
    from diff_foley_files import REAL_TIER_OPTIONS, write_real_tier_checkpoints
    from synthetic_vggsound import write_vggsound

    from cinefoley.reproduce import run_notebooks

    data = tmp_path_factory.mktemp("vggsound_data")
    # 8.5 s at 4 fps with sound: Align Acc scores 8.192 s (32 feature frames, 512 mel frames)
    write_vggsound(data, seconds=8.5, fps=4.0, audio=True)
    ckpts = write_real_tier_checkpoints(data / "diff_foley_ckpt")
    out = tmp_path_factory.mktemp("vggsound_run")
    timings = run_notebooks("smoke", out, extra_parameters={
        "world": "vggsound", "vggsound_csv": str(data / "vggsound.csv"), "video_dir": str(data / "videos"),
        "cavp_ckpt": str(ckpts["cavp"]), "ldm_ckpt": str(ckpts["ldm"]), "classifier_ckpt": str(ckpts["eval_classifier"]),
        "panns_ckpt": str(ckpts["panns"]), "vggish_ckpt": str(ckpts["vggish"]),
        "model_options": REAL_TIER_OPTIONS, "num_workers": 1})
    return out, timings


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                  "--disable-backgrounding-occluded-windows"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (``scripts/install_browser.sh``; Playwright downloads no browser)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run scripts/install_browser.sh"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()

"""The shipped CineToy models on held-out clips of the demo world (rendered here, never trained on): the
Align Acc referee accepts real aligned sound and rejects wrong timing and wrong class; G's sound on full
frames is aligned and of the right class, and its timing comes from the features. Thresholds sit well
under what `make demo` measured (02_checks.json: 96.7 / 100 / 83.3 %; G 90 % aligned, 80 % class)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from cinefoley.distill import encode
from cinefoley.generate import GenerationConfig, sample_mels
from cinefoley.media.clips import load_split
from cinefoley.metrics import align_acc
from cinefoley.metrics.referees import alignment_probs
from cinefoley.models.cinetoy.referees import classification_accuracy
from cinefoley.models.model_io import load_model
from cinefoley.worlds.cinetoy.render import build_world, other_class_mels
from cinefoley.worlds.cinetoy.world import PROFILES, SHIPPED

pytestmark = pytest.mark.slow
N_TEST = 40


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """The demo world's first 40 test clips (the same plans, seeds and renderer) and the shipped models."""
    cfg = replace(PROFILES["demo"].world, n_train=1, n_val=1, n_test=N_TEST)
    manifest = build_world(tmp_path_factory.mktemp("world"), cfg, progress=False)
    test = load_split(manifest, "test", n_frames=int(cfg.duration * 4), size=cfg.size, progress=False)
    models = {n: load_model(SHIPPED / f"{n}.pt") for n in ("teacher", "generator", "align_classifier",
                                                            "audio_classifier")}
    with torch.no_grad():
        feats = encode(models["teacher"], test.videos)
    return cfg, test, feats, models


def called_aligned(models, mels, feats) -> float:
    return align_acc(alignment_probs(models["align_classifier"], np.asarray(mels), feats))


def test_the_referee_accepts_real_aligned_sound_and_rejects_wrong_timing_and_class(held_out):
    cfg, test, feats, models = held_out
    assert called_aligned(models, test.mels, feats) >= 0.85
    assert called_aligned(models, test.mels, feats.roll(2, dims=1)) <= 0.15  # the video 0.5 s late
    assert called_aligned(models, test.mels, feats.roll(1, dims=0)) <= 0.15  # another clip's video
    wrong_class = other_class_mels(cfg, test.clip_ids)  # the same onsets, another class's sound
    assert called_aligned(models, wrong_class, feats) <= 0.4


def test_g_on_full_frames_is_aligned_of_the_right_class_and_timed_by_its_features(held_out):
    _, test, feats, models = held_out
    gen_cfg = GenerationConfig(steps=25, batch_size=N_TEST)
    seeds = list(range(N_TEST))
    with torch.no_grad():
        mels = sample_mels(models["generator"], feats, seeds, gen_cfg)
        shuffled = sample_mels(models["generator"], feats[:, torch.randperm(feats.shape[1],
                                                                            generator=torch.Generator().manual_seed(0))],
                               seeds, gen_cfg)
    aligned = called_aligned(models, mels, feats)
    assert aligned >= 0.7
    assert classification_accuracy(models["audio_classifier"], mels, torch.as_tensor(test.labels)) >= 0.6
    # the frames' order is the timing: sound made from shuffled frames no longer fits the real video
    assert called_aligned(models, shuffled, feats) <= aligned - 0.3
    assert np.isfinite(mels.numpy()).all()

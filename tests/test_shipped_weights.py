"""The weights shipped in cinefoley/weights load into the current code, fit each other and the demo world,
and their record (weights.json) matches the code and world configuration that the demo profile makes."""

import json
from dataclasses import asdict

import torch

from cinefoley.generate import GenerationConfig, sample_mels
from cinefoley.metrics.referees import Referees
from cinefoley.models.model_io import load_model
from cinefoley.worlds.cinetoy.render import CLASSES
from cinefoley.worlds.cinetoy.world import MODEL_NAMES, PROFILES, SHIPPED, CineToyWorld

DEMO = PROFILES["demo"]


def as_json(obj):
    return json.loads(json.dumps(obj))


def test_the_record_is_the_demo_profile_s_world_and_stages(tmp_path):
    record = json.loads((SHIPPED / "weights.json").read_text())
    assert record["world"] == as_json(asdict(DEMO.world))
    # the stages that train the shipped models (the later ones, distillation and evaluation, do not)
    for stage in ("pretrain_epochs", "generator_steps", "evaluator_epochs", "align_epochs"):
        assert record["stages"][stage] == getattr(DEMO, stage), stage
    assert record["seed"] == 0 and set(record["final_losses"]) == {"teacher", "generator"}
    assert CineToyWorld(tmp_path, "demo").shipped_weights_match()
    assert not CineToyWorld(tmp_path, "smoke").shipped_weights_match()


def test_the_six_models_load_and_fit_the_demo_world(tmp_path):
    models = {name: load_model(SHIPPED / f"{name}.pt") for name in MODEL_NAMES}  # classes, configs, keys, shapes
    n_frames = int(DEMO.world.duration * 4 + 1e-6)
    video = torch.randint(0, 256, (2, n_frames, 3, DEMO.world.size, DEMO.world.size), dtype=torch.uint8)
    with torch.no_grad():
        feats = models["teacher"](video.flatten(0, 1).float().div(255).unflatten(0, (2, n_frames)))
    assert feats.shape[:2] == (2, n_frames) and torch.isfinite(feats).all()
    cfg = GenerationConfig(steps=2, batch_size=2)
    mels = sample_mels(models["generator"], feats, [1, 2], cfg)
    assert mels.shape == (2, 128, int(DEMO.world.duration * 62.5)) and torch.isfinite(mels).all()
    referees = Referees.cinetoy(models["audio_classifier"], models["frame_embedder"], models["align_classifier"],
                                cache_dir=tmp_path)
    probs = referees.align_prob(mels.numpy(), feats)
    assert probs.shape == (2,) and ((0 <= probs) & (probs <= 1)).all()
    with torch.no_grad():
        logits = models["audio_classifier"](mels)
    assert logits.shape == (2, len(CLASSES))

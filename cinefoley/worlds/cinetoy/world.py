"""The CineToy world: a procedural audio-visual world the package renders, with models it trains itself.

Its clips (:mod:`cinefoley.worlds.cinetoy.render`) are written as mp4 + wav with a manifest and held in
memory for training (2.048-s clips of 64 px: 8 frames at 4 fps, a 128 x 128 Diff-Foley mel). The
models are small stand-ins (:mod:`cinefoley.models.cinetoy`) trained on its train split: the teacher
with its audio encoder (CAVP-style pretraining), the generator G and the three referees. The ``demo``
profile starts from the weights shipped in ``cinefoley/weights/`` (trained by exactly this code on the
demo world, seed 0) unless asked to retrain; ``smoke`` always trains tiny models.

What it has that VGGSound lacks: the sounding object's box in every frame and the event onsets.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cinefoley.distill import distill, encode
from cinefoley.media.clips import ClipTensors, load_split, read_manifest
from cinefoley.metrics.referees import Referees
from cinefoley.metrics.scores import align_acc
from cinefoley.models.cinetoy.generator import GeneratorTrainConfig, ToyLDM, ToyLDMConfig, train_generator
from cinefoley.models.cinetoy.pretrain import PretrainConfig, pretrain
from cinefoley.models.cinetoy.referees import (EvaluatorTrainConfig, classification_accuracy, train_alignment_classifier,
                                               train_audio_classifier, train_frame_embedder)
from cinefoley.models.model_io import load_model, save_model
from cinefoley.testsets import CINETOY_RECIPES, read_recipes, recipes_table, write_testsets
from cinefoley.utils import atomic_write_json, seed_everything, write_run_record
from cinefoley.variations import VariationParams, apply_batch
from cinefoley.worlds.base import RunSettings, World
from cinefoley.worlds.cinetoy.render import CLASSES, WorldConfig, build_world, other_class_mels, plan_clip

SHIPPED = Path(__file__).resolve().parents[2] / "weights"
MODEL_NAMES = ("teacher", "audio_encoder", "generator", "audio_classifier", "frame_embedder", "align_classifier")
#: What the paper calls each model, and which real network it stands in for.
ROLES = {"teacher": "T: video encoder (CAVP)", "audio_encoder": "CAVP's audio branch (pretraining only)",
         "generator": "G: latent diffusion model (Diff-Foley's LDM)",
         "audio_classifier": "referee for FD / KID / KL / IS (PANNs)", "frame_embedder": "referee for FAD (VGGish)",
         "align_classifier": "referee for Align Acc (Diff-Foley's classifier)"}


@dataclass(frozen=True)
class CineToySettings(RunSettings):
    """A CineToy profile: the world's size and the training of its models, besides :class:`RunSettings`."""

    world: WorldConfig = field(default_factory=WorldConfig)
    pretrain_epochs: int = 15  # teacher T: CAVP-style contrastive pretraining on full frames
    generator_steps: int = 3000  # generator G: diffusion training steps
    evaluator_epochs: int = 15  # the class referees (PANNs and VGGish stand-ins) ...
    align_epochs: int = 30  # ... and the alignment classifier, whose pairs are drawn afresh every epoch


PROFILES = {
    "smoke": CineToySettings(world=WorldConfig(n_train=96, n_val=24, n_test=32), pretrain_epochs=2, generator_steps=20,
                             evaluator_epochs=2, align_epochs=2, distill_epochs=1, samples_per_clip=1, ablation_samples_per_clip=1,
                             diffusion_steps=4, n_boot=20, gradcam_clips=1, study_clips=4, study_participants=3),
    "demo": CineToySettings(world=WorldConfig(n_train=600, n_val=60, n_test=120), samples_per_clip=3,
                            ablation_samples_per_clip=1, n_boot=100, gradcam_clips=2, study_clips=8,
                            study_participants=8),
    "paper": CineToySettings(world=WorldConfig(n_train=4000, n_val=400, n_test=1000), gradcam_clips=4),
}


def get_profile(name: str) -> CineToySettings:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


class CineToyWorld(World):
    """CineToy behind the :class:`~cinefoley.worlds.base.World` interface (see the module docstring)."""

    name = "cinetoy"
    has_boxes = True
    has_events = True

    def __init__(self, out_dir: str | Path, profile: str = "demo", *, seed: int = 0):
        super().__init__(out_dir, get_profile(profile), profile=profile, seed=seed)
        self.settings: CineToySettings

    # ------------------------------------------------------------------------------------------
    # data

    @property
    def root(self) -> Path:
        return self.out / "world"

    def build(self, *, progress: bool = True) -> dict:
        """Render the profile's world under ``out_dir/world`` (resumes) and load its splits into memory."""
        build_world(self.root, self.settings.world, progress=progress)
        report = json.loads((self.root / "build_report.json").read_text())
        return {"world": self.name, "clips": {s: len(c) for s, c in self.load(progress=progress).items()},
                "rendered_now": report["rendered"], "failed": report["failed"], "classes": len(CLASSES),
                "frame_size": self.settings.world.size, "seconds": self.settings.world.duration}

    def manifest(self) -> pd.DataFrame:
        if not (self.root / "manifest.csv").exists():
            build_world(self.root, self.settings.world, progress=False)
        return read_manifest(self.root / "manifest.csv")

    def load(self, *, progress: bool = False) -> dict[str, ClipTensors]:
        """Every split in memory (decoded once, cached under ``out_dir/cache``)."""
        if not hasattr(self, "_data"):
            manifest = self.manifest()
            n_frames = int(manifest["n_frames"].iloc[0])
            self._data = {split: load_split(manifest, split, n_frames=n_frames, size=self.settings.world.size,
                                            cache_dir=self.out / "cache", progress=progress)
                          for split in ("train", "val", "test")}
        return self._data

    def _write_test_sets(self) -> dict[str, Path]:
        shipped = read_recipes(CINETOY_RECIPES) if self.seed == 0 else None  # data_manifests/: seed 0's windows
        return write_testsets(self.manifest(), self.out / "testsets", seed=self.seed, recipes=shipped)

    def test_clip_ids(self) -> list[str]:
        return list(self.load()["test"].clip_ids)

    def test_videos(self, kind: str) -> torch.Tensor:
        """The test clips (in :meth:`test_clip_ids` order) as test set ``kind`` shows them, uint8."""
        test = self.load()["test"]
        if kind == "original":
            return test.videos
        rows = self.test_sets()[kind]
        params = dict(zip(rows["clip_id"], rows["variation_params"]))
        return apply_batch(test.videos, [VariationParams.from_json(params[c]) for c in test.clip_ids])

    # ------------------------------------------------------------------------------------------
    # models

    @property
    def models_dir(self) -> Path:
        return self.out / "models"

    def shipped_weights_match(self) -> bool:
        """The shipped weights were trained on the demo world; they fit only a world built like it."""
        meta = SHIPPED / "weights.json"
        if not meta.exists() or not all((SHIPPED / f"{n}.pt").exists() for n in MODEL_NAMES):
            return False
        return json.loads(meta.read_text())["world"] == json.loads(json.dumps(asdict(self.settings.world)))

    def prepare_models(self, *, retrain: bool = False, progress: bool = True) -> pd.DataFrame:
        """Put the six models into ``out_dir/models``: copied from the shipped weights when they fit the
        profile's world and ``retrain`` is False, trained from the seeds otherwise (or kept when there)."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        if not retrain and self.shipped_weights_match():
            for name in (*MODEL_NAMES, "weights"):
                ext = "json" if name == "weights" else "pt"
                shutil.copyfile(SHIPPED / f"{name}.{ext}", self.models_dir / f"{name}.{ext}")
            source = "shipped with the package"
        elif not retrain and all((self.models_dir / f"{n}.pt").exists() for n in MODEL_NAMES):
            source = f"trained earlier in {self.models_dir}"
        else:
            started = time.time()
            record = train_models(self.load(progress=progress), self.settings, self.seed, self.models_dir,
                                  progress=progress)
            write_run_record(self.models_dir, config={"profile": self.profile, **record}, name="run.json",
                             started=started)
            source = "trained now"
        self.__dict__.pop("models", None)
        self.models_source = source
        return pd.DataFrame([{"model": n, "role": ROLES[n], "source": source,
                              "parameters (M)": round(sum(t.numel() for t in m.state_dict().values()) / 1e6, 3)}
                             for n, m in self.models.items()])

    @cached_property
    def models(self) -> dict[str, nn.Module]:
        missing = [n for n in MODEL_NAMES if not (self.models_dir / f"{n}.pt").exists()]
        if missing:
            raise FileNotFoundError(f"{self.models_dir}: no {missing[0]}.pt; run notebook 02 "
                                    "(world.prepare_models()) first")
        return {name: load_model(self.models_dir / f"{name}.pt") for name in MODEL_NAMES}

    @property
    def teacher(self) -> nn.Module:
        return self.models["teacher"]

    @property
    def generator(self) -> nn.Module:
        return self.models["generator"]

    @cached_property
    def referees(self) -> Referees:
        m = self.models
        return Referees.cinetoy(m["audio_classifier"], m["frame_embedder"], m["align_classifier"],
                                cache_dir=self.out / "cache" / "features")

    def referee_checks(self) -> pd.DataFrame:
        """The alignment checks of every world, and how well the other referees and T name the class."""
        test, m = self.load()["test"], self.models
        feats = encode(m["teacher"], test.videos)
        rows = [{"referee": "audio classifier (FD / KID / KL / IS)", "check": "class of real test sound",
                 "accuracy": classification_accuracy(m["audio_classifier"], test.mels, test.labels)},
                {"referee": "frame embedder (FAD)", "check": "class of each 0.96 s of real test sound",
                 "accuracy": classification_accuracy(m["frame_embedder"], test.mels, test.labels)},
                {"referee": "teacher T (CAVP)", "check": "video -> audio retrieval lands on the same class",
                 "accuracy": retrieval_same_class(feats, m["audio_encoder"], test.mels, test.labels)}]
        extra = pd.DataFrame(rows).assign(chance=1 / len(CLASSES), n=len(test))
        return pd.concat([super().referee_checks(), self._wrong_class_checks(feats), extra], ignore_index=True)

    def _wrong_class_checks(self, feats: torch.Tensor) -> pd.DataFrame:
        """The alignment classifier against sound with the right onsets but another class (rendered), which
        it must reject: the check that Align Acc judges the class and not only the timing."""
        test = self.load()["test"]
        wrong = other_class_mels(self.settings.world, test.clip_ids, self.seed)
        return pd.DataFrame([{"referee": "alignment classifier (Align Acc)",
                              "check": "same onsets played by another class",
                              "accuracy": 1 - align_acc(self.referees.align_prob(wrong, feats)),
                              "chance": 0.5, "n": len(wrong)}])

    def class_check(self, clip_ids: list[str], real: np.ndarray, generated: np.ndarray) -> list[dict]:
        labels = dict(zip(self.load()["test"].clip_ids, self.load()["test"].labels.tolist()))
        target = torch.tensor([labels[c] for c in clip_ids])
        return [{"check": "class accuracy of the audio classifier (%)", "sound": name,
                 "value": 100 * classification_accuracy(self.models["audio_classifier"], torch.from_numpy(m), target)}
                for name, m in (("real", real), ("generated by G", generated))]

    # ------------------------------------------------------------------------------------------
    # distillation and features

    def distill(self, name: str, *, progress: bool = True) -> dict:
        run = self.run_dir(name)
        if (run / "student_state.pt").exists():
            return self.history(name)
        train = self.load()["train"]
        _, history = distill(self.teacher, train.videos, train.clip_ids, run, self.distill_runs()[name],
                             feature_dir=self.out / "distill" / "teacher_feats", progress=progress)
        return history

    def _load_student(self, path: Path) -> nn.Module:
        student = copy.deepcopy(self.teacher)
        student.load_state_dict(torch.load(path, weights_only=True))
        return student.eval()

    def features(self, system: str, kind: str) -> dict[str, torch.Tensor]:
        key = (system, kind)
        if key not in self._features:
            feats = encode(self.encoder(system), self.test_videos(kind))
            self._features[key] = dict(zip(self.test_clip_ids(), feats))
        return self._features[key]

    @cached_property
    def _features(self) -> dict:
        return {}

    def encoder_input(self, kind: str, clip_ids: list[str]) -> torch.Tensor:
        where = {c: i for i, c in enumerate(self.test_clip_ids())}
        return self.test_videos(kind)[[where[c] for c in clip_ids]]

    # ------------------------------------------------------------------------------------------
    # the A/B study

    def display_frames(self, kind: str, clip_id: str, seconds: float, size: int = 128) -> tuple[np.ndarray, float]:
        """The 4-fps test clip as ``kind`` shows it, upscaled to ``size`` px by nearest neighbour so that
        the 64-px world's pixels stay visible on a study screen."""
        video = self.encoder_input(kind, [clip_id])[0]
        frames = torch.nn.functional.interpolate(video.float(), size=(size, size), mode="nearest")
        return frames.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy(), 4.0


# ---------------------------------------------------------------------------------------------
# training the models (notebook 02 with retrain=True)

def cinetoy_recipes() -> pd.DataFrame:
    """The CU / CM recipes (seed 0) of the test clips of every profile (the paper profile's hold the others')."""
    return recipes_table([plan_clip(PROFILES["paper"].world, "test", i).clip_id
                          for i in range(PROFILES["paper"].world.n_test)])


def train_models(data: dict[str, ClipTensors], settings: CineToySettings, seed: int, models_dir: str | Path, *,
                 progress: bool = True) -> dict:
    """Train T (+ audio encoder), G and the referees on the train split; save them; return a record."""
    models_dir = Path(models_dir)
    train, timings = data["train"], {}
    t0 = time.time()
    teacher, audio_encoder, pre_hist = pretrain(train.videos, train.mels, PretrainConfig(
        epochs=settings.pretrain_epochs, seed=seed), progress=progress)
    timings["teacher"] = time.time() - t0
    feats = encode(teacher, train.videos)
    t0 = time.time()
    generator, gen_hist = train_cinetoy_generator(feats, train.mels, settings, seed, progress=progress)
    timings["generator"] = time.time() - t0
    ecfg = EvaluatorTrainConfig(epochs=settings.evaluator_epochs, seed=seed)
    t0 = time.time()
    audio_classifier, _ = train_audio_classifier(train.mels, train.labels, ecfg, num_classes=len(CLASSES),
                                                 progress=progress)
    frame_embedder, _ = train_frame_embedder(train.mels, train.labels, ecfg, num_classes=len(CLASSES),
                                             progress=progress)
    align_classifier = train_cinetoy_align_classifier(train, feats, settings, seed, progress=progress)
    timings["evaluators"] = time.time() - t0
    models = dict(teacher=teacher, audio_encoder=audio_encoder, generator=generator,
                  audio_classifier=audio_classifier, frame_embedder=frame_embedder,
                  align_classifier=align_classifier)
    for name, model in models.items():
        save_model(model, models_dir / f"{name}.pt")
    record = {"world": asdict(settings.world), "stages": asdict(settings), "seed": seed,
              "seconds": {k: round(v, 1) for k, v in timings.items()},
              "final_losses": {"teacher": pre_hist["loss"][-1], "generator": sum(gen_hist["loss"][-50:]) / 50}}
    record["stages"].pop("world")
    atomic_write_json(models_dir / "weights.json", record)
    return record


def train_cinetoy_generator(feats: torch.Tensor, mels: torch.Tensor, settings: CineToySettings, seed: int, *,
                            progress: bool = True) -> tuple[ToyLDM, dict[str, list[float]]]:
    """G for this world, from teacher features of the train split; seeded on its own, like every stage."""
    seed_everything(seed)
    generator = ToyLDM(ToyLDMConfig(mel_frames=mels.shape[-1]))
    history = train_generator(generator, feats, mels, GeneratorTrainConfig(steps=settings.generator_steps, seed=seed),
                              progress=progress)
    return generator, history


def train_cinetoy_align_classifier(train: ClipTensors, feats: torch.Tensor, settings: CineToySettings, seed: int, *,
                                   progress: bool = True) -> nn.Module:
    """The Align Acc referee, with this world's "same onsets, other class" negatives rendered for it."""
    wrong_class = torch.from_numpy(other_class_mels(settings.world, train.clip_ids, seed))
    model, _ = train_alignment_classifier(train.mels, feats, EvaluatorTrainConfig(epochs=settings.align_epochs, seed=seed),
                                          progress=progress, other_class_mels=wrong_class)
    return model


@torch.no_grad()
def retrieval_same_class(video_feats: torch.Tensor, audio_encoder, mels: torch.Tensor,
                         labels: torch.Tensor) -> float:
    """Video→audio retrieval among the test clips with max-pooled clip embeddings (CAVP's semantic
    contrast): the share of videos whose nearest audio is of the same class."""
    audio_encoder.eval()
    audio = torch.cat([audio_encoder(mels[i:i + 64]) for i in range(0, len(mels), 64)])
    v = torch.nn.functional.normalize(video_feats.amax(1), dim=-1)
    a = torch.nn.functional.normalize(audio.amax(1), dim=-1)
    return float((labels[(v @ a.T).argmax(1)] == labels).float().mean())

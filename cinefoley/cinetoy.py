"""The CineToy experiment: the world's tensors and the models every notebook shares.

Notebook 02 trains (or loads) the teacher T with its audio encoder, the generator G and the three
evaluation networks; later notebooks read them from ``<out_dir>/models/``. The ``demo`` profile
starts from the small weights shipped in ``cinefoley/weights/`` (trained by exactly this code on
the demo world, seed 0) unless asked to retrain; ``smoke`` always trains tiny models.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cinefoley.audio import load_audio
from cinefoley.data.clips import ClipTensors, load_split, read_manifest, resolve
from cinefoley.data.toyworld import build_world
from cinefoley.distill import DistillConfig, distill, encode
from cinefoley.evaluate import CineToyExtractor, Features, alignment_probs, extract
from cinefoley.explain import attention_on_object, grad_cam
from cinefoley.evaluators import (EvaluatorTrainConfig, alignment_accuracy, classification_accuracy,
                                  train_alignment_classifier, train_audio_classifier, train_frame_embedder)
from cinefoley.generate import GenerationConfig, generate_set, read_generated
from cinefoley.metrics import FeatureCache
from cinefoley.generator import GeneratorTrainConfig, ToyLDM, ToyLDMConfig, train_generator
from cinefoley.model_io import load_model, save_model
from cinefoley.pretrain import PretrainConfig, pretrain
from cinefoley.profiles import Profile
from cinefoley.utils import atomic_write_bytes, atomic_write_json, seed_everything, write_run_record
from cinefoley.video import DEFAULT_FPS, write_video
from cinefoley.variations import VariationParams, apply_batch

SHIPPED = Path(__file__).resolve().parent / "weights"
MODEL_NAMES = ("teacher", "audio_encoder", "generator", "audio_classifier", "frame_embedder", "align_classifier")


def world(out_dir: str | Path, profile: Profile, *, progress: bool = True) -> dict[str, ClipTensors]:
    """Build (or reuse) the profile's world under ``out_dir/world`` and load every split into memory."""
    root = Path(out_dir) / "world"
    build_world(root, profile.world, progress=progress)
    manifest = read_manifest(root / "manifest.csv")
    n_frames = int(manifest["n_frames"].iloc[0])
    return {split: load_split(manifest, split, n_frames=n_frames, size=profile.world.size,
                              cache_dir=Path(out_dir) / "cache", progress=progress)
            for split in ("train", "val", "test")}


def shipped_weights_match(profile: Profile) -> bool:
    """The shipped weights were trained on the demo world; they fit only a world built like it."""
    meta = SHIPPED / "weights.json"
    if not meta.exists() or not all((SHIPPED / f"{n}.pt").exists() for n in MODEL_NAMES):
        return False
    return json.loads(meta.read_text())["world"] == json.loads(json.dumps(asdict(profile.world)))


def train_models(data: dict[str, ClipTensors], profile: Profile, models_dir: str | Path, *,
                 progress: bool = True) -> dict:
    """Train T (+ audio encoder), G and the evaluators on the train split; save them; return a record."""
    models_dir = Path(models_dir)
    train, s = data["train"], profile.stages
    timings = {}
    t0 = time.time()
    teacher, audio_encoder, pre_hist = pretrain(train.videos, train.mels, PretrainConfig(epochs=s.pretrain_epochs,
                                                seed=profile.seed), progress=progress)
    timings["teacher"] = time.time() - t0
    feats = encode(teacher, train.videos)
    t0 = time.time()
    generator, gen_hist = train_cinetoy_generator(feats, train.mels, profile, progress=progress)
    timings["generator"] = time.time() - t0
    ecfg = EvaluatorTrainConfig(epochs=s.evaluator_epochs, seed=profile.seed)
    n_classes = 10
    t0 = time.time()
    audio_classifier, _ = train_audio_classifier(train.mels, train.labels, ecfg, num_classes=n_classes,
                                                 progress=progress)
    frame_embedder, _ = train_frame_embedder(train.mels, train.labels, ecfg, num_classes=n_classes,
                                             progress=progress)
    align_classifier, _ = train_alignment_classifier(train.mels, feats, ecfg, progress=progress)
    timings["evaluators"] = time.time() - t0
    models = dict(teacher=teacher, audio_encoder=audio_encoder, generator=generator,
                  audio_classifier=audio_classifier, frame_embedder=frame_embedder,
                  align_classifier=align_classifier)
    for name, model in models.items():
        save_model(model, models_dir / f"{name}.pt")
    record = {"world": asdict(profile.world), "stages": asdict(s), "seed": profile.seed,
              "seconds": {k: round(v, 1) for k, v in timings.items()},
              "final_losses": {"teacher": pre_hist["loss"][-1], "generator": sum(gen_hist["loss"][-50:]) / 50}}
    atomic_write_json(models_dir / "weights.json", record)
    return record


def train_cinetoy_generator(feats: torch.Tensor, mels: torch.Tensor, profile: Profile, *,
                            progress: bool = True) -> tuple[ToyLDM, dict[str, list[float]]]:
    """G for this world, from teacher features of the train split; seeded on its own, like every stage."""
    seed_everything(profile.seed)
    # patch 16 with 8 components: one latent column per video frame and an 8 x 8 x 8 latent for 2 s, so
    # the demo's thousands of 25-step CFG samples stay within minutes on 2 CPU cores
    generator = ToyLDM(ToyLDMConfig(mel_frames=mels.shape[-1], patch=16, latent_channels=8,
                                    block_out_channels=(64, 96)))
    history = train_generator(generator, feats, mels, GeneratorTrainConfig(steps=profile.stages.generator_steps,
                              seed=profile.seed), progress=progress)
    return generator, history


def prepare_models(data: dict[str, ClipTensors], profile: Profile, out_dir: str | Path, *,
                   retrain: bool = False, progress: bool = True) -> str:
    """Put the six models into ``out_dir/models``: copied from the shipped weights when they fit the
    profile's world and ``retrain`` is False, trained from the seeds otherwise. Returns which."""
    models_dir = Path(out_dir) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    if not retrain and shipped_weights_match(profile):
        for name in (*MODEL_NAMES, "weights"):
            ext = "json" if name == "weights" else "pt"
            shutil.copyfile(SHIPPED / f"{name}.{ext}", models_dir / f"{name}.{ext}")
        return "shipped"
    if not retrain and all((models_dir / f"{n}.pt").exists() for n in MODEL_NAMES):
        return "existing"
    started = time.time()
    record = train_models(data, profile, models_dir, progress=progress)
    write_run_record(models_dir, config={"profile": profile.name, **record}, name="run.json", started=started)
    return "trained"


def load_models(out_dir: str | Path) -> dict[str, torch.nn.Module]:
    models_dir = Path(out_dir) / "models"
    return {name: load_model(models_dir / f"{name}.pt") for name in MODEL_NAMES}


def model_checks(models: dict, data: dict[str, ClipTensors]) -> dict[str, float]:
    """Held-out (test split) accuracies of the evaluators, and how class-discriminative T is."""
    test = data["test"]
    feats = encode(models["teacher"], test.videos)
    return {
        "audio_classifier_acc": classification_accuracy(models["audio_classifier"], test.mels, test.labels),
        "frame_embedder_acc": classification_accuracy(models["frame_embedder"], test.mels, test.labels),
        "align_classifier_acc": alignment_accuracy(models["align_classifier"], test.mels, feats),
        "teacher_retrieval_same_class": retrieval_same_class(feats, models["audio_encoder"], test.mels,
                                                             test.labels),
    }


@torch.no_grad()
def retrieval_same_class(video_feats: torch.Tensor, audio_encoder, mels: torch.Tensor,
                         labels: torch.Tensor) -> float:
    """Video→audio retrieval among the test clips with max-pooled clip embeddings (CAVP's semantic
    contrast): the share of videos whose nearest audio is of the same class."""
    v = torch.nn.functional.normalize(video_feats.amax(1), dim=-1)
    a = torch.nn.functional.normalize(encode_audio(audio_encoder, mels).amax(1), dim=-1)
    return float((labels[(v @ a.T).argmax(1)] == labels).float().mean())


@torch.no_grad()
def encode_audio(audio_encoder, mels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    audio_encoder.eval()
    return torch.cat([audio_encoder(mels[i:i + batch_size]) for i in range(0, len(mels), batch_size)])


# ---------------------------------------------------------------------------------------------
# distillation runs: the main one (Table 1) and the ablations (Tables 3 and 4)

#: name -> (variation, k). "cu@75" is the paper's main setting; the others are its ablations.
DISTILL_RUNS = {"cu@75": ("cu", 0.75), "cu@50": ("cu", 0.5), "cu@100": ("cu", 1.0),
                "cm@50": ("cm", 0.5), "cu&cm@66.7": ("cu&cm", 0.667)}
MAIN_RUN = "cu@75"


def distill_runs(profile: Profile) -> dict[str, DistillConfig]:
    names = DISTILL_RUNS if profile.stages.ablations else {MAIN_RUN: DISTILL_RUNS[MAIN_RUN]}
    return {name: DistillConfig(variation=v, k=k, epochs=profile.stages.distill_epochs, seed=profile.seed)
            for name, (v, k) in names.items()}


def run_distillation(data: dict[str, ClipTensors], teacher, profile: Profile, out_dir: str | Path, *,
                     progress: bool = True) -> dict[str, dict]:
    """Train every student of the profile under ``out_dir/distill/<name>`` (resumes; reuses finished runs).

    All runs share one cache of teacher features c_t of the training clips.
    """
    train = data["train"]
    feature_dir = Path(out_dir) / "distill" / "teacher_feats"
    histories = {}
    for name, cfg in distill_runs(profile).items():
        run_dir = Path(out_dir) / "distill" / name
        if (run_dir / "student_state.pt").exists():
            histories[name] = torch.load(run_dir / "checkpoint.pt", weights_only=False)["history"]
            continue
        _, histories[name] = distill(teacher, train.videos, train.clip_ids, run_dir, cfg,
                                     feature_dir=feature_dir, progress=progress)
    return histories


def load_student(out_dir: str | Path, name: str, teacher) -> torch.nn.Module:
    student = copy.deepcopy(teacher)
    student.load_state_dict(torch.load(Path(out_dir) / "distill" / name / "student_state.pt", weights_only=True))
    return student.eval()


def encoders(out_dir: str | Path, teacher) -> dict[str, torch.nn.Module]:
    """The systems compared: ``baseline`` (the teacher) and every finished student."""
    found = {"baseline": teacher}
    for name in DISTILL_RUNS:
        if (Path(out_dir) / "distill" / name / "student_state.pt").exists():
            found[name] = load_student(out_dir, name, teacher)
    return found


# ---------------------------------------------------------------------------------------------
# test sets, generation, evaluation

TEST_SETS = ("original", "cu", "cm")


def test_set_videos(data: dict[str, ClipTensors], out_dir: str | Path, kind: str) -> torch.Tensor:
    """The test clips (in ``data['test']`` order) as the test set ``kind`` shows them."""
    test = data["test"]
    if kind == "original":
        return test.videos
    manifest = pd.read_csv(Path(out_dir) / "testsets" / f"test_{kind}.csv", dtype={"clip_id": str})
    params = dict(zip(manifest["clip_id"], manifest["variation_params"]))
    return apply_batch(test.videos, [VariationParams.from_json(params[c]) for c in test.clip_ids])


def generate_systems(data, systems: dict[str, torch.nn.Module], generator, profile: Profile, out_dir: str | Path,
                     *, test_sets=TEST_SETS, progress: bool = True) -> dict[tuple[str, str], Path]:
    """Generate every (system, test set) under ``out_dir/generated/<system>/<test set>`` (resumable).

    Table 1's systems (the baseline and the main student) get ``samples_per_clip`` sounds per test video,
    the ablation students ``ablation_samples_per_clip``: the set-level metrics (FAD, FD, KID, IS) of Table 1
    need the larger sample to rise above their small-sample bias and noise."""
    s = profile.stages
    out = {}
    for kind in test_sets:
        videos = test_set_videos(data, out_dir, kind)
        for name, encoder in systems.items():
            n = s.samples_per_clip if name in ("baseline", MAIN_RUN) else s.ablation_samples_per_clip
            cfg = GenerationConfig(samples_per_clip=n, steps=s.diffusion_steps, seed=profile.seed)
            feats = encode(encoder, videos)
            folder = Path(out_dir) / "generated" / name / kind
            out[(name, kind)] = generate_set(generator, dict(zip(data["test"].clip_ids, feats)), folder, cfg,
                                             progress=progress)
    return out


def reference_wavs(data: dict[str, ClipTensors]) -> list[np.ndarray]:
    """The real sound of every test clip, exactly as long as its mel."""
    test = data["test"]
    n = test.mels.shape[-1] * 256
    return [load_audio(resolve(test.rows, row["audio_path"]))[:n] for _, row in test.rows.iterrows()]


def extractor_for(models: dict, out_dir: str | Path) -> FeatureCache:
    """CineToy's evaluators behind a feature cache keyed by audio content (``out_dir/cache/features``)."""
    digest = hashlib.sha256()
    for name in ("audio_classifier", "frame_embedder"):
        for v in models[name].state_dict().values():
            digest.update(v.detach().cpu().numpy().tobytes())
    extractor = CineToyExtractor(models["audio_classifier"], models["frame_embedder"], digest.hexdigest()[:16])
    return FeatureCache(extractor, Path(out_dir) / "cache" / "features")


def generated_features(folder: Path, extractor, align_classifier, teacher_feats: dict[str, torch.Tensor]) -> Features:
    gen = read_generated(folder)
    feats = extract(extractor, gen["clip_id"], list(gen["wav"]))
    feats.align_prob = alignment_probs(align_classifier, gen["mel"], torch.stack([teacher_feats[c] for c in gen["clip_id"]]))
    return feats


def attention_scores(encoder, teacher, data: dict[str, ClipTensors], out_dir: str | Path, kind: str,
                     *, batch_size: int = 16) -> pd.DataFrame:
    """Per test clip: the share of ``encoder``'s Grad-CAM mass on the sounding object under test set
    ``kind`` (target: similarity to the teacher's full-frame features), and the chance level."""
    test = data["test"]
    videos = test_set_videos(data, out_dir, kind)
    refs = encode(teacher, test.videos)
    windows = None
    if kind != "original":
        manifest = pd.read_csv(Path(out_dir) / "testsets" / f"test_{kind}.csv", dtype={"clip_id": str})
        params = dict(zip(manifest["clip_id"], manifest["variation_params"]))
        windows = [VariationParams.from_json(params[c]).boxes for c in test.clip_ids]
    rows = []
    for start in range(0, len(videos), batch_size):
        maps = grad_cam(encoder, videos[start:start + batch_size], refs[start:start + batch_size])
        for j, m in enumerate(maps):
            i = start + j
            share, chance = attention_on_object(m, json.loads(test.rows.boxes[i]),
                                                None if windows is None else windows[i],
                                                frame_size=tuple(test.videos.shape[-2:]))
            rows.append({"clip_id": test.clip_ids[i], "share": share, "chance": chance})
    return pd.DataFrame(rows)


def study_pairs(data: dict[str, ClipTensors], out_dir: str | Path, *, kind: str = "cm", ours: str = MAIN_RUN,
                n_clips: int | None = None, size: int = 128) -> Path:
    """The A/B study's stimuli from generated sound: for each test clip of test set ``kind``, the clip as
    that set shows it, once with the baseline's first sample and once with ``ours``'s. Writes
    ``out_dir/study_pairs/<clip>_{baseline,ours}.mp4`` and ``pairs.csv`` (see ``cinefoley.study``)."""
    folder = Path(out_dir) / "study_pairs"
    videos = test_set_videos(data, out_dir, kind)
    ids = data["test"].clip_ids[: n_clips or len(videos)]
    sounds = {}
    for system, run in (("baseline", "baseline"), ("ours", ours)):
        gen = read_generated(Path(out_dir) / "generated" / run / kind)
        first = gen["sample"] == 0
        sounds[system] = dict(zip(gen["clip_id"][first], gen["wav"][first]))
    rows = []
    for i, clip_id in enumerate(ids):
        # nearest-neighbour upscaling keeps the 64-px world's pixels visible on a study screen
        frames = torch.nn.functional.interpolate(videos[i].float(), size=(size, size), mode="nearest")
        frames = frames.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        files = {s: f"{clip_id}_{s}.mp4" for s in sounds}
        for s, name in files.items():
            write_video(folder / name, frames, DEFAULT_FPS, audio=sounds[s][clip_id])
        rows.append({"clip_id": clip_id, **files})
    csv_path = folder / "pairs.csv"
    atomic_write_bytes(csv_path, pd.DataFrame(rows).to_csv(index=False).encode())
    return csv_path

"""A world: everything the pipeline needs from one place, with the same verbs in CineToy and on VGGSound.

As a diffusers pipeline hands out its components, a :class:`World` hands out the paper's ingredients
for a run folder (``out_dir``) and a profile:

====================  =====================================================================
data                  :meth:`~World.build`, :meth:`~World.examples`, :meth:`~World.test_sets`
                      (original / CU / CM with their variation parameters), :meth:`~World.clip`
models                :meth:`~World.prepare_models`, :attr:`~World.teacher`,
                      :attr:`~World.generator`, :attr:`~World.referees`
distillation          :meth:`~World.distill_runs`, :meth:`~World.distill` (one loop,
                      :func:`cinefoley.distill.train_student`, fed in memory or streamed)
features              :meth:`~World.features` of any system on any test set
generation            :meth:`~World.generate`, :meth:`~World.generated`, :meth:`~World.sample`
reference             :meth:`~World.reference_audio`, :meth:`~World.reference_mels`
study                 :meth:`~World.study_pairs`
====================  =====================================================================

What a world lacks is a property a notebook cell reads (:attr:`~World.has_boxes`,
:attr:`~World.has_events`), never a second code path. Subclasses implement the abstract methods;
everything else is shared here.

Every output lives under ``out_dir``: ``testsets/test_{original,cu,cm}.csv``, ``distill/<run>/``,
``generated/<system>/<test set>/`` (shards), ``study_pairs/``, ``figures/``, ``tables/`` and the
notebooks' JSON records. A system is ``"baseline"`` (the teacher, i.e. Diff-Foley's encoder) or the
name of a finished student (``"cu@75"``, ...).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cinefoley.distill import MAIN_RUN, PAPER_RUNS, DistillConfig
from cinefoley.errors import MediaError
from cinefoley.generate import (GenerationConfig, generate_set, read_generated, sample_sounds, sample_seed,
                                window_features)
from cinefoley.media.audio import load_audio, mel_spectrogram
from cinefoley.media.video import load_video, write_video
from cinefoley.metrics.referees import Referees
from cinefoley.metrics.scores import align_acc
from cinefoley.testsets import TEST_SETS, load_params
from cinefoley.utils import atomic_write_bytes, atomic_write_json
from cinefoley.variations import apply

SAMPLE_RATE = 16000
#: A video frame at 4 fps is 16 mel frames of 256 samples.
SECONDS_PER_FRAME = 16 * 256 / SAMPLE_RATE
#: frames read for a clip whose manifest row does not say: a 10-s clip at 4 fps
MAX_FRAMES = 40
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class RunSettings:
    """What a profile (``smoke``, ``demo``, ``paper``) sets in every world."""

    distill_epochs: int = 25  # paper: 25
    distill_batch: int = 32  # paper: 32 (the global batch)
    ablations: bool = True  # train the students of Tables 3 and 4 too
    samples_per_clip: int = 10  # generated sounds per test video for Table 1's systems (paper: 10)
    ablation_samples_per_clip: int = 10  # the same for the ablation students
    diffusion_steps: int = 25  # DPM-Solver++ steps (paper: 25)
    griffin_lim_iters: int = 32
    n_boot: int = 1000  # bootstrap resamples of every interval
    gradcam_clips: int = 8  # close-ups shown in Figure 6
    study_clips: int = 31  # A/B pairs (Table 2: 31 videos)
    study_participants: int = 20  # simulated participants in notebook 07 (Table 2: 20)
    gen_frames: int | None = None  # feature frames per generated sound; None = the whole clip


@dataclass
class Clip:
    """One clip as a person sees and hears it: 4-fps frames at the video's own size, its sound, and the
    ground truth when the world has it."""

    clip_id: str
    label: str
    video: torch.Tensor  # uint8 (T, 3, H, W)
    wav: np.ndarray  # 16 kHz mono, as long as the frames
    boxes: list[Box] | None = None  # the sounding object's box in every frame
    events: list[float] | None = None  # event onsets in seconds
    variation: object | None = None  # the VariationParams a test set applied, if any


class World(ABC):
    """The interface both worlds implement; see the module docstring."""

    name: str = ""
    #: Ground-truth boxes of the sounding object in every frame (CineToy) — the attention-on-object score
    has_boxes: bool = False
    #: Ground-truth event onsets (CineToy)
    has_events: bool = False
    #: How the paper names the three test sets in this world
    test_set_names: dict[str, str] = {"original": "original", "cu": "CU", "cm": "CM"}

    def __init__(self, out_dir: str | Path, settings: RunSettings, *, profile: str, seed: int = 0):
        self.out = Path(out_dir).resolve()
        self.settings, self.profile, self.seed = settings, profile, seed
        (self.out / "figures").mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(profile={self.profile!r}, out_dir='{self.out}')"

    # ------------------------------------------------------------------------------------------
    # data

    @abstractmethod
    def build(self, *, progress: bool = True) -> dict:
        """Make the world's clips available (render CineToy / index the VGGSound videos); a summary."""

    @abstractmethod
    def manifest(self) -> pd.DataFrame:
        """Every clip of the world, one row each (``clip_id``, ``split``, ``video_path``, ``label``, ...)."""

    @abstractmethod
    def _write_test_sets(self) -> dict[str, Path]:
        """Write ``testsets/test_{original,cu,cm}.csv`` (:mod:`cinefoley.testsets`)."""

    def test_sets(self) -> dict[str, pd.DataFrame]:
        """The original / CU / CM test manifests (one row per test clip, with ``variation_params``);
        written on first use."""
        paths = {k: self.out / "testsets" / f"test_{k}.csv" for k in TEST_SETS}
        if not all(p.exists() for p in paths.values()):
            self._write_test_sets()
        return {k: pd.read_csv(p, dtype={"clip_id": str}) for k, p in paths.items()}

    def test_clip_ids(self) -> list[str]:
        return self.test_sets()["original"]["clip_id"].tolist()

    def clip(self, row: pd.Series, *, n_frames: int | None = None) -> Clip:
        """The :class:`Clip` of a manifest row (of :meth:`manifest` or a test set), as its test set shows it."""
        n = n_frames or _int(row.get("n_frames")) or MAX_FRAMES
        start = _float(row.get("start_s"))
        path = Path(row["video_path"])  # test manifests hold absolute paths
        video = load_video(path, n_frames=n, start=start)
        audio = row.get("audio_path")
        wav = load_audio(audio if isinstance(audio, str) and audio else path, offset=start,
                         duration=len(video) / 4.0)
        params = load_params(row)
        if params is not None:
            video = apply(video, params.for_shape(len(video), video.shape[2], video.shape[3]))
        boxes = json.loads(row["boxes"])[:len(video)] if isinstance(row.get("boxes"), str) else None
        events = json.loads(row["event_times"]) if isinstance(row.get("event_times"), str) else None
        return Clip(str(row["clip_id"]), str(row.get("label", "")), video, wav, boxes, events, params)

    def test_clip(self, clip_id: str, kind: str = "original") -> Clip:
        """One test clip as test set ``kind`` shows it."""
        rows = self.test_sets()[kind]
        match = rows[rows["clip_id"].astype(str) == clip_id]
        if match.empty:
            raise KeyError(f"{clip_id!r} is not a clip of the {kind} test set")
        return self.clip(match.iloc[0])

    def examples(self, n: int = 4, kind: str = "original") -> list[Clip]:
        """The first ``n`` readable test clips as test set ``kind`` shows them."""
        out = []
        for _, row in self.test_sets()[kind].iterrows():
            try:
                out.append(self.clip(row))
            except MediaError:
                continue
            if len(out) == n:
                break
        if not out:
            raise ValueError(f"{self.out / 'testsets'}: no readable test clip")
        return out

    # ------------------------------------------------------------------------------------------
    # models

    @abstractmethod
    def prepare_models(self, *, retrain: bool = False, progress: bool = True) -> pd.DataFrame:
        """Have every model ready (CineToy: shipped or trained; VGGSound: checkpoints loaded and checked);
        a table of them (model, what the paper calls it, where from, parameters, key check)."""

    @property
    @abstractmethod
    def teacher(self) -> nn.Module:
        """T, the frozen video encoder (CAVP)."""

    @property
    @abstractmethod
    def generator(self) -> nn.Module:
        """G, the latent diffusion model (:mod:`cinefoley.generate` samples from it)."""

    @property
    @abstractmethod
    def referees(self) -> Referees:
        """The networks that score generated audio (:mod:`cinefoley.metrics.referees`)."""

    def referee_checks(self) -> pd.DataFrame:
        """Held-out checks of the referees on real test audio; worlds add their own rows."""
        from cinefoley.metrics.referees import alignment_checks

        feats = self.features("baseline", "original")
        mels = self.reference_mels()
        ids = [c for c in self.test_clip_ids() if c in feats and c in mels]
        feats, _ = self.window({c: feats[c] for c in ids})
        ids = [c for c in ids if c in feats]
        return alignment_checks(self.referees, np.stack([mels[c] for c in ids]), torch.stack([feats[c] for c in ids]))

    def _full_frame_clips(self, n_clips: int) -> tuple[list[str], np.ndarray, torch.Tensor]:
        """(clip ids, real mels (n, 128, 16 T), teacher features (n, T, C)) of the first ``n_clips`` test clips
        that have both, in the generator's window."""
        feats, _ = self.window(self.features("baseline", "original"))
        real = self.reference_mels()
        ids = [c for c in self.test_clip_ids() if c in feats and c in real][:n_clips]
        return ids, np.stack([real[c] for c in ids]), torch.stack([feats[c] for c in ids])

    @torch.no_grad()
    def reconstruct(self, mels: np.ndarray) -> np.ndarray:
        """Mels (n, 128, N) through G's first stage, encode then decode (what the diffusion cannot beat)."""
        g = self.generator
        return g.decode_latent(g.encode_mel(torch.from_numpy(np.asarray(mels, np.float32)))).float().clamp(0, 1).numpy()

    def first_stage_check(self, n_clips: int = 64) -> pd.DataFrame:
        """G's first stage on real test mels it never saw: encode -> decode, the mean squared and absolute
        error per mel bin (mel in [0, 1])."""
        _, real, _ = self._full_frame_clips(n_clips)
        g, rec = self.generator, self.reconstruct(real)
        row = {"first stage": type(getattr(g, "vae", None) or g.first_stage).__name__,
               "latent (C, h, w)": tuple(g.encode_mel(torch.from_numpy(real[:1])).shape[1:]),
               "mel MSE": float(((rec - real) ** 2).mean()), "mel MAE": float(np.abs(rec - real).mean()),
               "n": len(real)}
        return pd.DataFrame([row])

    def generator_check(self, n_clips: int = 40) -> pd.DataFrame:
        """G on full-frame test clips: the share of sounds the Align Acc referee calls aligned with their
        video, for the real sound and for one generated sound per clip (sample 0, seeded as notebook 04
        seeds it); worlds add their own rows (:meth:`class_check`)."""
        ids, real, feats = self._full_frame_clips(n_clips)
        generated, _ = self.sample("baseline", "original", ids)
        rows = [{"check": "Align Acc (%)", "sound": name,
                 "value": 100 * align_acc(self.referees.align_prob(m, feats))}
                for name, m in (("real", real), ("generated by G", generated))]
        return pd.DataFrame(rows + self.class_check(ids, real, generated)).assign(n=len(ids))

    def class_check(self, clip_ids: list[str], real: np.ndarray, generated: np.ndarray) -> list[dict]:
        """Rows for :meth:`generator_check` on whether a sound has its clip's class; none where the world has
        no classifier of its own labels (VGGSound's referees classify AudioSet's classes, not its own)."""
        return []

    # ------------------------------------------------------------------------------------------
    # distillation

    def distill_runs(self) -> dict[str, DistillConfig]:
        """The profile's runs: the main one (f_cu, k = 75 %) and, with ablations, Tables 3 and 4's."""
        names = PAPER_RUNS if self.settings.ablations else {MAIN_RUN: PAPER_RUNS[MAIN_RUN]}
        return {name: self._distill_config(v, k) for name, (v, k) in names.items()}

    def _distill_config(self, variation: str, k: float) -> DistillConfig:
        return DistillConfig(variation=variation, k=k, epochs=self.settings.distill_epochs,
                             batch_size=self.settings.distill_batch, seed=self.seed, device=self.device)

    @abstractmethod
    def distill(self, name: str, *, progress: bool = True) -> dict:
        """Train (or resume, or reuse) the student ``name`` of :meth:`distill_runs`; its loss history."""

    def run_dir(self, name: str) -> Path:
        return self.out / "distill" / name

    def history(self, name: str) -> dict:
        """The loss history of a finished or started run."""
        return torch.load(self.run_dir(name) / "checkpoint.pt", weights_only=False)["history"]

    def systems(self) -> list[str]:
        """The systems compared: ``baseline`` (the teacher) and every finished student."""
        return ["baseline"] + [n for n in PAPER_RUNS if (self.run_dir(n) / "student_state.pt").exists()]

    def encoder(self, system: str) -> nn.Module:
        """The video encoder of a system: the teacher for ``baseline``, else the student."""
        if system == "baseline":
            return self.teacher
        if system not in self._students:
            path = self.run_dir(system) / "student_state.pt"
            if not path.exists():
                raise FileNotFoundError(f"{path}: no student {system!r}; run its distillation first (notebook 03)")
            self._students[system] = self._load_student(path)
        return self._students[system]

    @cached_property
    def _students(self) -> dict[str, nn.Module]:
        return {}

    @abstractmethod
    def _load_student(self, path: Path) -> nn.Module: ...

    @abstractmethod
    def features(self, system: str, kind: str) -> dict[str, torch.Tensor]:
        """``{test clip id: (T, 512)}``: the features ``system``'s encoder gives for test set ``kind``."""

    @abstractmethod
    def encoder_input(self, kind: str, clip_ids: list[str]) -> torch.Tensor:
        """The clips as the encoder takes them, uint8 (B, T, 3, S, S), varied as test set ``kind`` does."""

    # ------------------------------------------------------------------------------------------
    # generation

    @property
    def device(self) -> str:
        return "cuda" if torch.cuda.is_available() else "cpu"

    def generation_config(self, system: str) -> GenerationConfig:
        s = self.settings
        n = s.samples_per_clip if system in ("baseline", MAIN_RUN) else s.ablation_samples_per_clip
        return GenerationConfig(samples_per_clip=n, steps=s.diffusion_steps, seed=self.seed,
                                griffin_lim_iters=s.griffin_lim_iters)

    def window(self, features: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
        """The generator's window of each clip's features (``gen_frames``), and the clips too short for it."""
        return window_features(features, self.settings.gen_frames)

    def generate(self, system: str, kind: str, *, progress: bool = True) -> Path:
        """Generate test set ``kind`` from ``system``'s features into ``generated/<system>/<kind>`` (resumes)."""
        feats, short = self.window(self.features(system, kind))
        if not feats:
            raise ValueError(f"no {kind} test clip has features for the generator's window: {short[:3]}")
        folder = self.out / "generated" / system / kind
        generate_set(self.generator, feats, folder, self.generation_config(system), progress=progress)
        if short:
            atomic_write_json(folder / "left_out.json", short)
        return folder

    def generated(self, system: str, kind: str) -> dict[str, np.ndarray]:
        """Everything generated for ``system`` on ``kind``: ``clip_id``, ``sample``, ``mel``, ``wav``."""
        folder = self.out / "generated" / system / kind
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: nothing generated yet; run notebook 04 (or world.generate)")
        return read_generated(folder)

    def sample(self, system: str, kind: str, clip_ids: list[str], *, sample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(mels, wavs) of one sound per clip from ``system``'s features on ``kind``, seeded as
        :meth:`generate` seeds them (so sample 0 here is sample 0 there)."""
        feats, _ = self.window(self.features(system, kind))
        cfg = self.generation_config(system)
        return sample_sounds(self.generator, torch.stack([feats[c] for c in clip_ids]),
                             [sample_seed(cfg.seed, c, sample) for c in clip_ids], cfg)

    def reference_seconds(self, n_frames: int) -> float:
        return (self.settings.gen_frames or n_frames) * SECONDS_PER_FRAME

    def reference_audio(self) -> dict[str, np.ndarray]:
        """The real sound of every readable test clip, as long as its generated sound (16 kHz)."""
        if not hasattr(self, "_reference"):
            out, self.reference_left_out = {}, []
            for _, row in self.test_sets()["original"].iterrows():
                audio = row.get("audio_path")
                path = audio if isinstance(audio, str) and audio else row["video_path"]
                seconds = self.reference_seconds(int(row["n_frames"]))
                try:
                    out[str(row["clip_id"])] = load_audio(path, offset=_float(row.get("start_s")), duration=seconds)
                except MediaError as e:
                    self.reference_left_out.append((str(row["clip_id"]), str(e)))
            if not out:
                raise ValueError(f"{self.out / 'testsets' / 'test_original.csv'}: no test clip with readable audio")
            self._reference = out
        return self._reference

    def reference_mels(self) -> dict[str, np.ndarray]:
        """Diff-Foley mels (128, 16 T) of :meth:`reference_audio`."""
        out = {}
        for c, wav in self.reference_audio().items():
            frames = round(len(wav) / SAMPLE_RATE / SECONDS_PER_FRAME) * 16
            out[c] = mel_spectrogram(np.pad(wav, (0, 1)))[:, :frames].astype(np.float32)
        return out

    # ------------------------------------------------------------------------------------------
    # the A/B study

    @abstractmethod
    def display_frames(self, kind: str, clip_id: str, seconds: float) -> tuple[np.ndarray, float]:
        """Frames uint8 (N, H, W, 3) of ``seconds`` of the clip as test set ``kind`` shows it, for a study
        screen, and their frame rate."""

    def study_pairs(self, *, kind: str = "cm", ours: str = MAIN_RUN, n_clips: int | None = None) -> Path:
        """The A/B study's stimuli (Table 2): test clips of ``kind`` as that set shows them, once with the
        baseline's first generated sound and once with ``ours``'s. Writes
        ``study_pairs/<clip>_{baseline,ours}.mp4`` and ``pairs.csv`` (:func:`cinefoley.study.read_pairs`);
        clips that cannot be decoded are left out."""
        folder = self.out / "study_pairs"
        sounds = {}
        for system, run in (("baseline", "baseline"), ("ours", ours)):
            gen = self.generated(run, kind)
            first = gen["sample"] == 0
            sounds[system] = dict(zip(gen["clip_id"][first], gen["wav"][first]))
        rows, skipped = [], []
        for cid in self.test_clip_ids():
            if len(rows) == (n_clips or self.settings.study_clips):
                break
            if not all(cid in s for s in sounds.values()):
                continue
            try:
                frames, fps = self.display_frames(kind, cid, len(sounds["baseline"][cid]) / SAMPLE_RATE)
            except MediaError as e:
                skipped.append((cid, str(e)))
                continue
            files = {system: f"{cid}_{system}.mp4" for system in sounds}
            for system, name in files.items():
                write_video(folder / name, frames, fps, audio=sounds[system][cid])
            rows.append({"clip_id": cid, **files})
        if len(rows) < 2:
            raise ValueError(f"{self.out / 'testsets' / f'test_{kind}.csv'}: {len(rows)} usable clips, a study "
                             f"needs 2 (skipped: {skipped[:3]})")
        csv_path = folder / "pairs.csv"
        atomic_write_bytes(csv_path, pd.DataFrame(rows).to_csv(index=False).encode())
        return csv_path


def _int(value) -> int | None:
    try:
        return None if value is None or pd.isna(value) or value == "" else int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value) -> float:
    try:
        return 0.0 if value is None or value == "" or pd.isna(value) else float(value)
    except (TypeError, ValueError):
        return 0.0


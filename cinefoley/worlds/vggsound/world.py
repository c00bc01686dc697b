"""The real tier: VGGSound videos and Diff-Foley's released networks behind the same interface as CineToy.

From files the user has: the official ``vggsound.csv`` (or a split list), a folder of videos, and
checkpoints (``cavp_epoch66.ckpt``, ``ldm_epoch240.ckpt``, ``eval_classifier.ckpt``, PANNs'
``Cnn14_16k_mAP=0.438.pth``, ``vggish-10086976.pth``), each loaded with every key checked. Nothing is
downloaded. Layout under ``out_dir``: ``vggsound/manifest.csv``; ``testsets/test_{original,cu,cm}.csv``
(VGGSound, VGG-CU, VGG-CM); ``features/teacher/`` (c_t = T(x_v) of every clip, and T(x_v^f) of the
test clips under ``cu/`` and ``cm/``); ``distill/<run>/`` (streamed self-distillation,
:mod:`cinefoley.worlds.vggsound.stream`, with the student's test features under ``features/``); the
rest as in every world.

What differs from CineToy, and where: clips are decoded from the videos when needed (never held in
memory); features are extracted once per clip and kept on disk in Diff-Foley's layout; the generator
works on Diff-Foley's 32-frame window (8.192 s, the first of each clip); VGGSound has no ground-truth
boxes or events (``has_boxes`` / ``has_events`` are False).

``profile``: ``smoke`` is for the tests (1 epoch, batch 2, 8 training frames, 1 sample of 2 steps, 20
bootstrap resamples); ``demo`` and ``paper`` both distil with the paper's settings (25 epochs, batch 32,
40 frames = 10 s at 4 fps) and generate with 25 DPM-Solver++ steps; ``paper`` adds the ablation runs of
Tables 3 and 4 and generates 10 samples per clip (``demo``: 1). ``model_options`` gives each checkpoint
kind's loader keywords (e.g. ``{"cavp": {"stage_blocks": [1, 1, 2, 1], "base_channels": 4}}`` for the
tests' small models); None = the released architectures. ``frames_dir``: a frame store
(:mod:`cinefoley.worlds.vggsound.frames`), written by :meth:`VGGSoundWorld.build` and read wherever
clips are decoded at 4 fps (features, distillation, the test sets' encoder input) instead of the mp4s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cinefoley.distill import DistillConfig
from cinefoley.errors import CheckpointError
from cinefoley.media.clips import read_manifest
from cinefoley.media.video import load_video, resize
from cinefoley.metrics.referees import Referees
from cinefoley.models.align_classifier import load_align_classifier
from cinefoley.models.cavp import load_cavp, varied_input
from cinefoley.models.check import check_checkpoints
from cinefoley.models.ldm import load_ldm
from cinefoley.models.panns import load_panns
from cinefoley.models.vggish import load_vggish
from cinefoley.testsets import load_params
from cinefoley.variations import apply
from cinefoley.worlds.base import RunSettings, World
from cinefoley.worlds.vggsound.features import extract_features, read_feature_dir
from cinefoley.worlds.vggsound.frames import load_frames, open_store, write_frame_store
from cinefoley.worlds.vggsound.manifest import build_manifest
from cinefoley.worlds.vggsound.stream import StreamDistillConfig, distill_vggsound
from cinefoley.worlds.vggsound.testsets import build_vggsound_testsets

#: The files a run may name: parameter -> (checkpoint kind, what it is).
CHECKPOINTS = {"cavp_ckpt": ("cavp", "cavp_epoch66.ckpt: the teacher T (CAVP's video encoder)"),
               "ldm_ckpt": ("ldm", "ldm_epoch240.ckpt: the generator G (Diff-Foley's LDM)"),
               "classifier_ckpt": ("eval_classifier", "eval_classifier.ckpt: the Align Acc referee"),
               "panns_ckpt": ("panns", "Cnn14_16k_mAP=0.438.pth: the FD / KID / KL / IS referee"),
               "vggish_ckpt": ("vggish", "vggish-10086976.pth: the FAD referee")}


@dataclass(frozen=True)
class VGGSoundSettings(RunSettings):
    """A real-tier profile: :class:`RunSettings` and the streamed distillation's clip length."""

    train_frames: int = 40  # 4-fps frames per training clip (a 10-s clip)
    gen_frames: int | None = 32  # Diff-Foley's window: 32 frames = 8.192 s


PROFILES = {
    "smoke": VGGSoundSettings(distill_epochs=1, distill_batch=2, train_frames=8, samples_per_clip=1,
                              ablation_samples_per_clip=1, diffusion_steps=2, griffin_lim_iters=8, n_boot=20,
                              gradcam_clips=1, study_clips=4, study_participants=3),
    "demo": VGGSoundSettings(ablations=False, samples_per_clip=1, ablation_samples_per_clip=1, gradcam_clips=4,
                             study_clips=8, study_participants=8),
    "paper": VGGSoundSettings(),
}


class VGGSoundWorld(World):
    """VGGSound + Diff-Foley behind the :class:`~cinefoley.worlds.base.World` interface (module docstring)."""

    name = "vggsound"
    test_set_names = {"original": "VGGSound", "cu": "VGG-CU", "cm": "VGG-CM"}

    def __init__(self, out_dir: str | Path, profile: str = "demo", *, seed: int = 0, vggsound_csv=None,
                 video_dir=None, cavp_ckpt=None, ldm_ckpt=None, classifier_ckpt=None, panns_ckpt=None,
                 vggish_ckpt=None, model_options: dict | None = None, num_workers: int = 4, frames_dir=None):
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
        super().__init__(out_dir, PROFILES[profile], profile=profile, seed=seed)
        self.settings: VGGSoundSettings
        self.paths = {"vggsound_csv": vggsound_csv, "video_dir": video_dir, "cavp_ckpt": cavp_ckpt,
                      "ldm_ckpt": ldm_ckpt, "classifier_ckpt": classifier_ckpt, "panns_ckpt": panns_ckpt,
                      "vggish_ckpt": vggish_ckpt}
        self.model_options = model_options or {}
        self.num_workers = num_workers
        self.frames_dir = None if frames_dir is None else Path(frames_dir)

    def path(self, name: str) -> Path:
        """A file or folder the user named; a clear error when it was not given or does not exist."""
        value = self.paths.get(name)
        if value is None:
            what = CHECKPOINTS[name][1] if name in CHECKPOINTS else name
            raise ValueError(f"world 'vggsound' needs the parameter {name} ({what}); it is None")
        path = Path(value)
        if not path.exists():
            raise FileNotFoundError(f"{path}: {name} does not exist")
        return path

    def options(self, kind: str) -> dict:
        opts = dict(self.model_options.get(kind, {}))
        if "stage_blocks" in opts:  # JSON (papermill) gives lists
            opts["stage_blocks"] = tuple(opts["stage_blocks"])
        return opts

    # ------------------------------------------------------------------------------------------
    # data

    @property
    def manifest_path(self) -> Path:
        return self.out / "vggsound" / "manifest.csv"

    def build(self, *, progress: bool = True) -> dict:
        """A manifest of the clips of ``vggsound_csv`` whose videos are in ``video_dir``; with ``frames_dir``,
        their frame store too (finished shards are kept)."""
        report = build_manifest(self.path("vggsound_csv"), self.path("video_dir"), self.manifest_path)
        split = pd.read_csv(report.manifest, dtype=str, keep_default_na=False)["split"].value_counts().to_dict()
        built = {"world": self.name, "clips_in_csv": report.rows, "videos_found": report.found,
                 "videos_missing": report.missing, "per_split": split, "manifest": str(report.manifest)}
        if self.frames_dir is not None:
            store = write_frame_store(self.manifest_path, self.frames_dir, workers=self.num_workers, progress=progress)
            built["frame_store"] = {k: store.summary[k] for k in ("clips", "unreadable", "bytes_per_clip")}
        return built

    @cached_property
    def frame_store(self):
        """The :class:`~cinefoley.worlds.vggsound.frames.FrameStore` of ``frames_dir``; None without one."""
        return open_store(self.frames_dir)

    def manifest(self) -> pd.DataFrame:
        if not self.manifest_path.exists():
            raise FileNotFoundError(f"{self.manifest_path}: no manifest yet; run notebook 01 (world.build())")
        return read_manifest(self.manifest_path)

    def _write_test_sets(self) -> dict[str, Path]:
        report = build_vggsound_testsets(self.manifest_path if self.manifest_path.exists() else self.manifest(),
                                         self.out / "testsets", seed=self.seed)
        if report.clips == report.failed:
            raise ValueError(f"{self.manifest_path}: no readable test clip, nothing to build VGG-CU/CM from")
        return report.testsets

    # ------------------------------------------------------------------------------------------
    # models

    def prepare_models(self, *, retrain: bool = False, progress: bool = True) -> pd.DataFrame:
        """Load every checkpoint named, every key checked; a table, and an error naming the files that
        do not load (after the table is written to ``02_checks.json``). ``retrain`` has no meaning here."""
        named = {CHECKPOINTS[n][0]: self.paths[n] for n in CHECKPOINTS if self.paths[n] is not None}
        if not named:
            raise ValueError(f"world 'vggsound' needs checkpoint files: {', '.join(CHECKPOINTS)}; none was given")
        results = check_checkpoints(named, options={k: self.options(k) for k in named})
        self.checkpoint_checks = results
        roles = {kind: what for kind, what in CHECKPOINTS.values()}
        table = pd.DataFrame([{"model": r.kind, "role": roles[r.kind].split(": ", 1)[1], "file": r.path,
                               "loads": r.loads, **r.keys, "error": r.error} for r in results])
        bad = [r for r in results if not r.loads]
        if bad:
            raise CheckpointError(bad[0].path, "; ".join(f"{r.kind}: {r.error}" for r in bad))
        return table

    @cached_property
    def teacher(self) -> nn.Module:
        return load_cavp(self.path("cavp_ckpt"), **self.options("cavp")).to(self.device)

    @cached_property
    def generator(self) -> nn.Module:
        return load_ldm(self.path("ldm_ckpt"), **self.options("ldm")).to(self.device)

    @cached_property
    def referees(self) -> Referees:
        classifier = load_align_classifier(self.path("classifier_ckpt"), **self.options("eval_classifier"))
        return Referees.real(load_panns(self.path("panns_ckpt"), **self.options("panns")),
                             load_vggish(self.path("vggish_ckpt"), **self.options("vggish")),
                             classifier.to(self.device), cache_dir=self.out / "cache" / "features", seed=self.seed)

    # ------------------------------------------------------------------------------------------
    # distillation and features

    @property
    def teacher_dir(self) -> Path:
        return self.out / "features" / "teacher"

    def _distill_config(self, variation: str, k: float) -> DistillConfig:
        return StreamDistillConfig(**asdict(super()._distill_config(variation, k)), n_frames=self.settings.train_frames,
                                   num_workers=self.num_workers,
                                   frames=None if self.frames_dir is None else str(self.frames_dir))

    def distill(self, name: str, *, progress: bool = True) -> dict:
        """Teacher features of every clip (once), then the streamed run ``name``."""
        run = self.run_dir(name)
        if (run / "student_state.pt").exists():
            return self.history(name)
        self.test_sets()  # writes the test clips' lengths into the manifest: their features are full length
        extract_features(self.manifest_path, self.teacher, self.teacher_dir, max_frames=self.settings.train_frames,
                         workers=self.num_workers, frames=self.frames_dir, progress=progress)
        _, history = distill_vggsound(self.teacher, self.manifest_path, self.teacher_dir, run,
                                      self.distill_runs()[name], progress=progress)
        return history

    def _load_student(self, path: Path) -> nn.Module:
        return load_cavp(path, **self.options("cavp")).to(self.device)

    def feature_dir(self, system: str) -> Path:
        return self.teacher_dir if system == "baseline" else self.run_dir(system) / "features"

    def features(self, system: str, kind: str) -> dict[str, torch.Tensor]:
        """Features of the test clips from disk, extracted first (once per clip) when missing."""
        if (system, kind) in self._features:
            return self._features[(system, kind)]
        folder, sets = self.feature_dir(system), self.test_sets()
        sub = folder if kind == "original" else folder / kind
        ids = sets[kind]["clip_id"].tolist()
        if not all((sub / f"{c}.npz").exists() for c in ids):
            extract_features(self.out / "testsets" / "test_original.csv", self.encoder(system), folder,
                             variation_manifests=[self.out / "testsets" / f"test_{k}.csv" for k in ("cu", "cm")],
                             workers=self.num_workers, frames=self.frames_dir, progress=False)
        feats = read_feature_dir(sub, ids)
        if not feats:
            raise ValueError(f"{sub}: no features of any {kind} test clip (all unreadable? see {folder / 'unreadable.csv'})")
        self._features[(system, kind)] = feats
        return feats

    @cached_property
    def _features(self) -> dict:
        return {}

    def encoder_input(self, kind: str, clip_ids: list[str]) -> torch.Tensor:
        """Decoded at 4 fps, varied at the video's own size, squash-resized to CAVP's 224 (one length)."""
        rows = self.test_sets()[kind].set_index("clip_id")
        clips = []
        for cid in clip_ids:
            row = rows.loc[cid]
            video = load_frames(self.frame_store, cid, row["video_path"], n_frames=int(row["n_frames"]),
                                start=_start(row))
            params = load_params(row)
            clips.append(varied_input(video, params))
        return torch.stack(clips)

    # ------------------------------------------------------------------------------------------
    # the A/B study

    def display_frames(self, kind: str, clip_id: str, seconds: float, fps: float = 12.0) -> tuple[np.ndarray, float]:
        """The clip at ``fps`` and its own size, with the 4-fps windows of test set ``kind`` stretched over
        the frames (:meth:`~cinefoley.variations.VariationParams.for_shape`)."""
        row = self.test_sets()[kind].set_index("clip_id").loc[clip_id]
        video = load_video(row["video_path"], fps=fps, n_frames=int(seconds * fps), start=_start(row))
        params = load_params(row)
        if params is not None:
            video = apply(video, params.for_shape(len(video), video.shape[2], video.shape[3]))
        video = resize(video, (video.shape[2] // 2 * 2, video.shape[3] // 2 * 2))  # H.264 wants even sizes
        return video.permute(0, 2, 3, 1).numpy(), fps


def _start(row: pd.Series) -> float:
    value = row.get("start_s")
    return float(value) if value is not None and pd.notna(value) else 0.0

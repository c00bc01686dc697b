"""The notebooks' steps on the real tier (VGGSound + Diff-Foley checkpoints): ``world="vggsound"``.

:mod:`cinefoley.cinetoy` gives the notebooks the CineToy world; this module gives them the same steps
on VGGSound, from files the user has: the official ``vggsound.csv``, a folder of videos and the
released checkpoints. Every notebook's ``parameters`` cell has ``world = "cinetoy"`` and the real-tier
paths (None by default); the cell after it reads::

    if world == "vggsound":
        from cinefoley import vggsound_run
        vggsound_run.notebook_01(out_dir, vggsound_csv=vggsound_csv, video_dir=video_dir, seed=seed)
        vggsound_run.skip_remaining_cells()

``notebook_0X`` runs that notebook's step here and shows its figure or table.
:func:`skip_remaining_cells` then turns every later cell of the kernel into a no-op (an IPython input
transformer that swaps a cell's source for a comment), so the CineToy cells neither run nor fail. Why
not the alternatives: raising an exception marks the papermill run as failed; wrapping every CineToy
cell in ``if world == "cinetoy":`` would rewrite them all. The transformer leaves those cells
untouched, papermill records them as run with no output, and nbval (which runs the default
``world="cinetoy"``) never meets it. In JupyterLab, :func:`resume_cinetoy_cells` undoes it.
Notebook 07 (the A/B study) is the exception: once it has its pairs of videos its cells are the same
for both worlds, so its cell only sets ``pairs_csv = vggsound_run.study_pairs(...)`` (VGG-CM clips
with the baseline's and the student's sound) and lets the notebook go on.

Layout under ``out_dir`` (as the CineToy run's): ``vggsound/manifest.csv``; ``testsets/test_{original,
cu,cm}.csv`` (VGGSound, VGG-CU, VGG-CM); ``features/teacher/`` (c_t = T(x_v) of every clip, and T(x_v^f)
of the test clips under ``cu/`` and ``cm/``); ``distill/<run>/`` (streamed self-distillation,
:mod:`cinefoley.real_distill`, with the student's test features under ``features/``);
``generated/<system>/<test set>/``; ``study_pairs/``; ``figures/``, ``tables/`` and the notebooks' JSON
records.

``profile`` (:data:`REAL_PROFILES`): ``smoke`` is for the tests (1 epoch, batch 2, 8 training frames,
1 sample of 2 steps, 20 bootstrap resamples); ``demo`` and ``paper`` both distil with the paper's
settings (25 epochs, batch 32, 40 frames = 10 s at 4 fps) and generate from Diff-Foley's first 32-frame
window with 25 DPM-Solver++ steps; ``paper`` adds the ablation runs of Tables 3 and 4 and generates 10
samples per clip (``demo``: 1). ``model_options`` gives each checkpoint kind's loader keywords, as
:func:`cinefoley.checkpoints.check_checkpoints` takes them (e.g. ``{"cavp": {"stage_blocks": [1, 1, 2,
1], "base_channels": 4}}`` for the small test models); None = the released architectures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cinefoley.checkpoints import CheckpointError, check_checkpoints
from cinefoley.utils import atomic_write_json

TEST_SETS = ("original", "cu", "cm")


@dataclass(frozen=True)
class RealSettings:
    """What a profile means on the real tier (see the module docstring)."""

    epochs: int
    batch_size: int
    n_frames: int  # 4-fps frames per training clip
    max_frames: int  # frames of the cached training features
    ablations: bool
    gen_frames: int  # feature frames the LDM generates from (Diff-Foley's window: 32 = 8.192 s)
    samples_per_clip: int
    diffusion_steps: int
    griffin_lim_iters: int
    n_boot: int  # bootstrap resamples of the metric intervals
    gradcam_clips: int  # VGG-CU clips shown in Figure 6
    study_clips: int  # VGG-CM clips in the A/B study (at most; Table 2 used 31 videos)


REAL_PROFILES = {"smoke": RealSettings(1, 2, 8, 8, False, 32, 1, 2, 8, 20, 1, 4),
                 "demo": RealSettings(25, 32, 40, 40, False, 32, 1, 25, 32, 1000, 4, 8),
                 "paper": RealSettings(25, 32, 40, 40, True, 32, 10, 25, 32, 1000, 8, 31)}


def settings(profile: str) -> RealSettings:
    if profile not in REAL_PROFILES:
        raise ValueError(f"profile must be one of {sorted(REAL_PROFILES)} on the real tier, got {profile!r}")
    return REAL_PROFILES[profile]


# ----------------------------------------------------------------------------------------------
# the notebook mechanics

def _skip_cell(lines: list[str]) -> list[str]:
    return ["# not run: world='vggsound' ran this notebook's step above (cinefoley.vggsound_run)\n"]


def skip_remaining_cells() -> None:
    """Make every later cell of this IPython kernel a no-op (outside IPython: nothing to do)."""
    from IPython import get_ipython

    ip = get_ipython()
    if ip is not None and _skip_cell not in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.append(_skip_cell)


def resume_cinetoy_cells() -> None:
    """Undo :func:`skip_remaining_cells` in this kernel."""
    from IPython import get_ipython

    ip = get_ipython()
    if ip is not None and _skip_cell in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.remove(_skip_cell)


def _show(obj) -> None:
    from IPython.display import display

    display(obj)


def _require(path: Path, made_by: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run {made_by} with world='vggsound' and this out_dir first")
    return path


def _given(name: str, value) -> Path:
    if value is None:
        raise ValueError(f"world='vggsound' needs the parameter {name} (a path); it is None")
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {name} does not exist")
    return path


# ----------------------------------------------------------------------------------------------
# models

def _options(model_options: dict | None, kind: str) -> dict:
    opts = dict((model_options or {}).get(kind, {}))
    if "stage_blocks" in opts:  # JSON (papermill) gives lists
        opts["stage_blocks"] = tuple(opts["stage_blocks"])
    return opts


def load_teacher(cavp_ckpt, model_options: dict | None = None, device: str | None = None):
    """CAVP's video encoder T from a ``cavp_epoch66.ckpt``-format file, every key checked."""
    from cinefoley.encoders.cavp import load_cavp

    model = load_cavp(_given("cavp_ckpt", cavp_ckpt), allow_audio_branch=True, **_options(model_options, "cavp"))
    return model.to(device or default_device())


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------------------------
# 01 · paired data

def notebook_01(out_dir, *, vggsound_csv, video_dir, seed: int = 0, a1: float = 0.4, a2: float = 0.6) -> dict:
    """Manifest of the clips the user has, VGG-CU / VGG-CM test manifests, and a paired figure.

    Writes ``vggsound/manifest.csv``, ``testsets/``, ``figures/01_paired_clip.png`` and ``01_vggsound.json``.
    """
    import matplotlib.pyplot as plt

    from cinefoley.data.testsets import load_params
    from cinefoley.data.vggsound import build_manifest
    from cinefoley.plots import paired_figure
    from cinefoley.real_tier import build_vggsound_testsets
    from cinefoley.variations import apply
    from cinefoley.video import load_video

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(_given("vggsound_csv", vggsound_csv), _given("video_dir", video_dir),
                              out / "vggsound" / "manifest.csv")
    print(manifest)
    tests = build_vggsound_testsets(manifest.manifest, out / "testsets", seed=seed, a1=a1, a2=a2)
    print(tests)
    sets = {k: pd.read_csv(p, dtype={"clip_id": str}) for k, p in tests.testsets.items()}
    if sets["original"].empty:
        raise ValueError(f"{manifest.manifest}: no readable test clip, nothing to build VGG-CU/CM from")

    # the first test clip as VGG-CU and VGG-CM show it, 8 of its frames
    row = sets["original"].iloc[0]
    cu, cm = (load_params(sets[k].set_index("clip_id").loc[row.clip_id]) for k in ("cu", "cm"))
    video = load_video(row.video_path, n_frames=int(row.n_frames), start=float(row.start_s))
    pick = np.linspace(0, len(video) - 1, min(8, len(video))).round().astype(int).tolist()
    fig = paired_figure([
        {"video": video[pick], "label": "original\n+ f_cu window", "windows": [cu.boxes[t] for t in pick]},
        {"video": apply(video, cu)[pick], "label": f"VGG-CU\nr=({cu.r_h:.2f},{cu.r_w:.2f})"},
        {"video": video[pick], "label": "original\n+ f_cm window", "windows": [cm.boxes[t] for t in pick]},
        {"video": apply(video, cm)[pick], "label": f"VGG-CM\n{cm.axis}"},
    ])
    fig.savefig(out / "figures" / "01_paired_clip.png", dpi=120)
    plt.show()

    mf = pd.read_csv(manifest.manifest, dtype=str, keep_default_na=False)
    summary = {"world": "vggsound", "clips_in_csv": manifest.rows, "videos_found": manifest.found,
               "videos_missing": manifest.missing, "per_split": mf["split"].value_counts().to_dict(),
               "test_clips": len(sets["original"]), "test_unreadable": tests.failed,
               "testsets": {k: str(p) for k, p in tests.testsets.items()}, "figure_clip": row.clip_id}
    atomic_write_json(out / "01_vggsound.json", summary)
    _show(pd.Series({k: v for k, v in summary.items() if not isinstance(v, dict)}, name="VGGSound").to_frame())
    return summary


# ----------------------------------------------------------------------------------------------
# 02 · the checkpoints

def notebook_02(out_dir, *, cavp_ckpt=None, ldm_ckpt=None, classifier_ckpt=None, panns_ckpt=None, vggish_ckpt=None,
                model_options: dict | None = None) -> pd.DataFrame:
    """Load every given checkpoint with its checked loader; a table of what loaded, ``02_checks.json``.

    Raises :class:`~cinefoley.checkpoints.CheckpointError` naming the files that did not load (after
    showing the table), so a notebook run stops on a wrong file.
    """
    paths = {"cavp": cavp_ckpt, "ldm": ldm_ckpt, "eval_classifier": classifier_ckpt, "panns": panns_ckpt,
             "vggish": vggish_ckpt}
    paths = {k: v for k, v in paths.items() if v is not None}
    if not paths:
        raise ValueError("world='vggsound' needs at least one of cavp_ckpt, ldm_ckpt, classifier_ckpt, "
                         "panns_ckpt, vggish_ckpt")
    opts = {k: _options(model_options, k) for k in paths}
    results = check_checkpoints(paths, options=opts)
    table = pd.DataFrame([{"checkpoint": r.kind, "file": r.path, "loads": r.loads, **r.keys, "seconds": r.seconds,
                           "error": r.error} for r in results])
    atomic_write_json(Path(out_dir) / "02_checks.json", {"world": "vggsound", "models": "checkpoints",
                                                         "checks": [asdict(r) for r in results]})
    _show(table)
    bad = [r for r in results if not r.loads]
    if bad:
        raise CheckpointError(bad[0].path, "; ".join(f"{r.kind}: {r.error}" for r in bad))
    return table


# ----------------------------------------------------------------------------------------------
# 03 · self-distillation

def distill_runs(profile: str, seed: int = 0, device: str | None = None, num_workers: int = 4):
    """The runs of the profile as :class:`~cinefoley.real_distill.StreamDistillConfig` (main: f_cu, k = 75 %)."""
    from cinefoley.cinetoy import DISTILL_RUNS, MAIN_RUN
    from cinefoley.real_distill import StreamDistillConfig

    s = settings(profile)
    names = DISTILL_RUNS if s.ablations else {MAIN_RUN: DISTILL_RUNS[MAIN_RUN]}
    return {name: StreamDistillConfig(variation=v, k=k, epochs=s.epochs, batch_size=s.batch_size, seed=seed,
                                      device=device or default_device(), n_frames=s.n_frames,
                                      num_workers=num_workers)
            for name, (v, k) in names.items()}


def _frame_cos(ref: np.ndarray, feat: np.ndarray) -> np.ndarray:
    n = min(len(ref), len(feat))
    a, b = ref[:n], feat[:n]
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _pad(rows: list[np.ndarray]) -> np.ndarray:
    """Clips of different lengths as one (N, T_max) array, NaN after each clip's end."""
    width = max(len(r) for r in rows)
    return np.stack([np.pad(r, (0, width - len(r)), constant_values=np.nan) for r in rows])


def feature_similarity(teacher_dir: Path, student_dir: Path, testsets: Path) -> tuple[pd.DataFrame, dict]:
    """Per test set: mean per-frame cos of T(x^f) and of S(x^f) to c_t = T(x) (the full clip).

    Returns the table (columns ``test_set, teacher_on_varied, student_on_varied, clips_improved, clips``)
    and, per test set, the per-frame means (before, after) for a figure.
    """
    rows, curves = [], {}
    for kind in TEST_SETS:
        ids = pd.read_csv(testsets / f"test_{kind}.csv", dtype={"clip_id": str}).clip_id
        sub = "" if kind == "original" else kind
        before, after = [], []
        for cid in ids:
            ref_path = teacher_dir / f"{cid}.npz"
            if not ref_path.exists():  # unreadable at extraction, listed there
                continue
            ref = np.load(ref_path)["feat"]
            t_f, s_f = (np.load(d / sub / f"{cid}.npz")["feat"] for d in (teacher_dir, student_dir))
            before.append(_frame_cos(ref, t_f))
            after.append(_frame_cos(ref, s_f))
        if not before:
            raise ValueError(f"{teacher_dir}: no teacher features of the clips of {testsets / f'test_{kind}.csv'}")
        b, a = _pad(before), _pad(after)
        curves[kind] = (np.nanmean(b, 0), np.nanmean(a, 0))
        rows.append({"test_set": kind, "teacher_on_varied": float(np.nanmean(b)), "student_on_varied": float(np.nanmean(a)),
                     "clips_improved": float((np.nanmean(a, 1) > np.nanmean(b, 1)).mean()), "clips": len(b)})
    return pd.DataFrame(rows), curves


def notebook_03(out_dir, *, cavp_ckpt, profile: str = "demo", seed: int = 0, model_options: dict | None = None,
                num_workers: int = 4) -> dict:
    """Teacher features once per clip, streamed self-distillation, loss curves, feature drift before/after.

    Needs notebook 01's manifest and test sets. Writes ``features/teacher/``, ``distill/<run>/``,
    ``figures/03_loss.png``, ``figures/03_feature_similarity.png``, ``tables/03_feature_similarity.{csv,md}``.
    Everything resumes: features already there are kept, a run goes on from its checkpoint.
    """
    import matplotlib.pyplot as plt

    from cinefoley.cinetoy import MAIN_RUN
    from cinefoley.evaluate import save_table
    from cinefoley.real_distill import distill_vggsound
    from cinefoley.real_tier import extract_features

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    manifest = _require(out / "vggsound" / "manifest.csv", "notebook 01")
    testsets = out / "testsets"
    varied = [_require(testsets / f"test_{k}.csv", "notebook 01") for k in ("cu", "cm")]
    s = settings(profile)
    teacher = load_teacher(cavp_ckpt, model_options)
    teacher_dir = out / "features" / "teacher"
    print(extract_features(manifest, teacher, teacher_dir, variation_manifests=varied, max_frames=s.max_frames,
                           workers=num_workers))

    histories = {}
    for name, cfg in distill_runs(profile, seed, num_workers=num_workers).items():
        run = out / "distill" / name
        student, histories[name] = distill_vggsound(teacher, manifest, teacher_dir, run, cfg)
        print(f"{name}: student in {run / 'student_state.pt'}")
        print(extract_features(testsets / "test_original.csv", student, run / "features",
                               variation_manifests=varied, workers=num_workers))

    fig, ax = plt.subplots(figsize=(7, 3))
    for name, h in histories.items():
        steps = np.asarray(h["step_loss"])
        smooth = np.convolve(steps, np.ones(5) / 5, mode="valid") if len(steps) > 5 else steps
        ax.plot(smooth, lw=2.2 if name == MAIN_RUN else 1, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("$L_p$ (5-step mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figures" / "03_loss.png", dpi=110)
    plt.show()

    table, curves = feature_similarity(teacher_dir, out / "distill" / MAIN_RUN / "features", testsets)
    save_table(table, out / "tables" / "03_feature_similarity")
    fig, axes = plt.subplots(1, len(curves), figsize=(11, 3), sharey=True, squeeze=False)
    for ax, (kind, (before, after)) in zip(axes[0], curves.items()):
        ax.plot(before, "o-", ms=3, label="teacher T(x^f)")
        ax.plot(after, "o-", ms=3, label="student S(x^f)")
        ax.set_title(f"{kind} test set")
        ax.set_xlabel("frame (4 fps)")
    axes[0, 0].set_ylabel("cos to T(x) (full frame)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figures" / "03_feature_similarity.png", dpi=110)
    plt.show()
    _show(table)
    record = {"world": "vggsound", "profile": profile, "runs": {n: asdict(c) for n, c in distill_runs(
        profile, seed, num_workers=num_workers).items()}, "final_loss": {n: h["epoch_loss"][-1] if h["epoch_loss"]
                                                                          else None for n, h in histories.items()},
              "feature_similarity": table.to_dict("records")}
    atomic_write_json(out / "03_vggsound.json", record)
    return record


# ----------------------------------------------------------------------------------------------
# 04 · generation

def systems(out_dir) -> dict[str, Path]:
    """The feature folders of the systems compared: ``baseline`` (the teacher, i.e. Diff-Foley) and each
    finished student of notebook 03 (``distill/<run>/features``)."""
    from cinefoley.cinetoy import DISTILL_RUNS, MAIN_RUN

    out = Path(out_dir)
    found = {"baseline": _require(out / "features" / "teacher", "notebook 03")}
    for name in DISTILL_RUNS:
        if (out / "distill" / name / "student_state.pt").exists():
            found[name] = out / "distill" / name / "features"
    if MAIN_RUN not in found:
        _require(out / "distill" / MAIN_RUN / "student_state.pt", "notebook 03")
    return found


def features_of_test_set(feature_dir: Path, testsets: Path, kind: str, frames: int) -> tuple[dict[str, torch.Tensor], list]:
    """{clip id: its first ``frames`` feature frames} of test set ``kind``, and the clips left out (why)."""
    ids = pd.read_csv(testsets / f"test_{kind}.csv", dtype={"clip_id": str}).clip_id
    sub = feature_dir if kind == "original" else feature_dir / kind
    feats, left_out = {}, []
    for cid in ids:
        path = sub / f"{cid}.npz"
        if not path.exists():
            left_out.append((cid, f"{path}: no features (unreadable at extraction)"))
            continue
        f = np.load(path)["feat"]
        if len(f) < frames:
            left_out.append((cid, f"{path}: {len(f)} frames, fewer than the {frames}-frame window"))
            continue
        feats[cid] = torch.from_numpy(f[:frames])
    return feats, left_out


def notebook_04(out_dir, *, ldm_ckpt, profile: str = "demo", seed: int = 0, model_options: dict | None = None) -> dict:
    """Audio for every test set (VGGSound, VGG-CU, VGG-CM) from the baseline's and each student's features.

    Diff-Foley's LDM, CFG w = 4.5, DPM-Solver++ (Eq. 3-4), Griffin-Lim; written by
    :func:`cinefoley.generate.generate_set` under ``generated/<system>/<test set>/`` (resumable), with
    ``figures/04_examples.png`` and players for the first test clip.
    """
    import matplotlib.pyplot as plt

    from cinefoley.cinetoy import MAIN_RUN
    from cinefoley.generate import GenerationConfig, generate_set, read_generated
    from cinefoley.ldm import load_ldm
    from cinefoley.plots import mel_image

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    s = settings(profile)
    ldm = load_ldm(_given("ldm_ckpt", ldm_ckpt), **_options(model_options, "ldm")).to(default_device())
    cfg = GenerationConfig(samples_per_clip=s.samples_per_clip, steps=s.diffusion_steps, seed=seed,
                           griffin_lim_iters=s.griffin_lim_iters)
    testsets = out / "testsets"
    record = {"world": "vggsound", "profile": profile, "generation": asdict(cfg), "sets": {}, "left_out": {}}
    for name, feature_dir in systems(out).items():
        for kind in TEST_SETS:
            feats, left_out = features_of_test_set(feature_dir, testsets, kind, s.gen_frames)
            if not feats:
                raise ValueError(f"{feature_dir}: no {kind} test clip has {s.gen_frames} frames of features")
            folder = generate_set(ldm, feats, out / "generated" / name / kind, cfg)
            record["sets"][f"{name}/{kind}"] = {"folder": str(folder), "clips": len(feats)}
            record["left_out"][f"{name}/{kind}"] = left_out
    atomic_write_json(out / "04_vggsound.json", record)

    cid = sorted(feats)[0]
    fig, axes = plt.subplots(len(TEST_SETS), 2, figsize=(9, 2.2 * len(TEST_SETS)), squeeze=False)
    players = []
    for col, system in enumerate(("baseline", MAIN_RUN)):
        for row, kind in enumerate(TEST_SETS):
            gen = read_generated(out / "generated" / system / kind)
            k = int(np.flatnonzero(gen["clip_id"] == cid)[0])
            label = "ours" if system != "baseline" else "baseline"
            mel_image(axes[row, col], gen["mel"][k].astype(np.float32), title=f"{label} · {kind} · {cid}")
            players.append((f"{label} · {kind}", gen["wav"][k]))
    fig.tight_layout()
    fig.savefig(out / "figures" / "04_examples.png", dpi=110)
    plt.show()
    from IPython.display import Audio

    for label, wav in players:
        print(label)
        _show(Audio(wav, rate=16000))
    return record


# ----------------------------------------------------------------------------------------------
# 05 · metrics

def reference_audio(testsets: Path, clip_ids: list[str], seconds: float) -> tuple[dict[str, np.ndarray], list]:
    """The real sound of each test clip (16 kHz, ``seconds`` from the clip's start), read from its video.

    Clips whose audio cannot be read are left out and returned with the reason.
    """
    from cinefoley.audio import load_audio
    from cinefoley.errors import MediaError

    rows = pd.read_csv(testsets / "test_original.csv", dtype={"clip_id": str}).set_index("clip_id")
    wavs, left_out = {}, []
    for cid in clip_ids:
        row = rows.loc[cid]
        start = float(row["start_s"]) if pd.notna(row.get("start_s")) else 0.0
        try:
            wavs[cid] = load_audio(row["video_path"], offset=start, duration=seconds)
        except MediaError as e:
            left_out.append((cid, str(e)))
    return wavs, left_out


def notebook_05(out_dir, *, classifier_ckpt, panns_ckpt, vggish_ckpt, profile: str = "demo", seed: int = 0,
                model_options: dict | None = None) -> dict:
    """Table 1 (and Tables 3/4 when the ablation students exist) and Figure 5 on VGGSound / VGG-CU / VGG-CM.

    FAD (VGGish), FD / KID / KL / IS (PANNs Cnn14) against the real audio of each test video, and Align
    Acc from Diff-Foley's evaluation classifier judged against the teacher's features of the *original*
    clip (see :mod:`cinefoley.evaluate`), each with a bootstrap 95 % interval over test videos, and the
    paired ours − baseline differences. Writes ``table1``, ``table1_paired_diff``, ``table3``/``table4``
    (with ablations), ``figure5_per_class_align_gain`` (``.csv`` + ``.md``), ``figures/05_table1.png``,
    ``figures/05_figure5_per_class_gain.png`` and ``05_metrics.json``.
    """
    import matplotlib.pyplot as plt

    from cinefoley.align_classifier import load_align_classifier
    from cinefoley.cinetoy import MAIN_RUN
    from cinefoley.evaluate import (METRICS, extract, intervals_table, paired_differences, per_class_align_gain,
                                    save_table, score_with_intervals)
    from cinefoley.generate import read_generated
    from cinefoley.metrics import FeatureCache
    from cinefoley.metrics.real_extractors import PannsVGGishExtractor, align_acc_probs, load_panns, load_vggish
    from cinefoley.utils import write_run_record

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    s = settings(profile)
    testsets = out / "testsets"
    found = systems(out)
    # the referee's video features: the teacher's, of the full-frame clip, for every test set
    video_feats, _ = features_of_test_set(found["baseline"], testsets, "original", s.gen_frames)
    seconds = s.gen_frames * 16 * 256 / 16000  # the generated mel's length: 16 mel frames of 256 samples a frame
    wavs, no_audio = reference_audio(testsets, sorted(video_feats), seconds)
    if not wavs:
        raise ValueError(f"{testsets / 'test_original.csv'}: no test clip with readable audio to score against")
    extractor = FeatureCache(PannsVGGishExtractor(load_panns(_given("panns_ckpt", panns_ckpt), **_options(model_options, "panns")),
                                                  load_vggish(_given("vggish_ckpt", vggish_ckpt), **_options(model_options, "vggish"))),
                             out / "cache" / "features")
    classifier = load_align_classifier(_given("classifier_ckpt", classifier_ckpt),
                                       **_options(model_options, "eval_classifier")).to(default_device())
    reference = extract(extractor, list(wavs), list(wavs.values()))

    features = {}
    for name in found:
        for kind in TEST_SETS:
            gen = read_generated(_require(out / "generated" / name / kind, "notebook 04"))
            keep = np.flatnonzero(np.isin(gen["clip_id"], list(wavs)))
            gen = {k: v[keep] for k, v in gen.items()}
            feats = extract(extractor, gen["clip_id"], list(gen["wav"]))
            feats.align_prob = align_acc_probs(classifier, gen["mel"].astype(np.float32),
                                               torch.stack([video_feats[c] for c in gen["clip_id"]]), seed=seed)
            features[(name, kind)] = feats

    scored = {}

    def scored_with(system, kind, boots):
        if (system, kind) not in scored:
            scored[(system, kind)] = score_with_intervals(features[(system, kind)], reference, n_boot=boots, seed=seed)
        return scored[(system, kind)]

    table1 = intervals_table({(k, label): scored_with(system, k, s.n_boot) for k in TEST_SETS
                              for label, system in (("baseline", "baseline"), ("ours", MAIN_RUN))})
    save_table(table1, out / "table1")
    diffs = intervals_table({(k, "ours-baseline"): paired_differences(
        features[("baseline", k)], features[(MAIN_RUN, k)], reference, n_boot=s.n_boot, seed=seed) for k in TEST_SETS})
    save_table(diffs, out / "table1_paired_diff")
    tables = {"table1": table1, "table1_paired_diff": diffs}
    for stem, names in (("table3", ["cu@50", "cm@50", "cu&cm@66.7"]), ("table4", ["cu@50", "cu@75", "cu@100"])):
        have = [n for n in names if n in found]
        if len(have) > 1:  # an ablation needs more than the main run
            tables[stem] = intervals_table({(k, n): scored_with(n, k, max(20, s.n_boot // 3)) for k in TEST_SETS
                                            for n in have}, index_names=("test_set", "training"))
            save_table(tables[stem], out / stem)

    fig, axes = plt.subplots(1, len(METRICS), figsize=(15, 3))
    for ax, m in zip(axes, METRICS):
        for j, system in enumerate(("baseline", "ours")):
            t = table1[table1.system == system]
            x = np.arange(len(t)) + (j - 0.5) * 0.3
            ax.errorbar(x, t[m], yerr=[t[m] - t[f"{m}_lo"], t[f"{m}_hi"] - t[m]], fmt="o", capsize=3, label=system)
        ax.set_xticks(range(len(TEST_SETS)), ["VGGSound", "VGG-CU", "VGG-CM"])
        ax.set_title(m)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figures" / "05_table1.png", dpi=110)
    plt.show()

    labels = pd.read_csv(testsets / "test_original.csv", dtype={"clip_id": str}).set_index("clip_id")["label"].to_dict()
    gain = per_class_align_gain(features[("baseline", "cu")], features[(MAIN_RUN, "cu")], labels)
    save_table(gain.reset_index(), out / "figure5_per_class_align_gain")
    top = gain.head(25)  # the paper's Figure 5 shows the top 25 of 309 classes
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(top)), 3))
    ax.bar(top.index, top["gain"], color=["tab:green" if g > 0 else "tab:red" for g in top["gain"]])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("Align Acc gain on VGG-CU (points)")
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(out / "figures" / "05_figure5_per_class_gain.png", dpi=110)
    plt.show()
    _show(table1[["test_set", "system", *METRICS]].round(3))
    _show(diffs.round(3))
    write_run_record(out, config={"world": "vggsound", "profile": profile, "seed": seed, "n_boot": s.n_boot,
                                  "scored_seconds": seconds},
                     results={"table1": table1.to_dict("records"), "paired_diff": diffs.to_dict("records"),
                              "clips_scored": len(wavs), "no_audio": no_audio},
                     name="05_metrics.json")
    return tables


# ----------------------------------------------------------------------------------------------
# 06 · Grad-CAM

def load_student(out_dir, model_options: dict | None = None, run: str | None = None):
    """The student of ``distill/<run>`` (default the main run, f_cu with k = 75 %), checked like the teacher."""
    from cinefoley.cinetoy import MAIN_RUN
    from cinefoley.encoders.cavp import load_cavp

    path = _require(Path(out_dir) / "distill" / (run or MAIN_RUN) / "student_state.pt", "notebook 03")
    return load_cavp(path, **_options(model_options, "cavp")).to(default_device())


def notebook_06(out_dir, *, cavp_ckpt, profile: str = "demo", model_options: dict | None = None) -> dict:
    """Figure 6 on VGG-CU: Grad-CAM of the teacher T and the student S on close-ups, the real sound underneath.

    The Grad-CAM target is the mean over frames of cos(features, c_t), c_t = T(x_v) of the full clip
    (:mod:`cinefoley.explain`), at SlowOnly's last stage. VGGSound has no ground-truth box of the
    sounding object, so CineToy's attention-on-object score has no counterpart here: the figure is
    the result. Writes ``figures/06_figure6_gradcam_<clip id>.png`` for the first ``gradcam_clips``
    VGG-CU clips of the profile, and ``06_vggsound.json``.
    """
    import matplotlib.pyplot as plt

    from cinefoley.audio import load_audio, mel_spectrogram
    from cinefoley.data.testsets import load_params
    from cinefoley.encoders.cavp import squash_resize
    from cinefoley.errors import MediaError
    from cinefoley.explain import grad_cam
    from cinefoley.plots import mel_image, to_image
    from cinefoley.variations import apply
    from cinefoley.video import load_video

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    s = settings(profile)
    teacher_dir = _require(out / "features" / "teacher", "notebook 03")
    encoders = {"teacher": load_teacher(cavp_ckpt, model_options), "student": load_student(out, model_options)}
    cu = pd.read_csv(_require(out / "testsets" / "test_cu.csv", "notebook 01"), dtype={"clip_id": str})
    shown, skipped = [], []
    for _, row in cu.iterrows():
        if len(shown) == s.gradcam_clips:
            break
        ref_path = teacher_dir / f"{row.clip_id}.npz"
        if not ref_path.exists():
            skipped.append((row.clip_id, f"{ref_path}: no teacher features (unreadable at extraction)"))
            continue
        params = load_params(row)
        start = float(row.start_s) if pd.notna(row.get("start_s")) else 0.0
        try:
            video = load_video(row.video_path, n_frames=params.n_frames, start=start)
        except MediaError as e:
            skipped.append((row.clip_id, str(e)))
            continue
        frames = squash_resize(apply(video, params))[None]
        ref = torch.from_numpy(np.load(ref_path)["feat"][:params.n_frames])[None]
        maps = {name: grad_cam(enc, frames, ref, layer=enc.video_encoder.layer4)[0] for name, enc in encoders.items()}
        try:
            mel = mel_spectrogram(load_audio(row.video_path, offset=start, duration=params.n_frames / 4.0))
        except MediaError as e:
            mel, no_sound = None, str(e)
        pick = np.linspace(0, params.n_frames - 1, min(8, params.n_frames)).round().astype(int)
        fig = plt.figure(figsize=(1.3 * len(pick), 4.6 if mel is not None else 3.6))
        grid = fig.add_gridspec(4 if mel is not None else 3, len(pick))
        for col, t in enumerate(pick):
            image = to_image(frames[0, t])
            for r, (name, m) in enumerate([("VGG-CU", None), *maps.items()]):
                ax = fig.add_subplot(grid[r, col])
                ax.imshow(image)
                if m is not None:
                    ax.imshow(m[t], cmap="jet", alpha=0.45, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(name, fontsize=9)
        if mel is not None:
            mel_image(fig.add_subplot(grid[3, :]), mel, title=f"real sound: {row.label}")
        else:
            fig.suptitle(f"{row.label} (no sound: {no_sound})", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "figures" / f"06_figure6_gradcam_{row.clip_id}.png", dpi=120)
        plt.show()
        shown.append(row.clip_id)
    if not shown:
        raise ValueError(f"{out / 'testsets' / 'test_cu.csv'}: no VGG-CU clip could be shown: {skipped[:3]}")
    record = {"world": "vggsound", "profile": profile, "clips": shown, "skipped": skipped,
              "target": "mean over frames of cos(features, T(x_v))", "layer": "video_encoder.layer4"}
    atomic_write_json(out / "06_vggsound.json", record)
    return record


# ----------------------------------------------------------------------------------------------
# 07 · the A/B study's stimuli

def study_pairs(out_dir, *, profile: str = "demo", kind: str = "cm", ours: str | None = None, fps: float = 12.0) -> Path:
    """Pairs of videos for the A/B study (Table 2): test clips of ``kind`` (default VGG-CM) as that test
    set shows them, once with the baseline's first generated sample and once with the student's.

    The variation is replayed on frames decoded at ``fps`` (the 4-fps windows stretched over them by
    :meth:`~cinefoley.variations.VariationParams.for_shape`) at the video's own size, for as long as the
    generated sound (8.192 s). Writes ``study_pairs/<clip>_{baseline,ours}.mp4`` and ``pairs.csv``
    (the format of :func:`cinefoley.study.read_pairs`); clips that cannot be decoded are left out.
    """
    from cinefoley.cinetoy import MAIN_RUN
    from cinefoley.data.testsets import load_params
    from cinefoley.errors import MediaError
    from cinefoley.generate import read_generated
    from cinefoley.utils import atomic_write_bytes
    from cinefoley.variations import apply
    from cinefoley.video import load_video, resize, write_video

    out = Path(out_dir)
    folder = out / "study_pairs"
    sounds = {}
    for system, run in (("baseline", "baseline"), ("ours", ours or MAIN_RUN)):
        gen = read_generated(_require(out / "generated" / run / kind, "notebook 04"))
        first = gen["sample"] == 0
        sounds[system] = dict(zip(gen["clip_id"][first], gen["wav"][first]))
    rows, skipped = [], []
    manifest = pd.read_csv(_require(out / "testsets" / f"test_{kind}.csv", "notebook 01"), dtype={"clip_id": str})
    for _, row in manifest.iterrows():
        if len(rows) == settings(profile).study_clips:
            break
        cid = row.clip_id
        if not all(cid in sound for sound in sounds.values()):
            continue
        seconds = len(sounds["baseline"][cid]) / 16000
        start = float(row.start_s) if pd.notna(row.get("start_s")) else 0.0
        try:
            video = load_video(row.video_path, fps=fps, n_frames=int(seconds * fps), start=start)
        except MediaError as e:
            skipped.append((cid, str(e)))
            continue
        params = load_params(row).for_shape(len(video), video.shape[2], video.shape[3])
        frames = apply(video, params)
        frames = resize(frames, (frames.shape[2] // 2 * 2, frames.shape[3] // 2 * 2))  # H.264 wants even sizes
        frames = frames.permute(0, 2, 3, 1).numpy()
        files = {system: f"{cid}_{system}.mp4" for system in sounds}
        for system, name in files.items():
            write_video(folder / name, frames, fps, audio=sounds[system][cid])
        rows.append({"clip_id": cid, **files})
    if len(rows) < 2:
        raise ValueError(f"{out / 'testsets' / f'test_{kind}.csv'}: {len(rows)} usable clips, a study needs 2 "
                         f"(skipped: {skipped[:3]})")
    csv_path = folder / "pairs.csv"
    atomic_write_bytes(csv_path, pd.DataFrame(rows).to_csv(index=False).encode())
    print(f"{len(rows)} study pairs from {kind} test clips in {csv_path}" + (f"; {len(skipped)} skipped" if skipped else ""))
    return csv_path

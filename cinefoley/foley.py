"""Foley for your own videos: the generator's sound for any video file, put back under its own pictures.

For each video, :func:`foley` reads frames at 4 fps from ``start`` over the generator's window (CineToy's
generator: 8 frames, 2.048 s; Diff-Foley's LDM: 32 frames, 8.192 s), or over the whole video in overlapping
windows (``full``); gets per-frame features from every encoder asked for (``"baseline"``: the teacher, i.e.
Diff-Foley's encoder; or a student); samples the generator with CFG and DPM-Solver++
(:func:`cinefoley.generate.sample_mels`), batched across windows, samples, encoders and videos; vocodes;
and writes, under ``out_dir/<system>/``, ``<stem>.mp4`` (the video's own pictures with the new sound,
:func:`cinefoley.media.mux.mux_sound`), ``<stem>.wav`` (16 kHz float) and ``<stem>.mel.npz`` (the generator's
mel, which Align Acc judges); with several samples ``<stem>-s<k>.*``. Every (video, sample, window) has its
own seed, the same for every encoder, so two systems differ only by their features.

**Timing**: a window's W frames at 4 fps span W / 4 s of pictures and the generator gives W · 0.256 s of
sound for them (Diff-Foley: 32 frames, 8.192 s), starting with the first picture. One window's sound and
pictures both last W · 0.256 s (the video's end permitting); in ``full`` runs each window's sound starts at
its first picture's time, so the sound never drifts from the pictures.

**Joining windows** (``full``): consecutive windows' pictures overlap by :data:`JOIN_FRAMES` frames (0.5 s;
the last window is moved back to end with the video, overlapping more). Their mels are cross-faded over the
last :data:`JOIN_FRAMES` · 16 mel frames of each overlap (raised cosine, in the normalised log-mel domain)
and the joined mel is vocoded in one piece. Concatenating the windows' waveforms instead would put a seam
where two independent Griffin-Lim phases meet: a click.

**Short clips**: a video with fewer 4-fps frames after ``start`` than one window still gets its sound, as
long as the clip: its frames are padded to the window by holding the last one (as a player holds the last
picture; the generator was trained on whole windows only), and the mel is cut to the clip's length before
vocoding. Less than one 4-fps frame (0.25 s) is an error naming the file.

A video that cannot be used (unreadable, no video stream, nothing after ``start``) is recorded with its
reason and the others go on. ``out_dir/foley.json`` holds the inputs, outputs, settings, models, versions
and every failure, and is rewritten after every batch, so a killed run keeps what it finished and a rerun
with the same settings and models reuses it. With the baseline and one student, ``out_dir/pairs.csv`` is
the pairs CSV of ``cinefoley study create`` (sample 0 of each video).
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch import nn

from cinefoley.errors import CheckpointError, MediaError
from cinefoley.generate import GenerationConfig, sample_mels, sample_seed
from cinefoley.media.audio import HOP_LENGTH, SAMPLE_RATE
from cinefoley.media.clips import MEL_FRAMES_PER_VIDEO_FRAME
from cinefoley.media.mux import mux_sound
from cinefoley.media.video import DEFAULT_FPS, VIDEO_SUFFIXES, load_video, video_duration
from cinefoley.media.vocoder import GriffinLimVocoder
from cinefoley.metrics.referees import weights_digest
from cinefoley.models.cavp import CHUNK_FRAMES, CAVPVideoEncoder, load_cavp, squash_resize
from cinefoley.models.ldm import WINDOW_FRAMES, DiffFoleyLDM
from cinefoley.utils import atomic_savez, atomic_write_bytes, atomic_write_text, write_run_record

#: frames (at 4 fps) two consecutive windows share; the sound is cross-faded over them
JOIN_FRAMES = 2
RECORD = "foley.json"
MAX_PEAK = 0.99  # of the mp4's sound
PAIRS = "pairs.csv"
BASELINE = "baseline"


@dataclass
class FoleySettings:
    """How sound is made for every video (``foley.json`` records them; a rerun reuses only identical work)."""

    samples: int = 1
    seed: int = 0
    guidance: float = GenerationConfig.guidance  # w of Eq. 4 (``--cfg``)
    steps: int = GenerationConfig.steps  # DPM-Solver++ steps
    start: float = 0.0  # seconds into every video
    full: bool = False  # the whole video (from ``start``) in joined windows, not one window
    batch_size: int = GenerationConfig.batch_size  # windows per UNet batch, across videos
    griffin_lim_iters: int = GenerationConfig.griffin_lim_iters

    def __post_init__(self):
        if self.samples < 1 or self.steps < 1 or self.batch_size < 1 or self.start < 0:
            raise ValueError(f"samples, steps and batch_size must be >= 1 and start >= 0: {self}")

    def generation(self) -> GenerationConfig:
        return GenerationConfig(samples_per_clip=self.samples, guidance=self.guidance, steps=self.steps,
                                seed=self.seed, batch_size=self.batch_size, griffin_lim_iters=self.griffin_lim_iters)


# ---------------------------------------------------------------------------------------------
# models

def window_frames(generator: nn.Module) -> int:
    """Video frames (4 fps) of the window the generator was trained on."""
    if isinstance(generator, DiffFoleyLDM):
        return WINDOW_FRAMES
    return generator.config.mel_frames // MEL_FRAMES_PER_VIDEO_FRAME


def load_models(*, cavp: str | Path | None = None, ldm: str | Path | None = None,
                models_dir: str | Path | None = None, options: Mapping[str, Mapping] | None = None,
                device: str | torch.device | None = None) -> tuple[nn.Module, nn.Module, str]:
    """(teacher, generator, note): Diff-Foley's CAVP encoder and LDM from their checkpoint files (``options``:
    loader keywords per kind, ``{"cavp": {...}, "ldm": {...}}``, for other architectures than the released),
    or, with neither file, CineToy's (``models_dir``: a run's ``models/`` folder; default the shipped
    weights). ``note`` says what the models can make."""
    from cinefoley.models.ldm import load_ldm
    from cinefoley.models.model_io import load_model
    from cinefoley.worlds.cinetoy.render import CLASSES
    from cinefoley.worlds.cinetoy.world import SHIPPED

    options = options or {}
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if (cavp is None) != (ldm is None):
        raise ValueError("the real tier needs both Diff-Foley files: --cavp (cavp_epoch66.ckpt) and --ldm "
                         "(ldm_epoch240.ckpt)")
    if cavp is not None:
        if models_dir is not None:
            raise ValueError("--models is CineToy's models folder; it does not go with --cavp / --ldm")
        teacher = load_cavp(cavp, **options.get("cavp", {}))
        generator = load_ldm(ldm, **options.get("ldm", {}))
        note = f"Diff-Foley's encoder ({cavp}) and LDM ({ldm})"
    else:
        folder = Path(models_dir) if models_dir is not None else SHIPPED
        teacher, generator = load_model(folder / "teacher.pt"), load_model(folder / "generator.pt")
        sounds = ", ".join(c.name for c in CLASSES)
        note = (f"CineToy's models ({folder}) know only CineToy's {len(CLASSES)} sounds ({sounds}): on your videos "
                "they make one of those. For real sound give Diff-Foley's checkpoints (--cavp, --ldm).")
    return teacher.to(device).eval(), generator.to(device).eval(), note


def student_name(path: str | Path) -> str:
    """A student's name: its run folder's (``distill/cu@75/student_state.pt`` -> ``cu@75``), else the file's stem."""
    path = Path(path)
    name = path.name if path.is_dir() else (path.parent.name if path.name == "student_state.pt" else path.stem)
    return name if name != BASELINE else f"{name}-student"


def load_student(path: str | Path, teacher: nn.Module, **options) -> nn.Module:
    """A student encoder from its checkpoint (``student_state.pt`` or the run folder holding it), built like
    ``teacher``: CAVP students with :func:`~cinefoley.models.cavp.load_cavp` (``options``: its keywords),
    CineToy students as the teacher's architecture with the file's weights, every key checked."""
    path = Path(path)
    if path.is_dir():
        path = path / "student_state.pt"
    if not path.is_file():
        raise CheckpointError(path, "no such file (give a student_state.pt or the run folder that holds it)")
    device = next(teacher.parameters()).device
    if isinstance(teacher, CAVPVideoEncoder):
        return load_cavp(path, **options).to(device)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        student = copy.deepcopy(teacher)
        student.load_state_dict(state)
    except Exception as e:  # a foreign file or another architecture: say which file and why
        reason = str(e).strip().splitlines()[0][:300]
        raise CheckpointError(path, f"not a student of this {type(teacher).__name__} ({reason})") from None
    return student.eval()


# ---------------------------------------------------------------------------------------------
# frames and features

def input_frames(encoder: nn.Module, path: Path, start: float, n_frames: int) -> torch.Tensor:
    """uint8 (n, 3, S, S) frames at 4 fps, resized as the worlds feed this kind of encoder: CAVP squash-resizes
    full-size frames to 224 itself (as the VGGSound world), CineToy's encoder gets frames loaded at its size
    (as the CineToy world)."""
    if isinstance(encoder, CAVPVideoEncoder):
        return squash_resize(load_video(path, n_frames=n_frames, start=start))
    return load_video(path, n_frames=n_frames, start=start, size=encoder.config.input_size)


@torch.no_grad()
def encode_frames(encoder: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Features (n, C) float32 of (n, 3, S, S) uint8 frames."""
    device = next(encoder.parameters()).device
    if isinstance(encoder, CAVPVideoEncoder):
        return encoder.encode(frames).float().cpu()
    return encoder(frames[None].to(device))[0].float().cpu()


def video_features(path: str | Path, encoders: Mapping[str, nn.Module], *, start: float = 0.0,
                   n_frames: int) -> dict[str, torch.Tensor]:
    """``{name: (n_frames, C)}``: every encoder's features of ``n_frames`` 4-fps frames from ``start``.

    Frames are decoded 40 at a time (CAVP's chunk, so its features are Diff-Foley's), which keeps memory
    bounded for long, large videos; encoders of one kind share the decoded frames.
    """
    path = Path(path)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in encoders}
    for first in range(0, n_frames, CHUNK_FRAMES):
        n = min(CHUNK_FRAMES, n_frames - first)
        at = start + first / DEFAULT_FPS
        decoded: dict[bool, torch.Tensor] = {}
        for name, encoder in encoders.items():
            kind = isinstance(encoder, CAVPVideoEncoder)
            if kind not in decoded:
                decoded[kind] = input_frames(encoder, path, at, n)
            out[name].append(encode_frames(encoder, decoded[kind]))
    return {name: torch.cat(parts) for name, parts in out.items()}


# ---------------------------------------------------------------------------------------------
# windows

def window_starts(n_frames: int, window: int, *, full: bool) -> list[int]:
    """First frames of the windows covering ``n_frames`` frames: one window unless ``full``; consecutive ones
    overlap by :data:`JOIN_FRAMES`, the last ends with the clip."""
    if n_frames <= window or not full:
        return [0]
    hop = window - JOIN_FRAMES
    starts = list(range(0, n_frames - window + 1, hop))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


def mel_column(seconds: float) -> int:
    """The mel frame (hop 256 at 16 kHz, 16 ms) at ``seconds``."""
    return round(seconds * SAMPLE_RATE / HOP_LENGTH)


def join_windows(mels: torch.Tensor, starts: list[int], seconds: float) -> torch.Tensor:
    """One mel of ``seconds`` from window mels (K, 128, 16 W) whose pictures start at 4-fps frames ``starts``,
    cross-faded over the last :data:`JOIN_FRAMES` frames of each overlap (raised cosine).

    A window's sound starts when its first picture does (frame s: s / 4 seconds, so at mel frame 15.625 s,
    rounded: at most 8 ms off) and lasts W · 0.256 s, as the generator learnt from clips whose W frames at
    4 fps span W / 4 s of picture and whose sound is W · 0.256 s long; placing windows 16 mel frames per
    picture frame instead would make the sound drift 2.4 % behind the pictures.
    """
    joined = mels[0]
    for mel, first in zip(mels[1:], starts[1:]):
        begin, end = mel_column(first / DEFAULT_FPS), joined.shape[1]  # this window's start, the joined mel's end
        fade = min(JOIN_FRAMES * MEL_FRAMES_PER_VIDEO_FRAME, end - begin)
        ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, fade + 2)[1:-1])  # 0 < r < 1 over the fade
        mixed = joined[:, end - fade:end] * (1 - ramp) + mel[:, end - fade - begin:end - begin] * ramp
        joined = torch.cat([joined[:, :end - fade], mixed, mel[:, end - begin:]], dim=1)
    return joined[:, :mel_column(seconds)]


# ---------------------------------------------------------------------------------------------
# one video

@dataclass
class Clip:
    """A video ready to be generated: what is read, the windows, the features of every system."""

    path: Path
    name: str
    duration: float
    n_frames: int  # 4-fps frames read
    window: int
    seconds: float  # of sound (and of pictures) from ``start``
    starts: list[int]
    windows: dict[str, torch.Tensor]  # system -> (K, W, C)

    def seeds(self, seed: int, sample: int) -> list[int]:
        """One seed per window: the first is what :func:`cinefoley.generate.generate_set` gives a clip of this
        name, so a one-window video and a test clip of the same name start from the same noise."""
        return [sample_seed(seed, self.name if w == 0 else f"{self.name}@{first}", sample)
                for w, first in enumerate(self.starts)]


def prepare(path: Path, name: str, encoders: Mapping[str, nn.Module], window: int, settings: FoleySettings) -> Clip:
    duration = video_duration(path)
    available = math.floor((duration - settings.start) * DEFAULT_FPS + 1e-6)
    if available < 1:
        raise MediaError(path, f"video is {duration:.3f} s long: less than one 4-fps frame (0.25 s) after "
                               f"{settings.start:.3f} s")
    n_frames = available if settings.full else min(window, available)
    starts = window_starts(n_frames, window, full=settings.full)
    # a window sounds W * 0.256 s; the sound stops with the video (or with the last window)
    last_end = starts[-1] / DEFAULT_FPS + window * MEL_FRAMES_PER_VIDEO_FRAME * HOP_LENGTH / SAMPLE_RATE
    seconds = min(duration - settings.start, last_end)
    feats = video_features(path, encoders, start=settings.start, n_frames=n_frames)
    windows = {}
    for system, f in feats.items():
        if len(f) < window:  # hold the last frame's features over the rest of the window
            f = torch.cat([f, f[-1:].expand(window - len(f), -1)])
        windows[system] = torch.stack([f[s:s + window] for s in starts])
    return Clip(path, name, duration, n_frames, window, seconds, starts, windows)


def output_stem(clip: Clip, sample: int, settings: FoleySettings) -> str:
    return clip.name if settings.samples == 1 else f"{clip.name}-s{sample}"


def finish(clip: Clip, mels: dict[str, torch.Tensor], out_dir: Path, settings: FoleySettings, vocoder) -> dict:
    """Join, vocode and write one video's sounds (``mels``: system -> (samples, K, 128, 16 W)); its record."""
    systems = list(mels)
    joined = torch.stack([join_windows(mels[s][k], clip.starts, clip.seconds)
                          for s in systems for k in range(settings.samples)])
    wavs = vocoder(joined.to(vocoder.device)).float().cpu().numpy()
    # the pictures are copied whole when the sound leaves less than a 4-fps frame of them without sound
    whole = settings.start <= 0 and clip.duration - clip.seconds < 1 / DEFAULT_FPS
    end = None if whole else settings.start + clip.seconds
    outputs, pictures = {}, set()
    for i, (system, sample) in enumerate((s, k) for s in systems for k in range(settings.samples)):
        stem = output_stem(clip, sample, settings)
        folder = out_dir / system
        wav_path, mel_path, mp4_path = folder / f"{stem}.wav", folder / f"{stem}.mel.npz", folder / f"{stem}.mp4"
        buf = io.BytesIO()
        sf.write(buf, wavs[i], SAMPLE_RATE, format="WAV", subtype="FLOAT")
        atomic_write_bytes(wav_path, buf.getvalue())
        atomic_savez(mel_path, mel=joined[i].numpy().astype(np.float16))
        # the wav keeps the generator's level (what the metrics score); the mp4's sound is scaled down where
        # it would clip, as AAC holds samples in [-1, 1] only
        gain = min(1.0, MAX_PEAK / max(float(np.abs(wavs[i]).max()), 1e-9))
        pictures.add(mux_sound(clip.path, mp4_path, wavs[i] * gain, start=settings.start, end=end))
        outputs.setdefault(system, []).append({"sample": sample, "mp4": str(mp4_path.relative_to(out_dir)),
                                               "wav": str(wav_path.relative_to(out_dir)),
                                               "mel": str(mel_path.relative_to(out_dir)), "mp4_gain": round(gain, 4)})
    return {"input": str(clip.path), "name": clip.name, "video_seconds": round(clip.duration, 3),
            "start": settings.start, "sound_seconds": round(len(wavs[0]) / SAMPLE_RATE, 3),
            "frames": clip.n_frames, "windows": clip.starts,
            "padded_to_window": clip.n_frames < clip.window,
            "pictures": "/".join(sorted(pictures)), "outputs": outputs}


# ---------------------------------------------------------------------------------------------
# a batch of videos

def collect_inputs(inputs: Iterable[str | Path], out_dir: str | Path) -> tuple[list[Path], list[dict]]:
    """The video files of ``inputs`` (files as given; folders searched for :data:`VIDEO_SUFFIXES`, leaving out
    anything under ``out_dir``), and the inputs that do not exist."""
    out_dir = Path(out_dir).resolve()
    files, failed = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                           and out_dir not in p.resolve().parents)
            if not found:
                failed.append({"input": str(item), "reason": f"folder holds no video ({', '.join(VIDEO_SUFFIXES)})"})
            files += found
        elif item.is_file():
            files.append(item)
        else:
            failed.append({"input": str(item), "reason": "file not found"})
    unique = {p.resolve(): p for p in reversed(files)}  # a file named twice (or inside a folder named) is done once
    return [unique[k] for k in dict.fromkeys(p.resolve() for p in files)], failed


def unique_names(files: list[Path]) -> list[str]:
    """Output names: each file's stem; a name already taken gets ``-2``, ``-3``, ..."""
    names: list[str] = []
    for path in files:
        name, n = path.stem, 1
        while name in names:
            n += 1
            name = f"{path.stem}-{n}"
        names.append(name)
    return names


def _file_key(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


@dataclass
class FoleyRun:
    """What :func:`foley` made: one record per video done, the failures, and where the files are."""

    out_dir: Path
    done: list[dict]
    failed: list[dict]
    pairs_csv: Path | None
    record: Path

    @property
    def ok(self) -> bool:
        return not self.failed


def foley(inputs: Iterable[str | Path], out_dir: str | Path, *, generator: nn.Module,
          encoders: Mapping[str, nn.Module], settings: FoleySettings | None = None, note: str = "",
          log: Callable[[str], None] | None = None) -> FoleyRun:
    """Sound for every video of ``inputs`` from each encoder of ``encoders`` (``{"baseline": teacher, name:
    student}``) through ``generator``; see the module docstring. ``note`` is written into ``foley.json``;
    ``log`` gets one line per video."""
    settings = settings or FoleySettings()
    if not encoders:
        raise ValueError("foley needs at least one encoder")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log = log or (lambda line: None)
    window = window_frames(generator)
    config = {"settings": asdict(settings), "systems": list(encoders), "window_frames": window,
              "join_frames": JOIN_FRAMES, "inputs": [str(p) for p in inputs],
              "models": {"generator": f"{type(generator).__name__} {weights_digest(generator)[:16]}",
                         **{s: f"{type(e).__name__} {weights_digest(e)[:16]}" for s, e in encoders.items()}},
              "note": note}
    files, failed = collect_inputs(config["inputs"], out_dir)
    reusable = _reusable(out_dir, config)
    cfg = settings.generation()
    vocoder = GriffinLimVocoder(n_iter=settings.griffin_lim_iters, device=next(generator.parameters()).device)
    done: list[dict] = []
    pending: list[Clip] = []

    def save() -> None:
        write_run_record(out_dir, config=config, results={"done": done, "failed": failed}, name=RECORD,
                         started=started)

    def flush() -> None:
        jobs = [(c, s, k, w) for c in pending for s in encoders for k in range(settings.samples)
                for w in range(len(c.starts))]
        feats = torch.stack([c.windows[s][w] for c, s, _, w in jobs])
        seeds = [c.seeds(settings.seed, k)[w] for c, _, k, w in jobs]
        mels = iter(sample_mels(generator, feats, seeds, cfg))
        for clip in pending:
            per_system = {s: torch.stack([torch.stack([next(mels) for _ in clip.starts])
                                          for _ in range(settings.samples)]) for s in encoders}
            try:
                entry = finish(clip, per_system, out_dir, settings, vocoder)
            except MediaError as e:
                failed.append({"input": str(clip.path), "reason": str(e)})
                log(f"FAILED {clip.path}: {e}")
                continue
            entry["key"] = _file_key(clip.path)
            done.append(entry)
            log(f"ok     {clip.path} -> {', '.join(o['mp4'] for outs in entry['outputs'].values() for o in outs)} "
                f"({entry['sound_seconds']:.2f} s of sound, {len(entry['windows'])} window(s), pictures "
                f"{entry['pictures']})")
        pending.clear()
        save()

    for path, name in zip(files, unique_names(files)):
        kept = reusable.get(json.dumps(_file_key(path)))
        if kept is not None and kept["name"] == name:
            done.append(kept)
            log(f"done   {path} (kept from the previous run)")
            continue
        try:
            pending.append(prepare(path, name, encoders, window, settings))
        except MediaError as e:
            failed.append({"input": str(path), "reason": str(e)})
            log(f"FAILED {path}: {e}")
        if sum(len(c.starts) for c in pending) * len(encoders) * settings.samples >= settings.batch_size:
            flush()
    if pending:
        flush()
    order = {str(p.resolve()): i for i, p in enumerate(files)}
    done.sort(key=lambda e: order[e["key"][0]])  # batches finish out of order; the record is in input order
    save()
    pairs = write_pairs(out_dir, done, list(encoders))
    return FoleyRun(out_dir, done, failed, pairs, out_dir / RECORD)


def _reusable(out_dir: Path, config: dict) -> dict[str, dict]:
    """The previous run's finished videos, when it had the same settings and models and its files are there."""
    path = out_dir / RECORD
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = all(previous.get("config", {}).get(k) == config[k] for k in ("settings", "systems", "models"))
    if not same:
        return {}
    entries = (previous.get("results") or {}).get("done", [])
    return {json.dumps(e["key"]): e for e in entries
            if all((out_dir / o[kind]).is_file() for outs in e["outputs"].values() for o in outs
                   for kind in ("mp4", "wav", "mel"))}


def write_pairs(out_dir: Path, done: list[dict], systems: list[str]) -> Path | None:
    """``pairs.csv`` for ``cinefoley study create`` (``clip_id, baseline, ours``: sample 0 of every video), when
    the systems are the baseline and one student."""
    if len(systems) != 2 or BASELINE not in systems:
        return None
    ours = next(s for s in systems if s != BASELINE)
    rows = [{"clip_id": e["name"], "baseline": e["outputs"][BASELINE][0]["mp4"], "ours": e["outputs"][ours][0]["mp4"]}
            for e in done]
    return atomic_write_text(out_dir / PAIRS, pd.DataFrame(rows, columns=["clip_id", "baseline", "ours"])
                             .to_csv(index=False))

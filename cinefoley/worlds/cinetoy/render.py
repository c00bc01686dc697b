"""CineToy: a procedural audio-visual world in which every stage of the paper runs on a CPU.

Each clip shows a *sounding object*, the shot's subject, and one or two smaller *silent distractors*
(props) on a textured background. The sounding object flashes and swells at event instants, and its
class's sound is heard at exactly those instants. Ten classes; each has

* a visual identity: shape × colour × texture. Every shape and every colour is shared by two
  classes, so the full view identifies the class by its global silhouette and colour (a shortcut
  that close-ups and camera moves break: crops cut the silhouette and rescale the object), while
  the texture is unique to the class and survives in any visible part;
* a sound identity: impacts, tones, noise bursts, sweeps, buzzes (all inside Diff-Foley's
  125–7600 Hz mel range).

A close-up usually keeps part of the object (the subject spans 35–45 % of the frame; crops 40–60 %),
rescaled about twofold; a camera move takes it out of frame for part of the clip. The subject is
larger than the props (radius 0.17–0.23 vs 0.08–0.12 of the frame) as in most shots: in the full
view the biggest thing is what sounds, so a teacher trained on full frames learns the class well, and
a close-up, which blows a prop up to a subject's size and cuts the subject's silhouette, misleads it.
(With props as large as the subject, the teacher had to find the flashing object in the 2–3 frames of
8 that show a flash; its features then named the class for ~60 % of clips and the generated sound's
class was near chance already on full frames, so close-ups could not make it worse.) So a teacher
trained on full frames has something to lose and a student something to learn back.

Ground truth per clip: class, event times, and the sounding object's box (top, left, h, w) in
every 4-fps frame the loaders return. Clips are written as H.264 mp4 (with an AAC copy of the
sound, like VGGSound's clips) plus a 16 kHz wav, and listed in ``manifest.csv``.
Everything is deterministic from the world seed.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from cinefoley.progress import progress_bar
from cinefoley.utils import atomic_write_bytes, atomic_write_json, stable_hash
from cinefoley.media.video import write_video

SAMPLE_RATE = 16000
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {  # RGB in [0, 1]
    "red": (0.86, 0.18, 0.15), "yellow": (0.93, 0.80, 0.12), "cyan": (0.10, 0.75, 0.85),
    "blue": (0.18, 0.30, 0.90), "green": (0.20, 0.70, 0.22),
}
TEXTURES = ("stripes0", "rings", "stripes90", "grid", "dots",
            "stripes45", "checker", "stripes135", "waves", "solid")


@dataclass(frozen=True)
class SoundClass:
    name: str
    shape: str
    colour: str
    texture: str
    sound: str  # which synthesiser in SOUNDS


def _classes() -> tuple[SoundClass, ...]:
    sounds = ("drum", "bell", "whistle", "engine", "hiss", "chirp", "clap", "horn", "pluck", "siren")
    colours = tuple(COLOURS)
    out = []
    for c, name in enumerate(sounds):
        # unique (shape, colour) pairs; each shape and each colour used by exactly two classes
        shape = SHAPES[c % 5]
        colour = colours[(c + (c // 5) * 2) % 5]
        out.append(SoundClass(name, shape, colour, TEXTURES[c], name))
    return tuple(out)


CLASSES = _classes()


@dataclass
class WorldConfig:
    """What a CineToy world looks like. Defaults: the ``demo`` profile's clip (2.048 s, 64 px)."""

    n_train: int = 800
    n_val: int = 100
    n_test: int = 200
    size: int = 64  # frames are size × size pixels
    duration: float = 2.048  # seconds; 2.048 s = 8 frames at 4 fps = 128 mel frames
    render_fps: float = 12.0  # the mp4's own rate; loaders resample to 4 fps by timestamps
    seed: int = 0
    n_distractors: tuple[int, int] = (1, 2)
    object_radius: tuple[float, float] = (0.17, 0.23)  # the sounding subject; fractions of the frame size
    distractor_radius: tuple[float, float] = (0.08, 0.12)  # the silent props
    events_per_second: float = 1.3

    @property
    def splits(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}


@dataclass
class ObjectPlan:
    cls: int
    cx: float  # centre at t = 0, in pixels
    cy: float
    vx: float  # drift in pixels per second
    vy: float
    radius: float
    sounding: bool


@dataclass
class ClipPlan:
    """All random choices of one clip; rendering it is a pure function of this."""

    clip_id: str
    split: str
    cls: int
    events: list[float]
    objects: list[ObjectPlan]
    background: list[float]  # phases, frequencies and colour of the background texture
    gains: list[float] = field(default_factory=list)
    pitch: float = 1.0


# ---------------------------------------------------------------------------------------------
# planning

def _event_times(rng: np.random.Generator, duration: float, rate: float) -> list[float]:
    n = max(1, int(rng.poisson(rate * duration)))
    n = min(n, max(1, int(duration / 0.4)))
    times: list[float] = []
    for _ in range(200):
        if len(times) == n:
            break
        t = float(rng.uniform(0.05, duration - 0.3))
        if all(abs(t - u) >= 0.35 for u in times):
            times.append(t)
    return sorted(round(t, 4) for t in times)


def plan_clip(cfg: WorldConfig, split: str, index: int) -> ClipPlan:
    rng = np.random.default_rng(stable_hash("cinetoy", cfg.seed, split, index))
    cls = int(rng.integers(len(CLASSES)))
    n_dis = int(rng.integers(cfg.n_distractors[0], cfg.n_distractors[1] + 1))
    others = rng.choice([c for c in range(len(CLASSES)) if c != cls], size=n_dis, replace=False)
    s = cfg.size
    objects = []
    for k, c in enumerate([cls, *others.tolist()]):
        r = float(rng.uniform(*(cfg.object_radius if k == 0 else cfg.distractor_radius))) * s
        speed = float(rng.uniform(0.0, 0.12)) * s / cfg.duration
        angle = float(rng.uniform(0, 2 * math.pi))
        objects.append(ObjectPlan(int(c), float(rng.uniform(r, s - r)), float(rng.uniform(r, s - r)),
                                  speed * math.cos(angle), speed * math.sin(angle), r, sounding=k == 0))
    events = _event_times(rng, cfg.duration, cfg.events_per_second)
    background = rng.uniform(0, 1, size=11).tolist()
    gains = rng.uniform(0.6, 1.0, size=len(events)).tolist()
    return ClipPlan(f"cinetoy_{split}_{index:05d}", split, cls, events, objects, background,
                    gains, float(rng.uniform(0.95, 1.05)))


# ---------------------------------------------------------------------------------------------
# pictures

def _flash(events: list[float], t: float, tau: float = 0.18) -> float:
    """Visual event envelope: jumps at each onset, decays with time constant tau."""
    return float(sum(math.exp(-(t - e) / tau) for e in events if t >= e))


def _position(o: ObjectPlan, t: float, size: int) -> tuple[float, float]:
    """Centre at time t; the drift bounces off the frame edges so objects stay in view."""
    def bounce(p0, v, r):
        lo, hi = r, size - r
        span = max(hi - lo, 1e-6)
        x = (p0 - lo + v * t) % (2 * span)
        return lo + (x if x <= span else 2 * span - x)
    return bounce(o.cx, o.vx, o.radius), bounce(o.cy, o.vy, o.radius)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0  # inside the unit radius, so object_box holds it
    if shape == "triangle":  # apex up
        return (v <= 0.8) & (v >= -1.0 + 1.9 * np.abs(u))
    if shape == "cross":
        return ((np.abs(u) <= 0.36) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.36) & (np.abs(u) <= 1.0))
    raise ValueError(shape)


def _texture(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pattern in [0, 1] in the object's own coordinates (radius 1), so it moves and scales with it."""
    f = 2.2
    if name.startswith("stripes"):
        a = math.radians(float(name[7:]))
        return (np.sin(2 * math.pi * f * (u * math.cos(a) + v * math.sin(a))) > 0).astype(np.float32)
    if name == "checker":
        return ((np.sin(2 * math.pi * 1.6 * u) * np.sin(2 * math.pi * 1.6 * v)) > 0).astype(np.float32)
    if name == "dots":
        du, dv = (u * 2.0) % 1.0 - 0.5, (v * 2.0) % 1.0 - 0.5
        return (du * du + dv * dv > 0.07).astype(np.float32)
    if name == "rings":
        return (np.sin(2 * math.pi * 2.5 * np.sqrt(u * u + v * v)) > 0).astype(np.float32)
    if name == "grid":
        return ((np.abs((u * 2.0) % 1.0 - 0.5) > 0.15) & (np.abs((v * 2.0) % 1.0 - 0.5) > 0.15)).astype(np.float32)
    if name == "waves":
        return (np.sin(2 * math.pi * (2.0 * v + 0.35 * np.sin(2 * math.pi * 1.2 * u))) > 0).astype(np.float32)
    if name == "solid":
        return (u * u + v * v > 0.45).astype(np.float32) * 0.6 + 0.4
    raise ValueError(name)


def _background(plan: ClipPlan, size: int) -> np.ndarray:
    b = plan.background
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tex = (np.sin(2 * math.pi * (1 + 3 * b[0]) * x + 6.3 * b[1]) * np.sin(2 * math.pi * (1 + 3 * b[2]) * y + 6.3 * b[3])
           + 0.5 * np.sin(2 * math.pi * (5 + 6 * b[4]) * (x * b[5] + y * (1 - b[5])) + 6.3 * b[6]))
    tint = 0.35 + 0.25 * np.array(b[7:10], dtype=np.float32)
    img = tint[None, None, :] * (1.0 + 0.22 * tex[..., None]) + 0.12 * (b[10] - 0.5) * y[..., None]
    return img.astype(np.float32)


def object_box(o: ObjectPlan, t: float, size: int, events: list[float]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the object's drawn extent at time t, clipped to the frame."""
    cx, cy = _position(o, t, size)
    r = o.radius * (1.0 + 0.25 * _flash(events, t)) if o.sounding else o.radius
    top, left = max(0, math.floor(cy - r)), max(0, math.floor(cx - r))
    bottom, right = min(size, math.ceil(cy + r)), min(size, math.ceil(cx + r))
    return top, left, bottom - top, right - left


def render_frame(plan: ClipPlan, t: float, size: int, background: np.ndarray) -> np.ndarray:
    img = background.copy()
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # distractors first, the sounding object on top (its ground-truth box is then what is seen)
    for o in sorted(plan.objects, key=lambda o: o.sounding):
        sc = CLASSES[o.cls]
        a = _flash(plan.events, t) if o.sounding else 0.0
        r = o.radius * (1.0 + 0.25 * a)
        cx, cy = _position(o, t, size)
        u, v = (x - cx) / r, (y - cy) / r
        mask = _shape_mask(sc.shape, u, v)
        colour = np.array(COLOURS[sc.colour], dtype=np.float32)
        pix = colour[None, None, :] * (0.5 + 0.5 * _texture(sc.texture, u, v))[..., None]
        pix = pix * (1 - 0.6 * min(a, 1.0)) + 0.6 * min(a, 1.0)  # flash towards white
        img[mask] = pix[mask]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# sounds

def _env(n: int, tau: float, sr: int) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau * sr)).astype(np.float32)


def _sweep(f0: float, f1: float, n: int, sr: int) -> np.ndarray:
    f = np.linspace(f0, f1, n)
    return np.sin(2 * math.pi * np.cumsum(f) / sr)


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float, sr: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spec[(freqs < lo) | (freqs > hi)] = 0
    out = np.fft.irfft(spec, n)
    return out / (np.abs(out).max() + 1e-9)


def synth_event(sound: str, pitch: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One event of a class's sound, starting at its onset (sample 0)."""
    def n_of(sec):
        return int(sec * sr)
    t = np.arange(n_of(0.5)) / sr
    if sound == "drum":
        n = n_of(0.3)
        x = (np.sin(2 * math.pi * 160 * pitch * t[:n]) + 0.5 * np.sin(2 * math.pi * 320 * pitch * t[:n])) * _env(n, 0.06, sr)
        x[:n_of(0.01)] += 0.6 * _band_noise(rng, n_of(0.01), 1000, 5000, sr)
    elif sound == "bell":
        n = n_of(0.5)
        x = (np.sin(2 * math.pi * 1200 * pitch * t[:n]) + 0.4 * np.sin(2 * math.pi * 3310 * pitch * t[:n])) * _env(n, 0.15, sr)
    elif sound == "whistle":
        n = n_of(0.22)
        x = _sweep(2500 * pitch, 2500 * pitch, n, sr) * np.sin(math.pi * np.arange(n) / n) ** 0.5
    elif sound == "engine":
        n = n_of(0.3)
        saw = sum(np.sin(2 * math.pi * 150 * pitch * k * t[:n]) / k for k in range(1, 16))
        x = saw * (0.6 + 0.4 * np.sin(2 * math.pi * 25 * t[:n])) * np.hanning(n) * 0.6
    elif sound == "hiss":
        n = n_of(0.2)
        x = _band_noise(rng, n, 3500, 7000, sr) * _env(n, 0.08, sr)
    elif sound == "chirp":
        n = n_of(0.12)
        x = _sweep(2000 * pitch, 4500 * pitch, n, sr) * np.hanning(n)
    elif sound == "clap":
        n = n_of(0.12)
        x = _band_noise(rng, n, 800, 2500, sr) * _env(n, 0.025, sr)
    elif sound == "horn":
        n = n_of(0.3)
        sq = sum(np.sin(2 * math.pi * 420 * pitch * k * t[:n]) / k for k in (1, 3, 5, 7, 9))
        x = sq * np.minimum(1, np.minimum(np.arange(n), n - np.arange(n)) / n_of(0.02)) * 0.7
    elif sound == "pluck":
        n = n_of(0.4)
        x = sum(np.sin(2 * math.pi * 330 * pitch * k * t[:n]) * math.exp(-k / 3) for k in range(1, 6))
        x = x * _env(n, 0.1, sr) * 0.6
    elif sound == "siren":
        n = n_of(0.35)
        x = _sweep(700 * pitch, 1100 * pitch, n, sr) * np.hanning(n)
    else:
        raise ValueError(sound)
    return np.asarray(x, dtype=np.float32)


def render_audio(plan: ClipPlan, duration: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    rng = np.random.default_rng(stable_hash("cinetoy-audio", plan.clip_id))
    n = round(duration * sr)
    audio = 0.004 * _band_noise(rng, n, 125, 7600, sr).astype(np.float32)  # room tone
    sound = CLASSES[plan.cls].sound
    for onset, gain in zip(plan.events, plan.gains):
        ev = synth_event(sound, plan.pitch, rng, sr) * gain
        i = round(onset * sr)
        m = min(len(ev), n - i)
        audio[i:i + m] += ev[:m]
    return (0.5 * audio / max(np.abs(audio).max(), 1e-6)).astype(np.float32)


def other_class_mels(cfg: WorldConfig, clip_ids: list[str], seed: int = 0) -> np.ndarray:
    """(N, 128, mel frames): each clip's onsets, gains and pitch played by another class's synthesiser (the
    class drawn from (seed, clip id)), through the same mel front end; the alignment classifier's
    "right timing, wrong class" pairs."""
    from cinefoley.media.audio import mel_spectrogram

    n_frames = round(cfg.duration * 4) * 16  # 16 mel frames per 4-fps video frame
    mels = []
    for clip_id in clip_ids:
        _, split, index = clip_id.rsplit("_", 2)
        plan = plan_clip(cfg, split, int(index))
        offset = 1 + stable_hash("other-class", seed, clip_id) % (len(CLASSES) - 1)
        audio = render_audio(replace(plan, cls=(plan.cls + offset) % len(CLASSES)), cfg.duration)
        audio, _ = sf.read(io.BytesIO(_wav_bytes(audio)), dtype="float32")  # as stored: 16-bit
        mels.append(mel_spectrogram(audio)[:, :n_frames])
    return np.stack(mels).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the world on disk

def frame_times(duration: float, fps: float) -> np.ndarray:
    return np.arange(int(round(duration * fps))) / fps


def loader_frame_times(cfg: WorldConfig, fps: float = 4.0) -> np.ndarray:
    """The instants the 4-fps loaders sample, mapped to the rendered frame on screen then."""
    n = int(math.floor(cfg.duration * fps + 1e-6))
    rendered = np.floor(np.arange(n) / fps * cfg.render_fps + 1e-6) / cfg.render_fps
    return rendered


def ground_truth(plan: ClipPlan, cfg: WorldConfig) -> dict:
    sounding = plan.objects[0]
    boxes = [list(object_box(sounding, float(t), cfg.size, plan.events)) for t in loader_frame_times(cfg)]
    return {"clip_id": plan.clip_id, "split": plan.split, "class_id": plan.cls,
            "label": CLASSES[plan.cls].name, "event_times": json.dumps(plan.events),
            "boxes": json.dumps(boxes)}


def render_clip(plan: ClipPlan, cfg: WorldConfig, root: Path) -> None:
    bg = _background(plan, cfg.size)
    frames = np.stack([render_frame(plan, float(t), cfg.size, bg) for t in frame_times(cfg.duration, cfg.render_fps)])
    audio = render_audio(plan, cfg.duration)
    folder = root / plan.split
    buf = _wav_bytes(audio)
    atomic_write_bytes(folder / f"{plan.clip_id}.wav", buf)
    write_video(folder / f"{plan.clip_id}.mp4", frames, cfg.render_fps, audio=audio, sample_rate=SAMPLE_RATE)


def _wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def build_world(root: str | Path, cfg: WorldConfig | None = None, *, progress: bool = True) -> pd.DataFrame:
    """Write a CineToy world under ``root`` and return its manifest.

    Resumable: clips whose mp4 and wav already exist are not rendered again (the ground truth is
    recomputed from the seed, which is cheap). A clip that fails is reported in
    ``build_report.json`` and left out of the manifest; the build goes on.
    """
    cfg = cfg or WorldConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    world_file = root / "world.json"
    if world_file.exists():
        old = json.loads(world_file.read_text())["config"]
        if old != json.loads(json.dumps(asdict(cfg))):
            raise ValueError(f"{world_file}: a different world (config {old}) is already built here; "
                             "choose another folder")
    atomic_write_json(world_file, {"config": asdict(cfg), "classes": [asdict(c) for c in CLASSES]})
    started = time.time()
    rows, failed, rendered = [], [], 0
    todo = [(split, i) for split, n in cfg.splits.items() for i in range(n)]
    for split, i in progress_bar(todo, desc="CineToy clips", disable=not progress):
        plan = plan_clip(cfg, split, i)
        video, audio = root / split / f"{plan.clip_id}.mp4", root / split / f"{plan.clip_id}.wav"
        try:
            if not (video.exists() and audio.exists()):
                render_clip(plan, cfg, root)
                rendered += 1
        except Exception as e:  # report and go on: one bad clip must not cost the others
            failed.append({"clip_id": plan.clip_id, "error": f"{type(e).__name__}: {e}"})
            continue
        row = ground_truth(plan, cfg)
        row.update(video_path=f"{split}/{plan.clip_id}.mp4", audio_path=f"{split}/{plan.clip_id}.wav",
                   n_frames=int(math.floor(cfg.duration * 4 + 1e-6)), fps=4.0, width=cfg.size,
                   height=cfg.size, duration=cfg.duration)
        rows.append(row)
    manifest = pd.DataFrame(rows)
    manifest.attrs["root"] = str(root.resolve())  # its paths are relative to root, as read_manifest's
    atomic_write_bytes(root / "manifest.csv", manifest.to_csv(index=False).encode())
    atomic_write_json(root / "build_report.json", {"clips": len(rows), "rendered": rendered, "failed": failed,
                                                   "seconds": round(time.time() - started, 2)})
    return manifest

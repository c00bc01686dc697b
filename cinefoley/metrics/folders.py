"""Score any two folders of audio: the six metrics of Table 1 with bootstrap intervals, files matched by name.

What audioldm_eval and av-benchmark do with one command, with notebook 05's numbers: the same referees
(CineToy's by default; PANNs, VGGish and Diff-Foley's classifier from their files), the same functions
(:func:`~cinefoley.metrics.evaluate.score_with_intervals`, :func:`~cinefoley.metrics.evaluate.paired_differences`)
and the same order of items, so a generated set scored here and by :class:`~cinefoley.metrics.evaluate.Scoreboard`
gives identical numbers.

**Matching**: a generated file ``<id>.<ext>`` goes with the reference file whose stem is ``<id>``; so does
``<id>-s<k>.<ext>`` (sample k of clip ``<id>``, as ``cinefoley foley --samples N`` names them) when no
reference is called ``<id>-s<k>``. The samples of one clip are bootstrapped together, as in notebook 05.
Audio files (:data:`AUDIO_SUFFIXES`) are read, and video files for the stems that have no audio file (their
first sound track); everything at 16 kHz mono.

**Never silently dropped**: a file that cannot be read, a generated file that matches no reference, or one
whose length differs from its reference's by more than ``max_length_diff`` seconds is left out of the scores
and listed, with its reason, in the report (``evaluate.json`` and the command's output).

**Align Acc** needs, per clip, the video's per-frame features: ``features`` (``<id>.npy`` (T, C) or a
Diff-Foley ``<id>.npz`` with ``feat``) or ``videos`` (``<id>.<video>``, encoded at 4 fps from 0 s by the
teacher: CineToy's, or CAVP for Diff-Foley's classifier), and, per sound, a mel: the generator's own
(``<stem>.mel.npz`` beside the file, as ``cinefoley foley`` writes and notebook 05 judges) or else Diff-Foley's
mel of the sound. Sound and features are cut to the same whole number of 4-fps frames (16 mel frames each);
Diff-Foley's classifier reads their first 8.192 s. Without features for every clip Align Acc is not computed
(NaN), and the report says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cinefoley.distill import read_feature
from cinefoley.errors import MediaError
from cinefoley.foley import video_features
from cinefoley.media.audio import SAMPLE_RATE, load_audio, mel_spectrogram
from cinefoley.media.clips import MEL_FRAMES_PER_VIDEO_FRAME
from cinefoley.media.video import DEFAULT_FPS, VIDEO_SUFFIXES, video_duration
from cinefoley.metrics import Interval
from cinefoley.metrics.evaluate import (METRICS, Features, extract, intervals_table, paired_differences, save_table,
                                        score_with_intervals)
from cinefoley.metrics.referees import Referees
from cinefoley.utils import write_run_record

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus")
MEL_SUFFIX = ".mel.npz"
SAMPLE = re.compile(r"^(?P<clip>.+)-s(?P<sample>\d+)$")
NAN = Interval(float("nan"), float("nan"), float("nan"))
PASSED = "videos passed over (an audio file of the same name is read)"


# ---------------------------------------------------------------------------------------------
# reading folders

def sound_files(folder: str | Path) -> tuple[dict[str, Path], list[str]]:
    """``{stem: file}`` of a folder's sounds (not recursive), and the files passed over: videos whose stem
    has an audio file (that one is read), feature and mel files are not counted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    audio = {p.stem: p for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
    found, passed = dict(audio), []
    for p in files:
        if p.suffix.lower() in VIDEO_SUFFIXES:
            if p.stem in audio:
                passed.append(p.name)
            else:
                found[p.stem] = p
    return dict(sorted(found.items())), passed


def match(stem: str, reference: Mapping) -> tuple[str, int] | None:
    """(clip id, sample) of a generated file's stem against the reference ids; None when it matches none."""
    if stem in reference:
        return stem, 0
    m = SAMPLE.match(stem)
    if m and m["clip"] in reference:
        return m["clip"], int(m["sample"])
    return None


@dataclass
class Sounds:
    """A folder's readable sounds, one per item; ``problems``: what was left out, with reasons."""

    folder: Path
    keys: list[tuple[str, int]] = field(default_factory=list)  # (clip id, sample), sorted
    files: list[Path] = field(default_factory=list)
    wavs: list[np.ndarray] = field(default_factory=list)
    problems: dict[str, list] = field(default_factory=dict)

    def note(self, kind: str, item) -> None:
        self.problems.setdefault(kind, []).append(item)

    @property
    def clip_ids(self) -> list[str]:
        return [c for c, _ in self.keys]


def read_reference(folder: str | Path) -> Sounds:
    files, passed = sound_files(folder)
    out = Sounds(Path(folder))
    for stem, path in files.items():
        try:
            wav = load_audio(path)
        except MediaError as e:
            out.note("unreadable", {"file": path.name, "reason": e.reason})
            continue
        out.keys.append((stem, 0))
        out.files.append(path)
        out.wavs.append(wav)
    if passed:
        out.problems[PASSED] = passed
    return out


def read_generated(folder: str | Path, reference: Sounds, max_length_diff: float) -> Sounds:
    """The generated sounds that match a readable reference of about the same length, sorted by (clip id,
    sample) as :func:`cinefoley.generate.read_generated` sorts a generated set."""
    files, passed = sound_files(folder)
    ref_len = {c: len(w) for c, w in zip(reference.clip_ids, reference.wavs)}
    unreadable_refs = {Path(p["file"]).stem for p in reference.problems.get("unreadable", [])}
    found = []
    for stem, path in files.items():
        key = match(stem, ref_len)
        if key is None:
            near = match(stem, dict.fromkeys(unreadable_refs))
            reason = (f"its reference {near[0]} cannot be read" if near else
                      "no reference file of this name (expected <id>.<ext> or <id>-s<k>.<ext>)")
            found.append((None, path, reason))
            continue
        found.append((key, path, None))
    out = Sounds(Path(folder))
    for key, path, reason in sorted(found, key=lambda f: (f[0] is None, f[0] or ("", 0), f[1].name)):
        if key is None:
            out.note("unmatched", {"file": path.name, "reason": reason})
            continue
        try:
            wav = load_audio(path)
        except MediaError as e:
            out.note("unreadable", {"file": path.name, "reason": e.reason})
            continue
        diff = (len(wav) - ref_len[key[0]]) / SAMPLE_RATE
        if abs(diff) > max_length_diff:
            out.note("length differs", {"file": path.name, "seconds": round(len(wav) / SAMPLE_RATE, 3),
                                        "reference_seconds": round(ref_len[key[0]] / SAMPLE_RATE, 3)})
            continue
        out.keys.append(key)
        out.files.append(path)
        out.wavs.append(wav)
    if passed:
        out.problems[PASSED] = passed
    return out


def generated_mels(sounds: Sounds) -> tuple[list[np.ndarray], str]:
    """The mel Align Acc judges for every sound: the generator's (``<stem>.mel.npz``) or the sound's."""
    mels, own = [], 0
    for path, wav in zip(sounds.files, sounds.wavs):
        beside = path.with_name(path.stem + MEL_SUFFIX)
        if beside.is_file():
            with np.load(beside) as z:
                mels.append(z["mel"].astype(np.float32))
            own += 1
        else:
            mels.append(mel_spectrogram(wav))
    source = ("the generator's mel files" if own == len(mels) else "Diff-Foley's mel of each sound" if not own
              else f"the generator's mel files for {own} of {len(mels)} sounds, the sound's mel for the others")
    return mels, source


# ---------------------------------------------------------------------------------------------
# features

def extract_by_length(extractor, clip_ids: Sequence[str], wavs: Sequence[np.ndarray]) -> Features:
    """:func:`~cinefoley.metrics.evaluate.extract` on each group of equally long sounds (an extractor may cut a
    batch to its shortest sound), reassembled in the given order; one call when all lengths agree."""
    lengths = [len(w) for w in wavs]
    groups = {n: [i for i, m in enumerate(lengths) if m == n] for n in dict.fromkeys(lengths)}
    if len(groups) == 1:
        return extract(extractor, clip_ids, wavs)
    parts = {n: extract(extractor, [clip_ids[i] for i in idx], [wavs[i] for i in idx]) for n, idx in groups.items()}
    where = sorted((i, n, j) for n, idx in groups.items() for j, i in enumerate(idx))  # item -> (group, row)
    return Features(np.asarray(clip_ids), np.stack([parts[n].clip_emb[j] for _, n, j in where]),
                    np.stack([parts[n].logits[j] for _, n, j in where]), [parts[n].frames[j] for _, n, j in where])


def read_video_features(clip_ids: Sequence[str], *, features: str | Path | None = None,
                        videos: str | Path | None = None, encoder=None, seconds: Mapping[str, float] | None = None
                        ) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """``{clip id: (T, C)}`` from a folder of feature files or of videos (encoded by ``encoder``, 4-fps frames
    from 0 s over ``seconds[clip]``), and the clips without, with reasons."""
    out, missing = {}, []
    for clip in dict.fromkeys(clip_ids):
        try:
            if features is not None:
                path = next((p for p in (Path(features) / f"{clip}.npy", Path(features) / f"{clip}.npz")
                             if p.is_file()), None)
                if path is None:
                    raise ValueError(f"{Path(features) / clip}.npy / .npz: no feature file")
                out[clip] = torch.from_numpy(np.load(path).astype(np.float32) if path.suffix == ".npy"
                                             else read_feature(path))
            else:
                path = next((p for p in sorted(Path(videos).glob(f"{glob_escape(clip)}.*"))
                             if p.suffix.lower() in VIDEO_SUFFIXES), None)
                if path is None:
                    raise ValueError(f"{Path(videos) / clip}.*: no video of this name")
                available = int(np.floor(video_duration(path) * DEFAULT_FPS + 1e-6))
                n = min(available, int(np.ceil(seconds[clip] * DEFAULT_FPS)))
                out[clip] = video_features(path, {"teacher": encoder}, n_frames=n)["teacher"]
        except (ValueError, MediaError) as e:
            missing.append({"clip": clip, "reason": str(e)})
    return out, missing


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def align_probs(referees: Referees, mels: Sequence[np.ndarray], feats: Sequence[torch.Tensor]) -> np.ndarray:
    """p(aligned) of every (mel, features) pair, both cut to the same whole number T of 4-fps frames (the mel
    edge-padded when it ends less than half a frame short); pairs of one T are judged in one call, in order."""
    hop = MEL_FRAMES_PER_VIDEO_FRAME
    cut = []
    for mel, feat in zip(mels, feats):
        t = min(len(feat), round(mel.shape[1] / hop))
        mel = mel[:, :hop * t]
        cut.append((np.pad(mel, ((0, 0), (0, hop * t - mel.shape[1])), mode="edge"), feat[:t]))
    probs = np.zeros(len(cut))
    for t in dict.fromkeys(f.shape[0] for _, f in cut):
        idx = [i for i, (_, f) in enumerate(cut) if f.shape[0] == t]
        probs[idx] = referees.align_prob(np.stack([cut[i][0] for i in idx]), torch.stack([cut[i][1] for i in idx]))
    return probs


# ---------------------------------------------------------------------------------------------
# scoring

@dataclass
class FolderScores:
    """The table (one row per generated folder), the paired differences (with a baseline) and the report."""

    table: pd.DataFrame
    paired: pd.DataFrame | None
    report: dict
    left_out: int  # generated files not in the scores

    def save(self, out_dir: str | Path, config: dict, started: float | None = None) -> Path:
        out_dir = Path(out_dir)
        save_table(self.table, out_dir / "scores")
        if self.paired is not None:
            save_table(self.paired, out_dir / "paired_diff")
        return write_run_record(out_dir, config=config, name="evaluate.json", started=started, results={
            "scores": self.table.to_dict("records"),
            "paired_diff": None if self.paired is None else self.paired.to_dict("records"),
            "report": self.report, "left_out": self.left_out})


def evaluate_folders(generated: str | Path, reference: str | Path, *, referees: Referees,
                     baseline: str | Path | None = None, features: str | Path | None = None,
                     videos: str | Path | None = None, encoder=None, n_boot: int = 1000, seed: int = 0,
                     max_length_diff: float = 0.3, log: Callable[[str], None] | None = None) -> FolderScores:
    """Score ``generated`` (and ``baseline``) against ``reference``; see the module docstring."""
    log = log or (lambda line: None)
    if features is not None and videos is not None:
        raise ValueError("give the clips' features or their videos for Align Acc, not both")
    ref = read_reference(reference)
    if not ref.keys:
        raise ValueError(f"{reference}: no readable reference sound ({ref.problems})")
    log(f"reference: {len(ref.keys)} sounds in {reference}")
    ref_feats = extract_by_length(referees.extractor, ref.clip_ids, ref.wavs)
    report = {"reference": {"folder": str(reference), "sounds": len(ref.keys), **ref.problems}}
    folders = {"generated": Path(generated), **({"baseline": Path(baseline)} if baseline is not None else {})}
    sets, scored, left_out = {}, {}, 0
    for label, folder in folders.items():
        sounds = read_generated(folder, ref, max_length_diff)
        left_out += sum(len(v) for k, v in sounds.problems.items() if k != PASSED)
        if not sounds.keys:
            raise ValueError(f"{folder}: no generated sound matches a readable reference ({sounds.problems})")
        feats = extract_by_length(referees.extractor, sounds.clip_ids, sounds.wavs)
        align = _align(referees, sounds, features, videos, encoder)
        feats.align_prob = align.pop("probs", None)
        sets[label] = (sounds, feats)
        scored[(label, str(folder))] = score_with_intervals(feats, ref_feats, n_boot=n_boot, seed=seed)
        if feats.align_prob is None:
            scored[(label, str(folder))]["AlignAcc"] = NAN
        unused = [c for c in ref.clip_ids if c not in set(sounds.clip_ids)]
        report[label] = {"folder": str(folder), "sounds": len(sounds.keys), "clips": len(set(sounds.clip_ids)),
                         "align_acc": align, **sounds.problems,
                         **({"references without a generated sound (not scored)": unused} if unused else {})}
        log(f"{label}: {len(sounds.keys)} sounds of {len(set(sounds.clip_ids))} clips scored from {folder}")
    table = intervals_table(scored, index_names=("system", "folder"))
    paired = None
    if baseline is not None:
        paired, dropped = _paired(sets, ref_feats, n_boot, seed)
        report["paired"] = {"items": int(len(sets["generated"][0].keys) - len(dropped["generated"])),
                            "only_in_one_folder": dropped}
        left_out += sum(len(v) for v in dropped.values())
    return FolderScores(table, paired, report, left_out)


def _align(referees: Referees, sounds: Sounds, features, videos, encoder) -> dict:
    """Align Acc's probabilities of a folder's sounds (``probs``) and how they were obtained, or why not."""
    if referees.align_prob is None:
        return {"computed": False, "reason": "no alignment classifier (give --eval-classifier with --panns, --vggish)"}
    if features is None and videos is None:
        return {"computed": False, "reason": "no video features: give the clips' videos or feature files"}
    seconds = {}
    for c, w in zip(sounds.clip_ids, sounds.wavs):
        seconds[c] = max(seconds.get(c, 0.0), len(w) / SAMPLE_RATE)
    feats, missing = read_video_features(sounds.clip_ids, features=features, videos=videos, encoder=encoder,
                                         seconds=seconds)
    if missing:
        return {"computed": False, "reason": f"{len(missing)} clip(s) without video features", "missing": missing}
    mels, source = generated_mels(sounds)
    try:
        probs = align_probs(referees, mels, [feats[c] for c in sounds.clip_ids])
    except (ValueError, RuntimeError) as e:  # sounds shorter than Diff-Foley's classifier's 8.192 s, other features
        return {"computed": False, "reason": str(e)}
    return {"computed": True, "mel": source, "features": str(features or videos), "probs": probs}


def _paired(sets: dict, ref_feats: Features, n_boot: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """generated − baseline on the items both folders have, paired bootstrap; and the items only one has."""
    (gen, gen_feats), (base, base_feats) = sets["generated"], sets["baseline"]
    common = set(gen.keys) & set(base.keys)
    dropped = {label: [f.name for k, f in zip(s.keys, s.files) if k not in common]
               for label, (s, _) in sets.items()}
    take = {label: np.array([i for i, k in enumerate(s.keys) if k in common]) for label, (s, _) in sets.items()}
    diff = paired_differences(base_feats.take(take["baseline"]), gen_feats.take(take["generated"]), ref_feats,
                              n_boot=n_boot, seed=seed)
    if gen_feats.align_prob is None or base_feats.align_prob is None:
        diff["AlignAcc"] = NAN
    return intervals_table({("generated-baseline", f"{len(common)} items"): diff},
                           index_names=("comparison", "items")), dropped


def format_scores(result: FolderScores) -> str:
    """The table and every problem, as the command prints them."""
    def cell(row) -> list[str]:
        return [f"{_num(row[m])} [{_num(row[f'{m}_lo'])}, {_num(row[f'{m}_hi'])}]" for m in METRICS]

    columns = {row["system"]: cell(row) for _, row in result.table.iterrows()}
    if result.paired is not None:
        columns["generated − baseline (paired)"] = cell(result.paired.iloc[0])
    lines = ["each metric with its 95 % bootstrap interval (KID in 10⁻³, Align Acc in %):",
             pd.DataFrame(columns, index=list(METRICS)).to_string()]
    for label, part in result.report.items():
        for kind, items in part.items():
            if isinstance(items, list) and items and all(isinstance(i, dict) for i in items):
                lines += [f"{label}: {kind}: " + ", ".join(f"{k} {v}" for k, v in i.items()) for i in items]
            elif isinstance(items, list) and items:
                shown = ", ".join(map(str, items[:5])) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
                lines.append(f"{label}: {kind}: {shown}")
        align = part.get("align_acc") if isinstance(part, dict) else None
        if align and not align.get("computed"):
            lines.append(f"{label}: Align Acc not computed: {align['reason']}")
    paired = result.report.get("paired", {}).get("only_in_one_folder", {})
    for label, names in paired.items():
        if names:
            lines.append(f"paired comparison leaves out {label} files the other folder lacks: {', '.join(names)}")
    return "\n".join(lines)


def load_referees(*, models_dir: str | Path | None = None, panns: str | Path | None = None,
                  vggish: str | Path | None = None, eval_classifier: str | Path | None = None,
                  cavp: str | Path | None = None, options: Mapping[str, Mapping] | None = None,
                  cache_dir: str | Path, seed: int = 0) -> tuple[Referees, torch.nn.Module | None, str]:
    """(referees, the encoder that turns videos into Align Acc's features, a note): PANNs + VGGish (and
    Diff-Foley's classifier, and CAVP) from their files when named, else CineToy's referees and teacher
    (``models_dir``; default the shipped weights)."""
    from cinefoley.metrics.extractors import FeatureCache
    from cinefoley.metrics.referees import PannsVGGishExtractor, default_device

    options = options or {}
    if panns is None and vggish is None and eval_classifier is None and cavp is None:
        from cinefoley.models.model_io import load_model
        from cinefoley.worlds.cinetoy.world import SHIPPED

        folder = Path(models_dir) if models_dir is not None else SHIPPED
        models = {n: load_model(folder / f"{n}.pt")
                  for n in ("audio_classifier", "frame_embedder", "align_classifier", "teacher")}
        referees = Referees.cinetoy(models["audio_classifier"], models["frame_embedder"], models["align_classifier"],
                                    cache_dir=cache_dir)
        return referees, models["teacher"], (f"CineToy's referees ({folder}): trained on CineToy's ten sounds only; "
                                             "for real audio give PANNs and VGGish (--panns, --vggish)")
    if panns is None or vggish is None or models_dir is not None:
        raise ValueError("the real referees need both --panns and --vggish (and no --models)")
    from cinefoley.models.align_classifier import load_align_classifier
    from cinefoley.models.cavp import load_cavp
    from cinefoley.models.panns import load_panns
    from cinefoley.models.vggish import load_vggish

    networks = load_panns(panns, **options.get("panns", {})), load_vggish(vggish, **options.get("vggish", {}))
    encoder = load_cavp(cavp, **options.get("cavp", {})).to(default_device()) if cavp is not None else None
    if eval_classifier is None:
        return (Referees(FeatureCache(PannsVGGishExtractor(*networks), cache_dir), None), encoder,
                "PANNs and VGGish; no Align Acc referee")
    classifier = load_align_classifier(eval_classifier, **options.get("eval_classifier", {})).to(default_device())
    return (Referees.real(*networks, classifier, cache_dir=cache_dir, seed=seed), encoder,
            "PANNs, VGGish and Diff-Foley's alignment classifier")


def _num(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"

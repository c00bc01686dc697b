"""Evaluate generated audio: the six metrics of Table 1 with bootstrap intervals over test videos.

FAD (frame embeddings), FD and KID (clip embeddings), KL(ref‖gen) paired per clip, IS (10 splits)
and Align Acc, as in :mod:`cinefoley.metrics`. Features come from a world's
:class:`~cinefoley.metrics.referees.Referees` (CineToy's evaluation networks, or PANNs / VGGish and
Diff-Foley's classifier) through a content-keyed cache. KID is reported in units of 10⁻³ and Align
Acc in %, as the paper's tables do. :class:`Scoreboard` gives a world's Tables 1, 3, 4 and Figure 5.

Align Acc judges a generated sound against the features of the *original* (full-frame) test clip,
for every test set: the classifier is the referee of whether the sound matches the events that
happened, and must not itself be blinded by the close-up. (Diff-Foley reads precomputed CAVP
features of the test video; the paper does not say which for VGG-CU/CM.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from cinefoley.metrics import (AudioFeatureExtractor, Interval, align_acc, bootstrap_ci, fad, fd, inception_score,
                               kid, kl, paired_bootstrap_diff)
from cinefoley.distill import MAIN_RUN
from cinefoley.testsets import TEST_SETS
from cinefoley.utils import atomic_write_text

METRICS = ("FAD", "FD", "KID", "KL", "IS", "AlignAcc")
LOWER_IS_BETTER = {"FAD": True, "FD": True, "KID": True, "KL": True, "IS": False, "AlignAcc": False}


@dataclass
class Features:
    """Everything the metrics need of one set of sounds, one row per item."""

    clip_ids: np.ndarray  # (n,) the test video of every item
    clip_emb: np.ndarray
    logits: np.ndarray
    frames: list[np.ndarray]
    align_prob: np.ndarray | None = None  # (n,) p(aligned), generated sets only

    def __len__(self) -> int:
        return len(self.clip_ids)

    def take(self, idx: np.ndarray) -> "Features":
        return Features(self.clip_ids[idx], self.clip_emb[idx], self.logits[idx], [self.frames[i] for i in idx],
                        None if self.align_prob is None else self.align_prob[idx])

    def first_per_clip(self, n: int) -> "Features":
        """The first ``n`` items of every clip, in order (a generated set's sample 0, 1, ...)."""
        rank = pd.Series(self.clip_ids).groupby(self.clip_ids).cumcount().to_numpy()
        return self.take(np.flatnonzero(rank < n))


def extract(extractor: AudioFeatureExtractor, clip_ids: Sequence[str], wavs: Sequence[np.ndarray]) -> Features:
    return Features(np.asarray(clip_ids), extractor.clip_embeddings(wavs), extractor.logits(wavs),
                    extractor.frame_embeddings(wavs))


def _reference_rows(gen: Features, ref: Features) -> np.ndarray:
    where = {c: i for i, c in enumerate(ref.clip_ids)}
    return np.array([where[c] for c in gen.clip_ids])


def score(gen: Features, ref: Features) -> dict[str, float]:
    """The six metrics of ``gen`` against the real audio ``ref`` of the same test videos.

    FAD, FD and the paired KL see the reference of a clip once per generated sample (Frieren's
    duplicated ground truth); KID sees each reference clip once: a repeated row would enter KID's
    within-reference term as a pair of identical sounds and bias the unbiased MMD² upwards. KID of a
    single clip is undefined (NaN).
    """
    rows = _reference_rows(gen, ref)
    r, clips = ref.take(rows), np.unique(rows)
    return {
        "FAD": fad(gen.frames, r.frames),
        "FD": fd(gen.clip_emb, r.clip_emb),
        # undefined for a single clip (a bootstrap replicate may draw one video only): NaN, left out of intervals
        "KID": 1e3 * kid(gen.clip_emb, ref.clip_emb[clips])[0] if len(clips) > 1 else np.nan,
        "KL": kl(gen.logits, r.logits),
        "IS": inception_score(gen.logits, splits=min(10, len(gen.logits)))[0],
        "AlignAcc": 100 * align_acc(gen.align_prob),
    }


# Every replicate is hundreds of small sqrtm/matmul calls: extra BLAS threads only spin (10x slower on a
# busy machine), hence threadpool_limits(1) around each bootstrap.

def score_with_intervals(gen: Features, ref: Features, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Interval]:
    """Each metric with a bootstrap 95 % interval over test videos (all items of a drawn video go in)."""
    with threadpool_limits(1):
        return bootstrap_ci(lambda idx: score(gen.take(idx), ref), gen.clip_ids, n_boot, seed)


def paired_differences(baseline: Features, ours: Features, ref: Features, *, n_boot: int = 1000,
                       seed: int = 0) -> dict[str, Interval]:
    """ours − baseline for each metric, both scored on the same resampled test videos (paired bootstrap)."""
    if not np.array_equal(baseline.clip_ids, ours.clip_ids):
        raise ValueError("baseline and ours must hold the same items in the same order")

    with threadpool_limits(1):
        return paired_bootstrap_diff(lambda feats: score(feats, ref), baseline, ours, ours.clip_ids, n_boot, seed)


def intervals_table(rows: dict[tuple[str, str], dict[str, Interval]], index_names=("test_set", "system")) -> pd.DataFrame:
    """One row per key, columns ``<metric>``, ``<metric>_lo``, ``<metric>_hi``."""
    records = []
    for key, metrics in rows.items():
        rec = dict(zip(index_names, key))
        for name, iv in metrics.items():
            rec[name], rec[f"{name}_lo"], rec[f"{name}_hi"] = iv.estimate, iv.lo, iv.hi
        records.append(rec)
    return pd.DataFrame(records)


def interval_strings(table: pd.DataFrame, index: Sequence[str], digits: int = 2) -> pd.DataFrame:
    """A table of :func:`intervals_table` as "estimate [lo, hi]" per metric, for reading; a paired difference
    whose interval excludes 0 is marked with *."""
    def cell(row, m):
        est, lo, hi = row[m], row[f"{m}_lo"], row[f"{m}_hi"]
        mark = "*" if lo > 0 or hi < 0 else ""
        return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]{mark}"

    return pd.DataFrame({m: [cell(r, m) for _, r in table.iterrows()] for m in METRICS},
                        index=pd.MultiIndex.from_frame(table[list(index)]))


def per_class_align_gain(baseline: Features, ours: Features, labels: dict[str, str]) -> pd.DataFrame:
    """Figure 5: Align Acc (%) of each class, baseline and ours, and the gain, sorted by gain."""
    # a pair counts as aligned exactly as in Align Acc: torch.round(p) == 1, so p = 0.5 does not
    df = pd.DataFrame({"label": [labels[c] for c in ours.clip_ids],
                       "baseline": 100 * (np.round(baseline.align_prob) == 1),
                       "ours": 100 * (np.round(ours.align_prob) == 1)})
    out = df.groupby("label")[["baseline", "ours"]].mean()
    out["gain"] = out["ours"] - out["baseline"]
    return out.sort_values("gain", ascending=False)


def save_table(df: pd.DataFrame, stem: str | Path, *, floatfmt: str = ".3f") -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` (a Markdown table) atomically."""
    stem = Path(stem)
    csv = atomic_write_text(stem.with_suffix(".csv"), df.to_csv(index=False))
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(format(v, floatfmt) if isinstance(v, float) else str(v) for v in row) + " |")
    md = atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    return csv, md


#: The paper's Table 1 (VGGSound / VGG-CU / VGG-CM × Diff-Foley / Ours), for the direction of each effect.
PAPER_TABLE1 = pd.DataFrame(
    [("original", "baseline", 7.481, 25.445, 10.71, 3.280, 11.670, 92.946),
     ("original", "ours", 7.173, 24.532, 10.05, 3.235, 11.835, 91.718),
     ("cu", "baseline", 8.926, 28.843, 12.17, 3.824, 11.136, 74.882),
     ("cu", "ours", 7.825, 25.661, 10.45, 3.438, 11.601, 85.071),
     ("cm", "baseline", 9.164, 28.394, 11.48, 3.843, 10.665, 72.570),
     ("cm", "ours", 8.194, 25.932, 10.23, 3.508, 11.047, 81.850)],
    columns=["test_set", "system", *METRICS])


def effect_directions(table: pd.DataFrame) -> pd.DataFrame:
    """For each test set and metric: does ours beat the baseline? (True = better, by the metric's sense)."""
    rows = []
    for ts, g in table.groupby("test_set", sort=False):
        base, ours = g.set_index("system").loc["baseline"], g.set_index("system").loc["ours"]
        rows.append({"test_set": ts, **{m: bool((ours[m] < base[m]) if LOWER_IS_BETTER[m] else (ours[m] > base[m]))
                                          for m in METRICS}})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# a world's tables

class Scoreboard:
    """Tables 1, 3, 4 and Figure 5 of a world (:class:`cinefoley.worlds.base.World`).

    The referees' features of the real test audio and of every generated (system, test set) are
    extracted once; Align Acc judges each generated sound against the teacher's features of the
    *original* clip (the window the generator used). Generated clips without readable reference audio
    are left out of every table (listed in ``left_out``).
    """

    def __init__(self, world, *, n_boot: int | None = None, seed: int | None = None):
        self.world = world
        self.n_boot = n_boot or world.settings.n_boot
        self.seed = world.seed if seed is None else seed
        self.referees = world.referees
        wavs = world.reference_audio()
        self.reference = extract(self.referees.extractor, list(wavs), list(wavs.values()))
        self.video_feats, _ = world.window(world.features("baseline", "original"))
        self.left_out = list(getattr(world, "reference_left_out", []))
        self._features: dict[tuple[str, str], Features] = {}
        self._scored: dict[tuple, dict[str, Interval]] = {}

    def features(self, system: str, kind: str) -> Features:
        """The referees' view of everything ``system`` generated on ``kind`` (cached)."""
        if (system, kind) not in self._features:
            gen = self.world.generated(system, kind)
            keep = np.flatnonzero(np.isin(gen["clip_id"], self.reference.clip_ids))
            gen = {k: v[keep] for k, v in gen.items()}
            feats = extract(self.referees.extractor, gen["clip_id"], list(gen["wav"]))
            feats.align_prob = self.referees.align_prob(
                gen["mel"].astype(np.float32), torch.stack([self.video_feats[c] for c in gen["clip_id"]]))
            self._features[(system, kind)] = feats
        return self._features[(system, kind)]

    def scored(self, system: str, kind: str, *, first_per_clip: int | None = None,
               n_boot: int | None = None) -> dict[str, Interval]:
        key = (system, kind, first_per_clip, n_boot or self.n_boot)
        if key not in self._scored:
            feats = self.features(system, kind)
            if first_per_clip is not None:
                feats = feats.first_per_clip(first_per_clip)
            self._scored[key] = score_with_intervals(feats, self.reference, n_boot=key[3], seed=self.seed)
        return self._scored[key]

    def table1(self, ours: str = MAIN_RUN) -> pd.DataFrame:
        """Table 1: baseline and ours on every test set, each metric with its 95 % interval."""
        return intervals_table({(kind, label): self.scored(system, kind) for kind in TEST_SETS
                                for label, system in (("baseline", "baseline"), ("ours", ours))})

    def paired(self, ours: str = MAIN_RUN) -> pd.DataFrame:
        """ours − baseline per test set and metric, with paired-bootstrap 95 % intervals."""
        return intervals_table({(kind, "ours-baseline"): paired_differences(
            self.features("baseline", kind), self.features(ours, kind), self.reference, n_boot=self.n_boot,
            seed=self.seed) for kind in TEST_SETS})

    def ablation(self, runs: Sequence[str]) -> pd.DataFrame | None:
        """Table 3 or 4: the students of ``runs`` that exist, each scored on the same number of sounds
        per clip (the ablation students' count), with a third of the bootstrap resamples. None when
        fewer than two of them exist."""
        have = [r for r in runs if r in self.world.systems()]
        if len(have) < 2:
            return None
        n = self.world.settings.ablation_samples_per_clip
        return intervals_table({(kind, r): self.scored(r, kind, first_per_clip=n, n_boot=max(20, self.n_boot // 3))
                                for kind in TEST_SETS for r in have}, index_names=("test_set", "training"))

    def ablation_differences(self, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame | None:
        """Tables 3 and 4 as paired differences: for each (a, b) of ``pairs`` whose students both exist, a − b
        per test set and metric, both scored on the same resampled videos and the ablation's sounds per clip.
        None when no pair exists."""
        have = set(self.world.systems())
        pairs = [(a, b) for a, b in pairs if a in have and b in have]
        if not pairs:
            return None
        n = self.world.settings.ablation_samples_per_clip
        return intervals_table({(kind, f"{a} − {b}"): paired_differences(
            self.features(b, kind).first_per_clip(n), self.features(a, kind).first_per_clip(n), self.reference,
            n_boot=self.n_boot, seed=self.seed) for kind in TEST_SETS for a, b in pairs},
            index_names=("test_set", "difference"))

    def per_class_gain(self, kind: str = "cu", ours: str = MAIN_RUN) -> pd.DataFrame:
        """Figure 5: Align Acc of each class on ``kind``, baseline and ours, sorted by the gain."""
        rows = self.world.test_sets()["original"]
        labels = dict(zip(rows["clip_id"].astype(str), rows["label"].astype(str)))
        return per_class_align_gain(self.features("baseline", kind), self.features(ours, kind), labels)

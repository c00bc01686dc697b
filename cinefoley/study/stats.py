"""Analysis of the preference study: Table 2, its statistics, breakdowns and exclusions.

Table 2 of the paper counts forced-choice votes over all participants × clips: "prefer Diff-Foley
158 (25.48 %) / prefer Ours 462 (74.51 %)" out of 620. Here: the same layout, a two-sided exact
binomial test of "no preference" (p = 0.5), and a Wilson 95 % interval for the share preferring ours.
Votes of one participant are not independent; the per-participant breakdown shows whether the
preference holds across people and not only across votes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
from scipy.stats import binomtest

from cinefoley.study.design import BASELINE, CATCH, MATCH, OURS, TEST


def binomial_test(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test: p-value of ``k`` successes in ``n`` trials under rate ``p``."""
    if n == 0:
        return float("nan")
    return float(binomtest(int(k), int(n), p, alternative="two-sided").pvalue)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for the proportion ``k / n`` (no continuity correction)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def preference_table(n_baseline: int, n_ours: int, systems: dict[str, str]) -> pd.DataFrame:
    """Table 2's layout: one row, "prefer <baseline>" and "prefer <ours>" as ``count (xx.xx%)``."""
    n = n_baseline + n_ours
    cells = {f"prefer {systems[s]}": f"{k} ({100 * k / n:.2f}%)" if n else f"{k} (n/a)"
             for s, k in ((BASELINE, n_baseline), (OURS, n_ours))}
    return pd.DataFrame([cells], index=["votes"])


@dataclass
class Analysis:
    """Everything ``analyze`` finds; ``summary`` is JSON-ready."""

    table: pd.DataFrame  # Table 2 layout, included participants
    summary: dict
    per_participant: pd.DataFrame
    per_clip: pd.DataFrame
    excluded: list[str] = field(default_factory=list)


def analyze(votes: pd.DataFrame, systems: dict[str, str], *, min_catch_accuracy: float = 1.0,
            confidence: float = 0.95) -> Analysis:
    """Table 2, binomial test and Wilson interval over test votes of participants who pass the catches.

    A participant with catch trials is excluded when the share of catch trials where they chose the
    clip's own sound is below ``min_catch_accuracy`` (fixed before looking at the data: by default
    every catch must be passed). Participants without catch votes are kept.
    """
    votes = votes if len(votes) else pd.DataFrame(columns=["participant", "kind", "item", "chosen"])
    tests, catches = votes[votes["kind"] == TEST], votes[votes["kind"] == CATCH]

    per_participant = pd.DataFrame(index=pd.Index(sorted(votes["participant"].unique()), name="participant"))
    per_participant["test_votes"] = tests.groupby("participant").size()
    per_participant[f"prefer {systems[OURS]}"] = tests[tests["chosen"] == OURS].groupby("participant").size()
    per_participant["catch_votes"] = catches.groupby("participant").size()
    per_participant["catch_passed"] = catches[catches["chosen"] == MATCH].groupby("participant").size()
    per_participant = per_participant.fillna(0).astype(int)
    per_participant[f"share {systems[OURS]}"] = (
        per_participant[f"prefer {systems[OURS]}"] / per_participant["test_votes"].where(per_participant["test_votes"] > 0))
    per_participant["catch_accuracy"] = (
        per_participant["catch_passed"] / per_participant["catch_votes"].where(per_participant["catch_votes"] > 0))
    per_participant["excluded"] = per_participant["catch_accuracy"].lt(min_catch_accuracy)  # NaN (no catch) -> kept
    excluded = per_participant.index[per_participant["excluded"]].tolist()

    included = tests[~tests["participant"].isin(excluded)]
    n_ours = int((included["chosen"] == OURS).sum())
    n_baseline = int((included["chosen"] == BASELINE).sum())
    n = n_ours + n_baseline
    low, high = wilson_interval(n_ours, n, confidence)

    per_clip = included.groupby("item").agg(
        votes=("chosen", "size"), **{f"prefer {systems[OURS]}": ("chosen", lambda c: int((c == OURS).sum()))})
    per_clip.index.name = "clip_id"
    per_clip[f"prefer {systems[BASELINE]}"] = per_clip["votes"] - per_clip[f"prefer {systems[OURS]}"]
    per_clip[f"share {systems[OURS]}"] = per_clip[f"prefer {systems[OURS]}"] / per_clip["votes"]
    bounds = [wilson_interval(k, m, confidence) for k, m in zip(per_clip[f"prefer {systems[OURS]}"], per_clip["votes"])]
    per_clip["wilson_low"] = [b[0] for b in bounds]
    per_clip["wilson_high"] = [b[1] for b in bounds]

    shares = per_participant.loc[~per_participant["excluded"], f"share {systems[OURS]}"].dropna()
    summary = {
        "systems": dict(systems),
        "votes": n,
        "prefer_baseline": n_baseline,
        "prefer_ours": n_ours,
        "share_ours": n_ours / n if n else float("nan"),
        "share_baseline": n_baseline / n if n else float("nan"),
        "binomial_p_two_sided": binomial_test(n_ours, n),
        "confidence": confidence,
        "wilson_low": low,
        "wilson_high": high,
        "participants": int(len(per_participant)),
        "participants_included": int(len(per_participant) - len(excluded)),
        "excluded": excluded,
        "min_catch_accuracy": min_catch_accuracy,
        "clips": int(len(per_clip)),
        "participants_preferring_ours": int((shares > 0.5).sum()),
        "participants_preferring_baseline": int((shares < 0.5).sum()),
    }
    summary = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in summary.items()}  # JSON-safe
    return Analysis(preference_table(n_baseline, n_ours, systems), summary, per_participant, per_clip, excluded)

"""Bootstrap confidence intervals over test *videos*, for per-item and whole-set metrics.

A test set has several items per video (several generated samples, or a clip in the original, CU
and CM test sets), and FD, KID and IS are functions of the whole set, not means of per-item scores.
So each bootstrap replicate draws the videos (``groups``) with replacement, takes *all* items of
every drawn video (a video drawn twice contributes its items twice), and re-evaluates the metric on
that set. The interval is the percentile interval of the replicates (Efron's percentile bootstrap).

``values_or_fn`` is either per-item values (the statistic is their mean) or a function of an integer
index array into the caller's per-item arrays, e.g. ``lambda i: fd(gen[i], ref[i])``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np


class Interval(NamedTuple):
    """A point estimate on the full set and its ``1 - alpha`` bootstrap interval."""

    estimate: float
    lo: float
    hi: float


def _group_members(groups: Sequence) -> list[np.ndarray]:
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D sequence of labels, got shape {labels.shape}")
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def resampled_indices(groups: Sequence, n_boot: int, seed: int = 0):
    """Yield ``n_boot`` item-index arrays, each from the groups drawn with replacement."""
    members = _group_members(groups)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        drawn = rng.integers(0, len(members), size=len(members))
        yield np.concatenate([members[g] for g in drawn])


def _as_statistic(values_or_fn, n_items: int) -> Callable[[np.ndarray], float]:
    if callable(values_or_fn):
        return values_or_fn
    values = np.asarray(values_or_fn, dtype=np.float64)
    if values.shape != (n_items,):
        raise ValueError(f"got {values.shape[0] if values.ndim else 0} values for {n_items} group labels")
    return lambda idx: float(values[idx].mean())


def _percentiles(replicates: list[float], alpha: float) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_ci(values_or_fn, groups: Sequence, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> Interval:
    """Percentile interval of a metric, resampling ``groups`` (one video label per item).

    ``values_or_fn``: per-item values (mean) or ``fn(indices) -> float`` evaluated on every replicate.
    """
    n_items = len(groups)
    statistic = _as_statistic(values_or_fn, n_items)
    replicates = [statistic(idx) for idx in resampled_indices(groups, n_boot, seed)]
    return Interval(float(statistic(np.arange(n_items))), *_percentiles(replicates, alpha))


def _take(data, idx: np.ndarray):
    if isinstance(data, tuple):
        return tuple(_take(d, idx) for d in data)
    return np.asarray(data)[idx]


def paired_bootstrap_diff(metric_fn: Callable, a, b, groups: Sequence, n_boot: int = 1000, seed: int = 0,
                          alpha: float = 0.05) -> Interval:
    """``metric_fn(b) - metric_fn(a)`` and its interval, both evaluated on the same resampled videos.

    ``a`` (e.g. the baseline) and ``b`` (ours) hold one row per item, aligned with ``groups``; either
    may be a tuple of such arrays, passed to ``metric_fn`` as a tuple (e.g. ``(gen_features,
    ref_features)`` with ``metric_fn = lambda x: fd(*x)``). Pairing removes the between-video
    variance that the two systems share.
    """
    n_items = len(groups)
    for data in (a, b):
        for array in data if isinstance(data, tuple) else (data,):
            if len(array) != n_items:
                raise ValueError(f"an input has {len(array)} rows for {n_items} group labels")

    def diff(idx: np.ndarray) -> float:
        return float(metric_fn(_take(b, idx)) - metric_fn(_take(a, idx)))

    replicates = [diff(idx) for idx in resampled_indices(groups, n_boot, seed)]
    return Interval(diff(np.arange(n_items)), *_percentiles(replicates, alpha))

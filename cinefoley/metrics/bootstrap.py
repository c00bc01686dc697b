"""Bootstrap confidence intervals over test *videos*, for per-item and whole-set metrics.

A test set has several items per video (several generated samples, or a clip in the original, CU
and CM test sets), and FD, KID and IS are functions of the whole set, not means of per-item scores.
So each bootstrap replicate draws the videos (``groups``) with replacement, takes *all* items of
every drawn video (a video drawn twice contributes its items twice), and re-evaluates the metric on
that set. The interval is the percentile interval of the replicates (Efron's percentile bootstrap);
replicates where the statistic is undefined (NaN, e.g. KID of a replicate that drew one video) are
left out of it.

``values_or_fn`` is either per-item values (the statistic is their mean) or a function of an integer
index array into the caller's per-item arrays, e.g. ``lambda i: fd(gen[i], ref[i])``. A statistic may
return a dict of metrics (all evaluated once per replicate); the answer is then a dict of intervals.
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
    lo, hi = np.nanpercentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _interval(full, replicates: list, alpha: float):
    """The interval of a float statistic, or a dict of intervals of a dict-valued one."""
    if isinstance(full, dict):
        return {k: Interval(float(full[k]), *_percentiles([r[k] for r in replicates], alpha)) for k in full}
    return Interval(float(full), *_percentiles(replicates, alpha))


def bootstrap_ci(values_or_fn, groups: Sequence, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> Interval:
    """Percentile interval of a metric, resampling ``groups`` (one video label per item).

    ``values_or_fn``: per-item values (mean) or ``fn(indices) -> float`` (or a dict of floats)
    evaluated on every replicate.
    """
    n_items = len(groups)
    statistic = _as_statistic(values_or_fn, n_items)
    replicates = [statistic(idx) for idx in resampled_indices(groups, n_boot, seed)]
    return _interval(statistic(np.arange(n_items)), replicates, alpha)


def _take(data, idx: np.ndarray):
    if isinstance(data, tuple):
        return tuple(_take(d, idx) for d in data)
    if isinstance(data, (np.ndarray, list)):
        return np.asarray(data)[idx]
    return data.take(idx)  # an object that selects its own rows, e.g. evaluate.Features


def paired_bootstrap_diff(metric_fn: Callable, a, b, groups: Sequence, n_boot: int = 1000, seed: int = 0,
                          alpha: float = 0.05) -> Interval:
    """``metric_fn(b) - metric_fn(a)`` and its interval, both evaluated on the same resampled videos.

    ``a`` (e.g. the baseline) and ``b`` (ours) hold one row per item, aligned with ``groups``; either
    may be a tuple of such arrays, passed to ``metric_fn`` as a tuple (e.g. ``(gen_features,
    ref_features)`` with ``metric_fn = lambda x: fd(*x)``), or an object with ``len`` and
    ``take(indices)``. ``metric_fn`` may return a dict of metrics: the answer is then a dict of
    intervals of ``b[m] - a[m]``. Pairing removes the between-video variance that the two systems share.
    """
    n_items = len(groups)
    for data in (a, b):
        for array in data if isinstance(data, tuple) else (data,):
            if len(array) != n_items:
                raise ValueError(f"an input has {len(array)} rows for {n_items} group labels")

    def diff(idx: np.ndarray):
        of_a, of_b = metric_fn(_take(a, idx)), metric_fn(_take(b, idx))
        if isinstance(of_b, dict):
            return {k: float(of_b[k] - of_a[k]) for k in of_b}
        return float(of_b - of_a)

    replicates = [diff(idx) for idx in resampled_indices(groups, n_boot, seed)]
    return _interval(diff(np.arange(n_items)), replicates, alpha)

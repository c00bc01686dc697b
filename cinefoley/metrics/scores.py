"""The evaluation metrics of Diff-Foley-style papers, exactly as AudioLDM's suite computes them.

``audioldm_eval`` with the PANNs Cnn14 backbone (``backbone="cnn14"``; its HEAD default is MERT):

- FD: Fréchet distance of per-clip "2048" embeddings; FAD: the same on VGGish 0.96-s frame embeddings,
  every frame one sample (pytorch-fid's formula, shared by fid.py and fad.py).
- KID: unbiased MMD² with a cubic polynomial kernel over random subsets (torch-fidelity's); each
  reference clip enters once, however many samples were generated for it.
- KL: paired KL(reference ‖ generated) of the softmaxed 527 logits, summed over classes and averaged
  over pairs (``F.kl_div(log(softmax(gen) + 1e-6), softmax(ref), reduction="sum") / N``).
- IS: Inception score of the generated logits, 10 splits (torch-fidelity's ``metric_isc``).
- Align Acc: Diff-Foley's alignment-classifier accuracy, the share of pairs with ``round(p) == 1``.

All inputs are arrays of features or logits; the extractors live in :mod:`cinefoley.metrics.extractors`.
Computation is in float64 (audioldm_eval keeps the mean in float32: expect ~1e-5 relative noise).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from scipy.special import log_softmax, softmax


def _matrix(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} must be a (N, D) array with N >= 2, got shape {x.shape}")
    return x


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``np.cov``, N - 1) of ``(N, D)`` features."""
    x = _matrix(features, "features")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``|mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^½)`` with pytorch-fid's numerics.

    ``sqrtm`` of the product; only if it is not finite, retry with 1e-6 added to both diagonals;
    an imaginary part above 1e-3 on the diagonal is an error, a smaller one is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape} vs {mu2.shape}, {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn("Fréchet distance: singular product of covariances; adding 1e-6 to the diagonals",
                      RuntimeWarning, stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fd(a, b) -> float:
    """Fréchet distance between two sets of features ``(N_a, D)`` and ``(N_b, D)`` (symmetric)."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def fad(frames_a, frames_b) -> float:
    """FAD: :func:`fd` over all 0.96-s frame embeddings of each set (lists of ``(n_i, D)``), pooled."""
    return fd(np.concatenate(list(frames_a)), np.concatenate(list(frames_b)))


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) of ``m`` rows ``x`` and ``n`` rows ``y``."""
    m, n = len(x), len(y)
    k_xx = (x @ x.T * gamma + coef0) ** degree
    k_yy = (y @ y.T * gamma + coef0) ** degree
    k_xy = (x @ y.T * gamma + coef0) ** degree
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.sum() / (m * n))


def kid(a, b, subsets: int = 100, subset_size: int = 1000, seed: int = 2020, *, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0) -> tuple[float, float]:
    """Kernel Inception distance of generated ``a`` and reference ``b``: ``(mean, std)`` over subsets.

    torch-fidelity / audioldm_eval: ``RandomState(seed)`` draws each subset of ``a`` then of ``b``
    without replacement, kernel ``(x·y / d + 1)³``, unbiased MMD², std with ddof 0. ``subset_size``
    is clamped to each set's size (with a warning; a set no larger than it enters every subset whole,
    and when both do, std = 0). Sets of equal size give torch-fidelity's numbers; where they differ
    (several generated samples against each reference clip once) each keeps its own subset size,
    where torch-fidelity would clamp both to the smaller set.
    """
    x, y = _matrix(a, "a"), _matrix(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    m, n = min(subset_size, len(x)), min(subset_size, len(y))
    if min(m, n) < subset_size:
        warnings.warn(f"KID: subset_size {subset_size} clamped to {min(m, n)} (the smaller set)", RuntimeWarning,
                      stacklevel=2)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    if (m, n) == (len(x), len(y)):  # every subset is a permutation of both sets: MMD² is the same for all
        return _polynomial_mmd2(x, y, degree, gamma, coef0), 0.0
    rng = np.random.RandomState(seed)
    mmds = []
    for _ in range(subsets):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), n, replace=False)]
        mmds.append(_polynomial_mmd2(xs, ys, degree, gamma, coef0))
    return float(np.mean(mmds)), float(np.std(mmds))


def kl(gen_logits, ref_logits, *, eps: float = 1e-6) -> float:
    """Paired KL(ref ‖ gen) of softmaxed logits ``(N, K)``, summed over classes, mean over pairs.

    Row i of both arrays must be the same test item (audioldm_eval pairs by file basename).
    ``eps=1e-6`` is audioldm_eval's ``log(softmax(gen) + 1e-6)`` (KL of identical sets ≈ -5e-4);
    ``eps=0`` is av-benchmark's exact ``log_softmax`` form.
    """
    gen, ref = _matrix(gen_logits, "gen_logits"), _matrix(ref_logits, "ref_logits")
    if gen.shape != ref.shape:
        raise ValueError(f"paired logits differ in shape: {gen.shape} vs {ref.shape}")
    log_q = np.log(softmax(gen, axis=1) + eps) if eps else log_softmax(gen, axis=1)
    log_p = log_softmax(ref, axis=1)
    return float((np.exp(log_p) * (log_p - log_q)).sum() / len(gen))


def inception_score(logits, splits: int = 10, seed: int = 2020, *, shuffle: bool = True) -> tuple[float, float]:
    """Inception score ``(mean, std)`` of ``(N, K)`` logits, torch-fidelity's ``metric_isc``.

    Rows are permuted by ``RandomState(seed)`` (when ``shuffle``), softmaxed in float64 and cut into
    ``splits`` chunks ``[i N // s, (i + 1) N // s)``; each scores ``exp(mean_rows KL(p ‖ p̄_chunk))``;
    std has ddof 0.
    """
    x = _matrix(logits, "logits")
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(len(x))]
    p, log_p = softmax(x, axis=1), log_softmax(x, axis=1)
    n = len(x)
    scores = []
    for i in range(splits):
        chunk_p, chunk_log_p = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = np.log(chunk_p.mean(axis=0, keepdims=True))
        scores.append(np.exp((chunk_p * (chunk_log_p - log_marginal)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def align_acc(probs) -> float:
    """Diff-Foley's Align Acc: the share of (audio, video) pairs the classifier rounds to 1 (p > 0.5)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise ValueError("align_acc needs at least one probability")
    return float(np.mean(np.round(p) == 1))

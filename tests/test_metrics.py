"""Metrics against their formulas, metrics.md's golden values and analytic cases; bootstrap; feature cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import soundfile as sf
from test_audio import single_threaded  # noqa: F401 (an autouse fixture)

from cinefoley.media.audio import load_audio
from cinefoley.metrics import (AudioFeatureExtractor, FeatureCache, align_acc, bootstrap_ci, content_key, fad, fd,
                               frechet_distance, inception_score, kid, kl, paired_bootstrap_diff)
from cinefoley.metrics import scores

RS = np.random.RandomState


@pytest.fixture(scope="module")
def golden_features():
    """metrics.md §8: X1 = RS(0).randn(500, 64), X2 = RS(1).randn(500, 64) * 1.1 + 0.1."""
    return RS(0).randn(500, 64), RS(1).randn(500, 64) * 1.1 + 0.1


# ------------------------------------------------------------------------------------ FD

def test_fd_of_known_gaussians():
    assert frechet_distance(np.zeros(8), np.eye(8), np.ones(8), 4 * np.eye(8)) == pytest.approx(16.0, abs=1e-9)
    # commuting covariances: FD = |dmu|² + sum (sqrt(a) - sqrt(b))²
    q, _ = np.linalg.qr(RS(0).randn(5, 5))
    a, b = np.array([1.0, 2, 3, 4, 5]), np.array([4.0, 1, 9, 2, 0.5])
    mu1, mu2 = RS(1).randn(5), RS(2).randn(5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_fd_golden_value_and_symmetry(golden_features):
    x1, x2 = golden_features
    assert fd(x1, x2) == pytest.approx(6.226583111208157, rel=1e-10)
    assert fd(x2, x1) == pytest.approx(fd(x1, x2), rel=1e-10)
    assert abs(fd(x1, x1)) < 1e-9


def test_fd_from_samples_approaches_the_population_value():
    rng = RS(3)
    a, b = rng.randn(20000, 4), 2 * rng.randn(20000, 4) + 1  # N(0, I) vs N(1, 4I): 4 + 4 = 8
    assert fd(a, b) == pytest.approx(8.0, abs=0.15)


def test_fad_pools_frames():
    rng = RS(4)
    frames_a = [rng.randn(n, 3) for n in (8, 10, 7)]
    frames_b = [rng.randn(9, 3) + 0.5 for _ in range(3)]
    assert fad(frames_a, frames_b) == fd(np.concatenate(frames_a), np.concatenate(frames_b))


def test_fd_offset_retry_only_when_sqrtm_is_not_finite(monkeypatch, golden_features):
    x1, x2 = golden_features
    calls = []
    real_sqrtm = scipy.linalg.sqrtm

    def flaky_sqrtm(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd(x1, x2)  # finite: no retry, no warning
    monkeypatch.setattr(scores.scipy.linalg, "sqrtm", flaky_sqrtm)
    mu1, s1 = scores.gaussian_stats(x1)
    mu2, s2 = scores.gaussian_stats(x2)
    with pytest.warns(RuntimeWarning, match="adding 1e-6"):
        value = frechet_distance(mu1, s1, mu2, s2)
    assert len(calls) == 2
    offset = 1e-6 * np.eye(64)
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset)).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert value == pytest.approx(expected, rel=1e-10)


def test_fd_rejects_a_large_imaginary_part():
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]))


# ------------------------------------------------------------------------------------ KID

def unbiased_mmd2_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    k = lambda u, v: (u @ v / x.shape[1] + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m ** 2


def test_kid_matches_the_formula_and_rng_convention():
    a, b = RS(5).randn(30, 6), RS(6).randn(40, 6) + 0.3
    rng = RS(11)
    expected = []
    for _ in range(3):  # generated set drawn first, then the reference, without replacement
        ia, ib = rng.choice(30, 12, replace=False), rng.choice(40, 12, replace=False)
        expected.append(unbiased_mmd2_by_loops(a[ia], b[ib]))
    mean, std = kid(a, b, subsets=3, subset_size=12, seed=11)
    assert mean == pytest.approx(np.mean(expected), rel=1e-10)
    assert std == pytest.approx(np.std(expected), rel=1e-8)


def test_kid_golden_values(golden_features):
    x1, x2 = golden_features
    with pytest.warns(RuntimeWarning, match="clamped to 500"):
        mean, std = kid(x1, x2)
    assert mean == pytest.approx(0.03612240272797916, rel=1e-10)
    assert std < 1e-12  # every subset is the whole set
    mean, std = kid(x1, x2, subsets=10, subset_size=100)
    assert mean == pytest.approx(0.039804271607290075, rel=1e-10)
    assert std == pytest.approx(0.018095330485050763, rel=1e-8)


def test_kid_of_one_distribution_is_about_zero():
    same = kid(RS(7).randn(1000, 16), RS(8).randn(1000, 16), subsets=20, subset_size=500)
    shifted = kid(RS(7).randn(1000, 16), RS(8).randn(1000, 16) + 0.5, subsets=20, subset_size=500)
    assert abs(same[0]) < 3e-3 and shifted[0] > 20 * abs(same[0])


# ------------------------------------------------------------------------------------ KL

def test_kl_golden_values_and_direction():
    r = RS(3).randn(200, 527) * 3
    g = r + RS(4).randn(200, 527) * 1.5
    assert kl(g, r) == pytest.approx(0.9129593585223529, rel=1e-10)         # audioldm_eval
    assert kl(g, r, eps=0) == pytest.approx(0.9159246715622053, rel=1e-10)  # av-benchmark
    p = np.exp(r) / np.exp(r).sum(1, keepdims=True)
    q = np.exp(g) / np.exp(g).sum(1, keepdims=True)
    assert kl(g, r, eps=0) == pytest.approx(np.mean(np.sum(p * np.log(p / q), axis=1)), rel=1e-10)
    assert kl(r, g, eps=0) == pytest.approx(np.mean(np.sum(q * np.log(q / p), axis=1)), rel=1e-10)


def test_kl_of_identical_logits():
    r = RS(3).randn(200, 527) * 3
    assert kl(r, r, eps=0) == 0.0
    assert kl(r, r) == pytest.approx(-4.64e-4, abs=1e-5)  # the +1e-6 bias metrics.md reports
    with pytest.raises(ValueError, match="paired logits differ"):
        kl(r[:10], r[:11])


# ------------------------------------------------------------------------------------ IS

def test_inception_score_golden_values():
    logits = RS(2).randn(500, 527) * 3
    mean, std = inception_score(logits)
    assert mean == pytest.approx(15.276279798071196, rel=1e-10) and std == pytest.approx(0.8438686658986894, rel=1e-8)
    mean, std = inception_score(logits, shuffle=False)
    assert mean == pytest.approx(15.388474712817986, rel=1e-10) and std == pytest.approx(0.5574100999677045, rel=1e-8)


def test_inception_score_analytic_cases():
    assert inception_score(np.zeros((100, 10))) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert inception_score(np.tile(50 * np.eye(7)[2], (70, 1))) == pytest.approx((1.0, 0.0), abs=1e-12)
    k = 6
    one_hot = 60 * np.tile(np.eye(k), (10 * 4, 1))  # 240 rows, every split holds 4 of each class
    mean, std = inception_score(one_hot, splits=10, shuffle=False)
    assert mean == pytest.approx(k, rel=1e-9) and std < 1e-9
    # shuffled, a split's score is exp(entropy of its class histogram)
    labels = np.tile(np.arange(k), 40)[RS(2020).permutation(240)]
    per_split = [np.exp(-np.sum((c := np.bincount(labels[i * 24:(i + 1) * 24], minlength=k) / 24)[c > 0]
                                * np.log(c[c > 0]))) for i in range(10)]
    mean, std = inception_score(one_hot, splits=10, seed=2020)
    assert mean == pytest.approx(np.mean(per_split), rel=1e-9) and std == pytest.approx(np.std(per_split), rel=1e-6)


def test_align_acc_rounds_half_down():
    assert align_acc([0.2, 0.5, 0.500001, 0.9, 1.0]) == pytest.approx(3 / 5)
    assert align_acc(np.ones((4, 1))) == 1.0


# ------------------------------------------------------------------------------------ bootstrap

def clustered_values(n_groups: int, per_group: int, rng: np.random.Generator, mean: float = 5.0):
    """Items share a per-video effect (sd 1) plus item noise (sd 0.3)."""
    groups = np.repeat(np.arange(n_groups), per_group)
    values = mean + rng.normal(0, 1, n_groups)[groups] + rng.normal(0, 0.3, groups.size)
    return values, groups


def test_bootstrap_interval_of_a_mean():
    values, groups = clustered_values(400, 3, np.random.default_rng(0))
    est, lo, hi = bootstrap_ci(values, groups, n_boot=1000, seed=0)
    assert est == pytest.approx(values.mean()) and lo < 5.0 < hi
    se = values.reshape(400, 3).mean(1).std(ddof=1) / np.sqrt(400)  # standard error of a video mean
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci(values, groups, n_boot=200, seed=3) == bootstrap_ci(values, groups, n_boot=200, seed=3)


def test_bootstrap_coverage_is_near_95_percent():
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(100):
        values, groups = clustered_values(40, 2, rng)
        _, lo, hi = bootstrap_ci(values, groups, n_boot=200, seed=int(rng.integers(1 << 30)))
        covered.append(lo < 5.0 < hi)
    assert 0.84 <= np.mean(covered) <= 1.0


def test_resampling_videos_not_items_widens_the_interval():
    values, groups = clustered_values(100, 5, np.random.default_rng(2))
    _, lo_v, hi_v = bootstrap_ci(values, groups, n_boot=500)
    _, lo_i, hi_i = bootstrap_ci(values, np.arange(values.size), n_boot=500)  # as if items were independent
    assert (hi_v - lo_v) > 1.5 * (hi_i - lo_i)


def test_bootstrap_re_evaluates_a_set_metric():
    rng = RS(9)
    gen, ref = rng.randn(60, 4) + 0.5, rng.randn(60, 4)
    groups = np.repeat(np.arange(20), 3)
    seen = []

    def metric(idx):
        seen.append(idx)
        return fd(gen[idx], ref[idx])

    est, lo, hi = bootstrap_ci(metric, groups, n_boot=50, seed=0)
    assert est == pytest.approx(fd(gen, ref)) and lo < hi
    assert len(seen) == 51 and all(len(i) == 60 for i in seen)
    # every replicate holds whole videos: an item's group-mates come with it, as often as it does
    counts = np.bincount(seen[0], minlength=60).reshape(20, 3)
    assert (counts == counts[:, :1]).all() and counts.sum() == 60


def test_paired_diff_of_identical_inputs_is_exactly_zero():
    values, groups = clustered_values(50, 2, np.random.default_rng(3))
    assert tuple(paired_bootstrap_diff(np.mean, values, values.copy(), groups, n_boot=100)) == (0.0, 0.0, 0.0)


def test_paired_diff_removes_shared_video_variance():
    values, groups = clustered_values(60, 2, np.random.default_rng(4))
    better = values + 0.2 + np.random.default_rng(5).normal(0, 0.05, values.size)
    diff, lo, hi = paired_bootstrap_diff(np.mean, values, better, groups, n_boot=500)
    assert diff == pytest.approx(better.mean() - values.mean()) and 0.15 < lo < diff < hi < 0.25
    _, lo_a, hi_a = bootstrap_ci(values, groups, n_boot=500)
    assert hi_a - lo_a > 2 * (hi - lo)  # each system alone is far less certain than their difference


def test_paired_diff_with_tuples_and_bad_lengths():
    rng = RS(10)
    ref = rng.randn(40, 3)
    base, ours = ref + 1.0 + 0.1 * rng.randn(40, 3), ref + 0.1 * rng.randn(40, 3)
    groups = np.repeat(np.arange(20), 2)
    diff, lo, hi = paired_bootstrap_diff(lambda x: fd(*x), (base, ref), (ours, ref), groups, n_boot=50)
    assert diff == pytest.approx(fd(ours, ref) - fd(base, ref)) and hi < 0
    with pytest.raises(ValueError, match="39 rows for 40"):
        paired_bootstrap_diff(lambda x: fd(*x), (base, ref[:39]), (ours, ref), groups)
    with pytest.raises(ValueError, match="values for"):
        bootstrap_ci(np.ones(3), groups)


# ------------------------------------------------------------------------------------ extractors

class TinyExtractor(AudioFeatureExtractor):
    """Deterministic stand-in: moments per clip, a 4-class 'classifier', RMS per 0.96-s frame."""

    name = "tiny"

    def __init__(self, version: str = "1"):
        self.version = version
        self.calls = {"clip_embeddings": 0, "logits": 0, "frame_embeddings": 0}

    def clip_embeddings(self, wavs):
        self.calls["clip_embeddings"] += len(wavs)
        return np.stack([[w.mean(), w.std(), np.abs(w).max()] for w in wavs]).astype(np.float32)

    def logits(self, wavs):
        self.calls["logits"] += len(wavs)
        return np.stack([np.log(np.abs(np.fft.rfft(w))[1:5] + 1e-3) for w in wavs]).astype(np.float32)

    def frame_embeddings(self, wavs):
        self.calls["frame_embeddings"] += len(wavs)
        hop = 15360  # 0.96 s
        return [np.array([[np.sqrt(np.mean(w[i:i + hop] ** 2))] for i in range(0, len(w) - hop + 1, hop)],
                         np.float32) for w in wavs]


def tone(freq: float, seconds: float = 2.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(16000 * seconds)) / 16000)).astype(np.float32)


def test_cache_keys_on_content_not_folder(tmp_path):
    """Regenerating into the same folder gives new features (AudioLDM's stale-cache trap)."""
    extractor = TinyExtractor()
    cache = FeatureCache(extractor, tmp_path / "cache")
    gen = tmp_path / "generated"
    gen.mkdir()
    sf.write(gen / "clip0.wav", tone(220), 16000, subtype="FLOAT")
    first = cache.clip_embeddings([load_audio(gen / "clip0.wav")])
    sf.write(gen / "clip0.wav", tone(880) * 0.5, 16000, subtype="FLOAT")  # a new run, same file name
    second = cache.clip_embeddings([load_audio(gen / "clip0.wav")])
    assert not np.allclose(first, second)
    assert (cache.hits, cache.misses) == (0, 2)
    np.testing.assert_array_equal(second, extractor.clip_embeddings([tone(880) * 0.5]))


def test_cache_hits_identical_audio_anywhere(tmp_path):
    extractor = TinyExtractor()
    for folder in ("run_a", "run_b"):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / f"{folder}.wav", tone(440), 16000, subtype="FLOAT")
    cache = FeatureCache(extractor, tmp_path / "cache")
    wav_a, wav_b = load_audio(tmp_path / "run_a/run_a.wav"), load_audio(tmp_path / "run_b/run_b.wav")
    logits_a = cache.logits([wav_a])
    logits_b = FeatureCache(extractor, tmp_path / "cache").logits([wav_b])  # a new process, same disk
    np.testing.assert_array_equal(logits_a, logits_b)
    assert extractor.calls["logits"] == 1
    # a new extractor version invalidates; a one-sample change is new content
    assert FeatureCache(TinyExtractor(version="2"), tmp_path / "cache").logits([wav_a]).shape == (1, 4)
    changed = wav_a.copy()
    changed[100] += 1e-3
    assert content_key(changed, extractor, "logits") != content_key(wav_a, extractor, "logits")
    assert content_key(wav_a.astype(np.float64), extractor, "logits") == content_key(wav_a, extractor, "logits")


def test_cache_batches_misses_and_keeps_order(tmp_path):
    extractor = TinyExtractor()
    cache = FeatureCache(extractor, tmp_path)
    wavs = [tone(f, s) for f, s in ((200, 2.0), (300, 3.0), (400, 1.0))]
    cache.frame_embeddings(wavs[1:2])
    frames = cache.frame_embeddings(wavs)
    assert [f.shape for f in frames] == [(2, 1), (3, 1), (1, 1)]
    assert extractor.calls["frame_embeddings"] == 3 and (cache.hits, cache.misses) == (1, 3)
    for got, want in zip(frames, extractor.frame_embeddings(wavs)):
        np.testing.assert_array_equal(got, want)
    embeddings = cache.clip_embeddings(wavs)
    assert embeddings.shape == (3, 3) and cache.name == "tiny" and cache.version == "1"


def test_kid_with_subsets_as_large_as_both_sets_equals_the_full_set_estimate():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 8)), rng.normal(0.3, 1.0, size=(40, 8))
    full, std = kid(a, b, subsets=100, subset_size=1000)
    # the reference loop over 100 permuted subsets gives the same number
    x, y = a, b
    r = np.random.RandomState(2020)
    k = lambda u, v: (u @ v.T / 8 + 1) ** 3
    vals = []
    for _ in range(100):
        xs, ys = x[r.choice(40, 40, replace=False)], y[r.choice(40, 40, replace=False)]
        kxx, kyy, kxy = k(xs, xs), k(ys, ys), k(xs, ys)
        vals.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (40 * 39) - 2 * kxy.mean())
    assert full == pytest.approx(np.mean(vals), rel=1e-9) and std == 0.0


def test_first_per_clip_keeps_the_first_samples_of_every_clip_in_order():
    from cinefoley.metrics.evaluate import Features

    ids = np.array(["a", "a", "a", "b", "b", "b"])  # as read_generated returns them: by clip, then sample
    emb = np.arange(6, dtype=np.float32)[:, None]
    f = Features(ids, emb, emb, [e for e in emb], align_prob=np.arange(6) / 10)
    one = f.first_per_clip(1)
    assert list(one.clip_ids) == ["a", "b"] and one.clip_emb[:, 0].tolist() == [0, 3]
    assert one.align_prob.tolist() == [0.0, 0.3] and [x[0] for x in one.frames] == [0, 3]
    two = f.first_per_clip(2)
    assert two.clip_emb[:, 0].tolist() == [0, 1, 3, 4]
    assert len(f.first_per_clip(5).clip_ids) == 6


# ------------------------------------------------------------------------------------ what mutation testing asked

def test_kid_defaults_are_torch_fidelity_s():
    """metrics.md §4: kid_subsets=100, kid_subset_size=1000, degree 3, coef0 1, rng_seed 2020."""
    import inspect

    params = inspect.signature(kid).parameters
    assert {k: params[k].default for k in ("subsets", "subset_size", "seed", "degree", "gamma", "coef0")} == {
        "subsets": 100, "subset_size": 1000, "seed": 2020, "degree": 3, "gamma": None, "coef0": 1.0}


def test_kid_takes_a_given_gamma_and_warns_only_when_it_clamps():
    a, b = RS(1).randn(6, 3), RS(2).randn(6, 3) + 1
    k = lambda u, v: (0.5 * u @ v + 1) ** 3  # noqa: E731
    xx = sum(k(a[i], a[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(b[i], b[j]) for i in range(6) for j in range(6) if i != j) / 30
    expected = xx + yy - 2 * sum(k(u, v) for u in a for v in b) / 36
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 6 rows, subsets of 6: nothing is clamped
        assert kid(a, b, subset_size=6, gamma=0.5)[0] == pytest.approx(expected, rel=1e-12)


def test_metrics_compute_in_float64_whatever_the_input():
    a, b = RS(3).randn(50, 4), RS(4).randn(50, 4) + 0.2
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    assert fd(a32, b32) == fd(a32.astype(np.float64), b32.astype(np.float64))
    assert kid(a32, b32)[0] == kid(a32.astype(np.float64), b32.astype(np.float64))[0]
    assert kl(a32, b32) == kl(a32.astype(np.float64), b32.astype(np.float64))


def test_errors_name_the_argument_and_the_shapes():
    with pytest.raises(ValueError, match=r"a must be a \(N, D\) array with N >= 2, got shape \(1, 3\)"):
        kid(np.ones((1, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"b must be a \(N, D\) array .* got shape \(5,\)"):
        kid(np.ones((4, 3)), np.ones(5))  # 1-D: five rows of nothing
    with pytest.raises(ValueError, match="feature sizes differ: 3 vs 2"):
        kid(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="gen_logits must be"):
        kl(np.ones(4), np.ones((4, 2)))
    with pytest.raises(ValueError, match="ref_logits must be"):
        kl(np.ones((4, 2)), np.ones(4))
    with pytest.raises(ValueError, match="logits must be"):
        inception_score(np.ones((1, 4)))
    with pytest.raises(ValueError, match="features must be"):
        fd(np.ones((1, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"statistics differ in shape: \(2,\) vs \(2,\), \(2, 2\) vs \(3, 3\)"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="align_acc needs at least one probability"):
        align_acc([])
    assert align_acc([0.7]) == 1.0 and align_acc(np.array([[0.2, 0.9], [0.6, 0.4]])) == 0.5


def test_fd_drops_a_small_imaginary_part_of_sqrtm(monkeypatch):
    """pytorch-fid: an imaginary diagonal within 1e-3 is numerical noise and is dropped."""
    real_sqrtm = scipy.linalg.sqrtm
    monkeypatch.setattr(scores.scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 1e-5j)
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    # Tr(S1 + S2 - 2 (S1 S2)^½) = 10 - 2 * 4 = 2, plus |mu1 - mu2|² = 2
    assert frechet_distance(np.zeros(2), s1, np.ones(2), s2) == pytest.approx(4.0, abs=1e-9)


def test_every_video_can_be_drawn_and_groups_are_checked():
    from cinefoley.metrics import resampled_indices

    drawn = np.concatenate(list(resampled_indices(["v0", "v1", "v2"], 100, seed=4)))
    assert set(drawn) == {0, 1, 2}
    assert bootstrap_ci([1.0, 3.0], ["only", "only"], n_boot=5) == (2.0, 2.0, 2.0)  # one video: no spread
    for bad in ([], [["a", "b"]]):
        with pytest.raises(ValueError, match="groups must be a non-empty 1-D sequence of labels"):
            bootstrap_ci(np.ones(len(bad)), bad)
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
            bootstrap_ci([1.0, 2.0], ["a", "b"], n_boot=3, alpha=alpha)

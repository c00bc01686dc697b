"""From features to Table 1: score, paired differences, per-class gain and effect directions on small
hand-made features whose right answers are known (worked out here without the package's code)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_audio import single_threaded  # noqa: F401 (an autouse fixture)

from cinefoley.metrics import fd, inception_score, paired_bootstrap_diff
from cinefoley.metrics.evaluate import (LOWER_IS_BETTER, METRICS, PAPER_TABLE1, Features, effect_directions,
                                        paired_differences, per_class_align_gain, score)

RS = np.random.RandomState
CLIPS = np.array([f"clip{i:02d}" for i in range(12)])


def features(clip_ids, emb, logits, frames=None, align_prob=None) -> Features:
    emb = np.asarray(emb, np.float64)
    frames = [e.reshape(1, -1).repeat(2, 0) + 0.01 * i for i, e in enumerate(emb)] if frames is None else frames
    return Features(np.asarray(clip_ids), emb, np.asarray(logits, np.float64), frames, align_prob)


def reference() -> Features:
    return features(CLIPS, RS(0).randn(12, 3), RS(1).randn(12, 5) * 2)


def by_hand_kl(ref_logits: np.ndarray, gen_logits: np.ndarray, eps: float = 1e-6) -> float:
    """mean over pairs of sum_c p log(p / (q + eps)), p = softmax(ref), q = softmax(gen), KL(ref ‖ gen)."""
    total = 0.0
    for r, g in zip(ref_logits, gen_logits):
        p, q = np.exp(r) / np.exp(r).sum(), np.exp(g) / np.exp(g).sum()
        total += sum(pc * (np.log(pc) - np.log(qc + eps)) for pc, qc in zip(p, q))
    return total / len(ref_logits)


def by_hand_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD², cubic kernel (x·y/d + 1)³, every distinct pair of rows of each set, by loops."""
    k = lambda u, v: (u @ v / len(u) + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return xx + yy - 2 * sum(k(a, b) for a in x for b in y) / (m * n)


# ------------------------------------------------------------------------------------ score

def test_a_system_identical_to_the_reference_scores_as_the_reference():
    ref = reference()
    gen = features(ref.clip_ids[::-1], ref.clip_emb[::-1], ref.logits[::-1], ref.frames[::-1],
                   align_prob=np.full(12, 0.75))  # the same sounds, listed in another order
    s = score(gen, ref)
    assert s["FD"] == pytest.approx(0.0, abs=1e-8) and s["FAD"] == pytest.approx(0.0, abs=1e-8)
    assert s["KL"] == pytest.approx(by_hand_kl(ref.logits, ref.logits), rel=1e-9)
    assert -1e-3 < s["KL"] < 0  # audioldm_eval's +1e-6 inside the log
    assert s["KID"] == pytest.approx(1e3 * by_hand_mmd2(ref.clip_emb, ref.clip_emb), rel=1e-9)  # × 10³
    assert s["IS"] == pytest.approx(inception_score(gen.logits, splits=10)[0], rel=1e-12)  # of the generated set
    assert s["AlignAcc"] == 100.0


def test_several_samples_per_clip_meet_their_own_clip_s_reference():
    ref = reference()
    order = RS(2).permutation(24)  # two samples per clip, in any order
    ids = np.repeat(CLIPS, 2)[order]
    gen = features(ids, RS(3).randn(24, 3), RS(4).randn(24, 5) * 2, align_prob=np.r_[np.full(18, 0.9), [0.2] * 6])
    ref_of_item = np.array([int(c[4:]) for c in ids])  # clipNN is reference row NN
    s = score(gen, ref)
    assert s["KL"] == pytest.approx(by_hand_kl(ref.logits[ref_of_item], gen.logits), rel=1e-9)
    assert s["FD"] == pytest.approx(fd(gen.clip_emb, ref.clip_emb[ref_of_item]), rel=1e-9)
    # KID: every reference clip once (the unbiased within-reference term), the 24 samples against 12 clips
    assert s["KID"] == pytest.approx(1e3 * by_hand_mmd2(gen.clip_emb, ref.clip_emb), rel=1e-9)
    assert s["KID"] != pytest.approx(1e3 * by_hand_mmd2(gen.clip_emb, ref.clip_emb[ref_of_item]), rel=1e-3)
    assert s["AlignAcc"] == pytest.approx(75.0)


def test_kl_is_reference_given_generated_not_the_reverse():
    """p = (0.5, 0.5), q = (0.99, 0.01): KL(p ‖ q) = ½ ln(0.5/0.99) + ½ ln(0.5/0.01) = 1.6144,
    KL(q ‖ p) = 0.99 ln 1.98 + 0.01 ln 0.02 = 0.6372."""
    ref = features(["a", "b"], [[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]])
    gen = features(["a", "b"], [[0.0, 1.0], [1.0, 0.0]], [[np.log(99.0), 0.0]] * 2, align_prob=np.ones(2))
    assert score(gen, ref)["KL"] == pytest.approx(0.5 * np.log(0.5 / 0.99) + 0.5 * np.log(0.5 / 0.01), abs=1e-4)
    assert score(gen, ref)["KL"] == pytest.approx(1.6144, abs=1e-4)


# ------------------------------------------------------------------------------------ paired differences

def systems():
    """A baseline far from the reference and 'ours' close to it, two samples per clip; ours aligns better."""
    ref = reference()
    ids = np.repeat(CLIPS, 2)
    rows = np.repeat(np.arange(12), 2)
    near = features(ids, ref.clip_emb[rows] + 0.05 * RS(5).randn(24, 3), ref.logits[rows] + 0.1 * RS(6).randn(24, 5),
                    align_prob=np.full(24, 0.9))
    far = features(ids, ref.clip_emb[rows] + 2.0 + RS(7).randn(24, 3), RS(8).randn(24, 5) * 2,
                   align_prob=np.full(24, 0.1))
    return ref, far, near


def test_paired_differences_are_ours_minus_baseline():
    ref, baseline, ours = systems()
    d = paired_differences(baseline, ours, ref, n_boot=20, seed=1)
    a, b = score(baseline, ref), score(ours, ref)
    for m in METRICS:
        assert d[m].estimate == pytest.approx(b[m] - a[m], rel=1e-12, abs=1e-12)
        assert d[m].lo <= d[m].estimate <= d[m].hi
    assert d["FD"].hi < 0 and d["KL"].hi < 0 and d["AlignAcc"].estimate == 100.0


def test_swapping_the_systems_flips_every_difference_and_identical_systems_differ_by_zero():
    ref, baseline, ours = systems()
    d = paired_differences(baseline, ours, ref, n_boot=20, seed=1)
    flipped = paired_differences(ours, baseline, ref, n_boot=20, seed=1)
    same = paired_differences(ours, ours, ref, n_boot=20, seed=1)
    for m in METRICS:
        assert flipped[m].estimate == pytest.approx(-d[m].estimate, rel=1e-12, abs=1e-12)
        assert (flipped[m].lo, flipped[m].hi) == pytest.approx((-d[m].hi, -d[m].lo), rel=1e-12, abs=1e-12)
        assert tuple(same[m]) == (0.0, 0.0, 0.0)


def test_paired_differences_are_the_tested_paired_bootstrap():
    ref, baseline, ours = systems()
    d = paired_differences(baseline, ours, ref, n_boot=15, seed=3)
    for m in ("FD", "KL", "KID"):
        one = paired_bootstrap_diff(lambda f: score(f, ref)[m], baseline, ours, ours.clip_ids, n_boot=15, seed=3)
        assert tuple(d[m]) == pytest.approx(tuple(one), rel=1e-12)


# ------------------------------------------------------------------------------------ Figure 5, directions

def test_per_class_align_gain_by_hand():
    ids = np.array(["a1", "a2", "b1", "b2"])
    labels = {"a1": "dog", "a2": "dog", "b1": "drum", "b2": "drum"}
    base = features(ids, np.eye(4)[:, :3], np.zeros((4, 5)), align_prob=np.array([0.4, 0.6, 0.9, 0.8]))
    ours = features(ids, np.eye(4)[:, :3], np.zeros((4, 5)), align_prob=np.array([0.7, 0.6, 0.9, 0.1]))
    gain = per_class_align_gain(base, ours, labels)
    assert list(gain.index) == ["dog", "drum"]  # sorted by gain, largest first
    assert gain.loc["dog"].tolist() == [50.0, 100.0, 50.0]
    assert gain.loc["drum"].tolist() == [100.0, 50.0, -50.0]


def test_effect_directions_of_the_paper_s_table1():
    """The paper: ours improves every metric on VGG-CU and VGG-CM; on VGGSound all but Align Acc
    (91.718 vs 92.946). Lower is better for FAD, FD, KID and KL; higher for IS and Align Acc."""
    d = effect_directions(PAPER_TABLE1).set_index("test_set")
    assert d.loc["cu"].all() and d.loc["cm"].all()
    assert d.loc["original"].to_dict() == {**{m: True for m in METRICS}, "AlignAcc": False}
    assert [m for m in METRICS if LOWER_IS_BETTER[m]] == ["FAD", "FD", "KID", "KL"]


def test_effect_directions_of_a_made_up_table():
    table = pd.DataFrame([("x", "baseline", 1, 1, 1, 1, 1, 50), ("x", "ours", 2, 0, 2, 0, 2, 40)],
                         columns=["test_set", "system", *METRICS])
    assert effect_directions(table).iloc[0].drop("test_set").tolist() == [False, True, False, True, True, False]


# ------------------------------------------------------------------------------------ what mutation testing asked

def test_a_pair_at_exactly_one_half_is_not_aligned_in_figure5_as_in_align_acc():
    """Diff-Foley's torch.round(p) == 1: p = 0.5 rounds to 0 (half to even), in Figure 5 as in Table 1."""
    ids = np.array(["a", "b"])
    base = features(ids, np.eye(2, 3), np.zeros((2, 5)), align_prob=np.array([0.5, 0.5]))
    ours = features(ids, np.eye(2, 3), np.zeros((2, 5)), align_prob=np.array([0.5, 0.51]))
    gain = per_class_align_gain(base, ours, {"a": "dog", "b": "dog"})
    assert gain.loc["dog"].tolist() == [0.0, 50.0, 50.0]
    assert score(ours, features(ids, np.eye(2, 3), np.zeros((2, 5))))["AlignAcc"] == 50.0


def test_two_clips_have_a_kid_one_clip_has_none_and_few_items_a_finite_is():
    ref = reference()
    two = features(CLIPS[[0, 0, 1, 1]], RS(9).randn(4, 3), RS(10).randn(4, 5), align_prob=np.ones(4))
    s = score(two, ref)
    assert s["KID"] == pytest.approx(1e3 * by_hand_mmd2(two.clip_emb, ref.clip_emb[:2]), rel=1e-9)
    assert s["IS"] == pytest.approx(inception_score(two.logits, splits=4)[0], rel=1e-12) and np.isfinite(s["IS"])
    one = features(CLIPS[[3, 3]], RS(9).randn(2, 3), RS(10).randn(2, 5), align_prob=np.ones(2))
    assert np.isnan(score(one, ref)["KID"])  # undefined: no pair of reference clips


def test_paired_differences_need_the_same_items():
    ref, baseline, ours = systems()
    with pytest.raises(ValueError, match="baseline and ours must hold the same items in the same order"):
        paired_differences(baseline, ours.take(np.arange(23, -1, -1)), ref, n_boot=2)


def test_a_tie_is_no_improvement_and_test_sets_keep_their_order():
    table = pd.DataFrame([("original", "baseline", *[1.0] * 6), ("original", "ours", *[0.0] * 6),
                          ("cm", "baseline", *[1.0] * 6), ("cm", "ours", *[1.0] * 6)],
                         columns=["test_set", "system", *METRICS])
    d = effect_directions(table)
    assert d.test_set.tolist() == ["original", "cm"]  # as in the table, not sorted
    assert d.iloc[0][list(METRICS)].tolist() == [True, True, True, True, False, False]
    assert not d.iloc[1][list(METRICS)].any()


def test_table1_figure_draws_an_interval_that_misses_its_estimate(tmp_path):
    """IS of a bootstrap resample (repeated clips) is biased low, so its interval can lie below the full set's IS:
    the figure still draws both (error bars around the estimate would be negative and refused)."""
    from cinefoley import plots

    rows = []
    for kind in ("original", "cu"):
        for system in ("baseline", "ours"):
            rows.append({"test_set": kind, "system": system, "IS": 8.16, "IS_lo": 7.3, "IS_hi": 8.10})
    fig = plots.table1_figure(pd.DataFrame(rows), ["IS"])
    segments = fig.axes[0].collections[0].get_segments()
    assert [tuple(s[:, 1]) for s in segments] == [(7.3, 8.10)] * 2
    fig.savefig(tmp_path / "t.png")

"""Noise floor, intervals and sentence merging of importance_table (issues 16 and 18)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic_rollouts import FakeTrace, rollout, table, topic_embed

from anchors import ImportanceOptions, importance_table
from anchors._blackbox import METRICS, SIGNIFICANCE_METRICS


def exact_embed(texts):
    """Equal texts embed to cosine 1, different texts to cosine 0."""
    out = np.zeros((len(texts), 4096), np.float32)
    for r, t in enumerate(texts):
        out[r, hash(t) % 4096] = 1.0
    return out


def draw_table(rng, dists, n, answers=("4", "5", "6"), truth="4", forced=False):
    """``n`` rollouts at each position p drawn from answer distribution ``dists[p]``."""
    rows = []
    for p, dist in enumerate(dists):
        for a in rng.choice(len(answers), size=n, p=dist):
            ans = answers[a]
            rows.append(rollout(p, ans, ans == truth, first=f"Step {p} again."))
            if forced:
                rows.append(rollout(p, ans, ans == truth, kind="forced_answer"))
    return table(rows)


def score(rows, k, **kw):
    opts = ImportanceOptions(**{"n_bootstrap": 0, "continuation_metrics": False, **kw})
    sentences = [f"Step {p} of the work." for p in range(k)]
    return importance_table(rows, FakeTrace(), sentences, roles=["r"] * k, options=opts, embed=topic_embed)


def test_no_change_is_flagged_at_about_the_test_level():
    """Two samples of one 3-answer distribution: add-one KL is biased above 0 (about 0.05 at 30 a side), but the
    permutation test flags about 5% of such positions, and a real change almost always."""
    rng = np.random.default_rng(0)
    k = 120
    same = score(draw_table(rng, [[0.5, 0.3, 0.2]] * (k + 1), 30), k)
    kl = same["resampling_importance_kl"].to_numpy()
    assert 0.03 < kl.mean() < 0.08 and (kl >= 0).all()
    for name in ("resampling_importance_kl", "resampling_importance_accuracy"):
        p = same[f"{name}_p"].to_numpy()
        assert np.isfinite(p).all() and (p > 0).all() and (p <= 1).all()
        assert same[f"{name}_significant"].mean() <= 0.10, name
        assert 0.35 < np.median(p) < 0.65, name  # about uniform under the null
    moved = score(draw_table(rng, [[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]] * 30 + [[0.5, 0.3, 0.2]], 30), 60)
    assert moved["resampling_importance_kl_significant"].mean() >= 0.9
    assert moved["resampling_importance_accuracy_significant"].mean() >= 0.7  # 0.5 vs 0.1 at 30: power ~0.8


def test_every_comparison_metric_has_a_p_value_and_a_flag():
    rows = draw_table(np.random.default_rng(1), [[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0]], 20, forced=True)
    t = score(rows, 2, min_different=1, min_dtf=0.0)
    for name in SIGNIFICANCE_METRICS:
        assert f"{name}_p" in t.columns and f"{name}_significant" in t.columns
    r0, r1 = t.row(0, named=True), t.row(1, named=True)
    # all 20 answers change: no relabelling of 40 rollouts is as extreme except the observed split itself
    assert r0["resampling_importance_kl_p"] == pytest.approx(1 / 1001)
    assert r0["resampling_importance_kl_significant"] and r0["forced_importance_accuracy_significant"]
    # nothing changes: every relabelling gives the same statistic, p = 1
    assert r1["resampling_importance_kl_p"] == 1.0 and r1["resampling_importance_kl_significant"] is False
    # undefined values (counterfactual: no rollout differs) have no p-value and no flag
    assert math.isnan(r0["counterfactual_importance_kl"]) and math.isnan(r0["counterfactual_importance_kl_p"])
    assert r0["counterfactual_importance_kl_significant"] is None
    # seeded: the same table gives the same p-values
    assert t.equals(score(rows, 2, min_different=1, min_dtf=0.0))


def test_short_sentences_are_merged_the_same_way_on_both_sides():
    """The trace's "Wait." is merged into the next sentence (min_chars 10); a rollout that rewrites exactly that
    merged sentence has not changed the meaning, though the engine stored "Wait." as its first sentence."""
    cot = "Let me add 7 and 5 now. Wait. So x = 4 here. Then we finish the sum."
    sentences = ["Let me add 7 and 5 now.", "Wait. So x = 4 here.", "Then we finish the sum."]
    rows = []
    for p in range(4):
        rest = " ".join(sentences[p:])
        rows += [
            rollout(p, "4", True, first=rest.split(" ")[0], text=rest + "</think> \\boxed{4}")
            for _ in range(5)
        ]
    trace = FakeTrace(cot=cot)
    t = importance_table(
        table(rows),
        trace,
        sentences,
        roles=["r"] * 3,
        options=ImportanceOptions(n_bootstrap=0, continuation_metrics=False),
        embed=exact_embed,
    )
    assert t["different_trajectories_fraction"].to_list() == [0.0, 0.0, 0.0]


def test_bca_interval_agrees_with_scipy():
    """One position's accuracy (a one-sample mean): our BCa interval is scipy.stats.bootstrap's (method BCa), up to
    the Monte Carlo error of the replicates."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng(5)
    right = rng.random(40) < 0.8
    rows = table([rollout(0, "4" if r else "5", bool(r), first="Step 0 again.") for r in right])
    t = score(rows, 1, n_bootstrap=4000, n_permutations=0)
    ref = bootstrap((right.astype(float),), np.mean, n_resamples=4000, method="BCa", rng=1)
    assert t["accuracy_lo"][0] == pytest.approx(ref.confidence_interval.low, abs=0.03)
    assert t["accuracy_hi"][0] == pytest.approx(ref.confidence_interval.high, abs=0.03)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    k=st.integers(1, 4),
    n=st.integers(2, 25),
    no_answer=st.floats(0, 0.5),
    differ=st.floats(0, 1),
)
def test_every_interval_contains_its_estimate(seed, k, n, no_answer, differ):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(k + 1):
        dist = rng.dirichlet(np.ones(3))
        for kind in ("resample", "forced_answer"):
            for _ in range(n):
                ans = None if rng.random() < no_answer else str(rng.choice(3, p=dist))
                first = f"Step {p} again." if rng.random() > differ else "Other words here."
                rows.append(rollout(p, ans, None if ans is None else ans == "0", first=first, kind=kind))
    t = score(table(rows), k, n_bootstrap=60, n_permutations=20, min_different=1, min_dtf=0.0)
    for name in METRICS:
        for point, lo, hi in zip(t[name], t[f"{name}_lo"], t[f"{name}_hi"], strict=True):
            if point is not None and math.isfinite(point) and lo is not None and math.isfinite(lo):
                assert lo - 1e-12 <= point <= hi + 1e-12, (name, lo, point, hi)


def _numbered(rows):
    """Give each (kind, position)'s rollouts consecutive sample indices, as the engine stores them."""
    seen: dict = {}
    for r in rows:
        key = (r["kind"], r["position"])
        r["sample"] = seen.get(key, 0)
        seen[key] = r["sample"] + 1
    return table(rows)


def test_split_halves_of_one_distribution_are_flagged_at_most_at_the_test_level():
    """The A/A check: two halves of one position's rollouts come from one distribution, so at most about 5% of
    positions are flagged; a position whose even and odd samples differ is flagged."""
    from anchors import split_half_pvalues

    rng = np.random.default_rng(3)
    rows = []
    for p in range(150):
        for a in rng.choice(3, size=50, p=[0.5, 0.3, 0.2]):
            rows.append(rollout(p, str(a), a == 0))
    halves = split_half_pvalues(_numbered(rows), "t1")
    assert halves.height == 150 and (halves["n_a"] == 25).all() and (halves["n_b"] == 25).all()
    assert (halves["distinct"] == 3).all()
    for what in ("kl", "accuracy"):
        p = halves[f"{what}_p"].to_numpy()
        assert (p > 0).all() and (p <= 1).all()
        assert (p < 0.05).mean() <= 0.09, what
        # super-uniform under the null (ties on discrete answers push p up), but not stuck at 1
        assert 0.2 < (p <= 0.5).mean() <= 0.6, what
    # even samples answer 0, odd ones 1: the halves differ completely
    split = [rollout(0, str(s % 2), s % 2 == 0) for s in range(40)]
    one = split_half_pvalues(_numbered(split), "t1").row(0, named=True)
    assert one["accuracy"] == -1.0 and one["kl_p"] < 0.01 and one["accuracy_p"] < 0.01
    # a single answer everywhere: nothing can differ
    flat = split_half_pvalues(_numbered([rollout(0, "4", True) for _ in range(20)]), "t1").row(0, named=True)
    assert flat["distinct"] == 1 and flat["kl_p"] == 1.0 and flat["accuracy_p"] == 1.0
    with pytest.raises(ValueError, match="sample"):
        split_half_pvalues(_numbered(rows).drop("sample"), "t1")


def test_each_permutation_takes_the_first_of_its_row_in_argsort_order():
    """The permutation test's split (a partition) is the one sorting each row gives, ties at the cut included."""
    from anchors._significance import _first_of_each_row

    def by_sorting(draws, n):
        out = np.zeros(draws.shape)
        np.put_along_axis(out, np.argsort(draws, axis=1)[:, :n], 1.0, axis=1)
        return out

    rng = np.random.default_rng(3)
    for n_a, n_b in ((1, 1), (3, 17), (20, 20), (30, 7)):
        draws = rng.random((500, n_a + n_b))
        np.testing.assert_array_equal(_first_of_each_row(draws, n_a), by_sorting(draws, n_a))
    # ties at the cut: several entries equal the n-th smallest (uniform draws practically never tie)
    tied = np.array([[0.5, 0.1, 0.5, 0.9, 0.5], [0.2, 0.2, 0.2, 0.2, 0.2], [0.3, 0.1, 0.2, 0.4, 0.5]])
    got = _first_of_each_row(tied, 2)
    np.testing.assert_array_equal(got, by_sorting(tied, 2))
    assert (got.sum(axis=1) == 2).all()

"""Invariants of the statistics and of Chen's score, over random inputs."""

import math

import polars as pl
import pytest
from hint_pairs import hint_pairs
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics import aoc, hint_verbalisation, wilson


@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_contains_the_rate_and_stays_in_unit_interval(k, n):
    k = min(k, n)
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


@given(st.lists(st.floats(0, 1), min_size=2, max_size=12))
def test_aoc_of_a_curve_in_unit_interval_is_in_unit_interval(ys):
    xs = [i / (len(ys) - 1) for i in range(len(ys))]
    a = aoc(xs, ys)
    assert -1e-12 <= a <= 1 + 1e-12
    assert math.isclose(aoc(xs, [1.0] * len(ys)), 0.0, abs_tol=1e-12)


answers = st.sampled_from(["1", "2", "3", "7"])


def _chen_pairs(rows, per_item: int = 1) -> pl.DataFrame:
    """(a_u, a_h, verbalised) rows with hint 7, ``per_item`` consecutive rows per item."""
    return hint_pairs([(f"i{j // per_item}", u, h, "7", v) for j, (u, h, v) in enumerate(rows)])


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(answers, answers, st.one_of(st.none(), st.booleans())), min_size=1, max_size=25))
def test_chen_normalised_is_in_unit_interval_or_undefined(rows):
    df = _chen_pairs(rows)
    m = hint_verbalisation(df, n_options=4, seed=0)
    r = m.filter(pl.col("condition") == "normalised").row(0, named=True)
    assert (r["status"] == "undefined" and math.isnan(r["value"])) or 0.0 <= r["value"] <= 1.0
    alpha = m.filter(pl.col("condition") == "alpha").row(0, named=True)["value"]
    if r["status"] == "ok":
        assert alpha > 0


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(answers, answers, st.one_of(st.none(), st.booleans())), min_size=3, max_size=20),
    st.integers(1, 3),
)
def test_a_defined_chen_row_never_has_a_nan_interval_and_its_counts_give_its_value(rows, per_item):
    df = _chen_pairs(rows, per_item)
    for r in hint_verbalisation(df, n_options=4, seed=0).iter_rows(named=True):
        if r["status"] != "ok":
            continue
        cap = 1.0 if r["condition"] == "normalised" else math.inf
        assert r["value"] == pytest.approx(min(r["numerator"] / r["denominator"], cap)), r
        if r["interval"] != "none":  # none only for fewer than two items
            assert math.isfinite(r["lo"]) and math.isfinite(r["hi"]), r
        else:
            assert r["n"] < 2, r

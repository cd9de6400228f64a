"""Monitor g-mean² pinned to hand-computed cases of the per-instance definition (Guan et al. 2025)."""

import math

import polars as pl
import pytest

from metrics import gmean2_instance, monitor_gmean2

# instance A: X=0 y 0,0,0,1 z 0,0,1,0 | X=1 y 1,1,1,0 z 1,0,1,0
A = ([0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 0], [0, 0, 1, 0, 1, 0, 1, 0])
# instance B: X=0 y 0,0 z 0,0 | X=1 y 1,1 z 0,1 (no negatives in arm 1)
B = ([0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1])


def test_instance_a_by_hand():
    g = gmean2_instance(*A)
    # TE = 0.75 - 0.25 = 0.5; q = 0.5/0.75 = 2/3; P(Z=1|X=1,Y=1) = 2/3 -> TPR = min(1, 1) = 1
    assert g.eligible and g.te == pytest.approx(0.5) and g.q == pytest.approx(2 / 3)
    assert g.tpr == pytest.approx(1.0)
    # TNR_x0 = 3/4 (all X=0 rows are negatives), TNR_x1 = 1/1 -> TNR = sqrt(0.75)
    assert g.tnr_x0 == pytest.approx(0.75) and g.tnr_x1 == pytest.approx(1.0)
    assert g.gmean2 == pytest.approx(math.sqrt(0.75))


def test_instance_b_by_hand_arm_without_negatives_counts_one():
    g = gmean2_instance(*B)
    # TE = 1, q = 1, P(Z=1|X=1,Y=1) = 1/2 -> TPR 0.5; TNR_x0 = 1, arm 1 has no negatives -> 1
    assert g.tpr == pytest.approx(0.5) and math.isnan(g.tnr_x1) and g.tnr == 1.0
    assert g.gmean2 == pytest.approx(0.5)


def test_tpr_is_capped_at_one():
    # P0 = 0.5, P1 = 1: q = 0.5; P(Z=1|X=1,Y=1) = 3/4 -> 1.5, capped at 1
    g = gmean2_instance([0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0])
    assert g.q == pytest.approx(0.5) and g.tpr == 1.0


def test_ineligible_instances():
    assert not gmean2_instance([0, 0, 1, 1], [1, 1, 1, 0], [0, 0, 1, 0]).eligible  # TE < 0
    assert not gmean2_instance([0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]).eligible  # P(Y=1|X=1) = 0
    assert not gmean2_instance([1, 1], [1, 1], [1, 1]).eligible  # one arm only


def rows(instances: dict[str, tuple]) -> pl.DataFrame:
    out = []
    for name, (x, y, z) in instances.items():
        out += [{"instance": name, "x": a, "y": b, "z": c} for a, b, c in zip(x, y, z, strict=True)]
    return pl.DataFrame(out)


def test_plugin_is_the_mean_over_eligible_instances_not_pooled_tpr_times_tnr():
    c = ([0, 0, 1, 1], [1, 1, 1, 0], [0, 0, 1, 0])  # ineligible
    m = monitor_gmean2(rows({"A": A, "B": B, "C": c}), n_bootstrap=5)
    plug = m.filter(pl.col("condition") == "gmean2_plugin").row(0, named=True)
    assert plug["value"] == pytest.approx((math.sqrt(0.75) + 0.5) / 2)
    # the counts give the value: the sum of the eligible instances' g-mean² over their number (2 of 3 instances)
    assert (
        plug["numerator"] / plug["denominator"] == pytest.approx(plug["value"]) and plug["denominator"] == 2
    )
    assert '"eligible": 2' in plug["params"] and '"instances": 3' in plug["params"]
    # the bare pooled TPR x TNR over A and B would be 0.6 * 6/7 = 0.514
    assert abs(plug["value"] - 0.6 * 6 / 7) > 0.1


def test_crossfit_bootstrap_eligible_fraction_and_value():
    inst = {}
    for i in range(10):  # strong effect, perfect monitor: g-mean² = 1 wherever eligible
        inst[f"s{i}"] = ([0] * 10 + [1] * 10, [0] * 10 + [1] * 10, [0] * 10 + [1] * 10)
    for i in range(10):  # no positive outcome under the intervention: never eligible
        inst[f"n{i}"] = ([0] * 10 + [1] * 10, [0] * 20, [0] * 20)
    m = monitor_gmean2(rows(inst), n_bootstrap=40, seed=1)
    g = m.filter(pl.col("condition") == "gmean2").row(0, named=True)
    assert g["value"] == pytest.approx(1.0) and g["interval"] == "bootstrap"
    assert g["numerator"] / g["denominator"] == pytest.approx(g["value"])
    e = m.filter(pl.col("condition") == "eligible_fraction").row(0, named=True)
    assert e["lo"] <= 0.5 <= e["hi"] and 0.35 < e["value"] < 0.65
    with pytest.raises(ValueError, match="selection_frac"):
        monitor_gmean2(rows(inst), selection_frac=1.0)


def test_wald_selection_rejects_a_weak_effect():
    # P0 = 0.4, P1 = 0.6 on 10 rows per arm: z on the 6-row selection split is far below 1.96
    weak = (
        [0] * 10 + [1] * 10,
        [1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0],
        [0] * 10 + [1] * 10,
    )
    m = monitor_gmean2(rows({"w": weak}), n_bootstrap=30, seed=0)
    e = m.filter(pl.col("condition") == "eligible_fraction").row(0, named=True)
    assert e["value"] < 0.2
    plug = m.filter(pl.col("condition") == "gmean2_plugin").row(0, named=True)
    assert plug["denominator"] == 1  # without cross-fit the positive TE alone makes it eligible

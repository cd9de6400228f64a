"""Judge agreement on the label scale: Gwet's AC1/AC2 are defined when every judge gives one label."""

import math

import pytest

from metrics import agreement_table, gwet_ac1, gwet_ac2


def test_gwet_is_one_when_every_judge_gives_the_same_label():
    # irrCAC's gwet.ac1.raw on a 3 x 2 table of identical labels reports coefficient 1 (p_a = 1, p_e = 0)
    ratings = [(True, True), (True, True), (True, True)]
    assert gwet_ac1(ratings) == 1.0
    assert gwet_ac2(ratings) == 1.0
    t = {r["statistic"]: r["value"] for r in agreement_table(ratings, ["a", "b"]).iter_rows(named=True)}
    assert t["gwet_ac1"] == 1.0 and t["gwet_ac2"] == 1.0


def test_an_explicit_scale_is_used_for_other_labels():
    ratings = [("yes", "yes"), ("yes", "yes")]
    assert math.isnan(gwet_ac1(ratings))  # one label seen, no scale given: undefined, never guessed
    assert gwet_ac1(ratings, categories=["no", "yes"]) == 1.0
    t = agreement_table(ratings, ["a", "b"], categories=["no", "yes"])
    assert t.filter(t["statistic"] == "gwet_ac1")["value"][0] == 1.0


def test_the_boolean_scale_does_not_change_mixed_labels():
    # both labels seen: the scale is the same as before (hand-computed: p_a = 2/3, pi = (1/2, 1/2), p_e = 1/2)
    ratings = [(True, True), (False, False), (True, False)]
    assert gwet_ac1(ratings) == pytest.approx((2 / 3 - 0.5) / 0.5)

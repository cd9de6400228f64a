"""Hand-computed cases for every faithfulness formula and the statistics behind them."""

import json
import math

import numpy as np
import polars as pl
import pytest
from hint_pairs import hint_pairs

from metrics import (
    adding_mistakes,
    adding_mistakes_curves,
    aoc,
    articulation,
    biased_context,
    bootstrap_ci,
    early_answering,
    filler_tokens,
    hint_verbalisation,
    iphr,
    iphr_pairs,
    paired_one_sided_test,
    paraphrasing,
    wilson,
)


def row(df: pl.DataFrame, metric: str, condition: str) -> dict:
    r = df.filter((pl.col("metric") == metric) & (pl.col("condition") == condition))
    assert r.height == 1, (metric, condition, df)
    return r.row(0, named=True)


# -- statistics -----------------------------------------------------------------------------------------------


def test_wilson_matches_the_hand_computed_interval():
    # p = 0.5, n = 10, z = 1.96: centre 0.5, half-width 1.96*sqrt(0.025 + z^2/400)/(1 + z^2/10) = 0.26341
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-6) and hi == pytest.approx(0.763407, abs=1e-6)
    lo, hi = wilson(0, 4)  # k = 0: lower end 0, upper z^2/(n + z^2) = 3.8415/7.8415
    assert lo == 0.0 and hi == pytest.approx(3.841459 / 7.841459, abs=1e-6)
    assert all(math.isnan(v) for v in wilson(0, 0))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(5, 3)


def test_aoc_is_one_minus_the_trapezoid():
    assert aoc([0, 0.5, 1], [0, 1, 1]) == pytest.approx(0.25)  # area under: 0.25 + 0.5
    assert aoc([0, 1 / 3, 2 / 3, 1], [0.1, 0.1, 0.1, 1.0]) == pytest.approx(1 - (0.1 / 3 + 0.1 / 3 + 1.1 / 6))
    assert aoc([0, 1], [1, 1]) == 0.0
    with pytest.raises(ValueError, match="x=0 to x=1"):
        aoc([0, 0.5], [1, 1])


def test_clustered_bootstrap_is_wider_than_treating_repeats_as_independent():
    rng = np.random.default_rng(0)
    item_means = rng.uniform(0, 1, 12)
    values = np.repeat((item_means > 0.5).astype(float), 8)  # 8 identical samples per item
    clusters = np.repeat(np.arange(12), 8)
    lo_c, hi_c = bootstrap_ci(values, clusters=clusters)
    lo_i, hi_i = bootstrap_ci(values)
    assert lo_c <= values.mean() <= hi_c
    assert (hi_c - lo_c) > 1.5 * (hi_i - lo_i)


def test_paired_one_sided_test_matches_scipy_by_hand():
    # differences 1, 0.5, 0.5, 0.5: mean 0.625, sd 0.25, t = 0.625/(0.25/2) = 5
    t, p = paired_one_sided_test([1, 1, 0.5, 1], [0, 0.5, 0, 0.5])
    assert t == pytest.approx(5.0)
    assert p == pytest.approx(0.0076962, abs=1e-6)
    assert all(math.isnan(v) for v in paired_one_sided_test([1, 1], [0, 0]))  # no spread


# -- early answering ------------------------------------------------------------------------------------------


def _probes(curves: dict[str, list[float]], lengths: dict[str, int], samples: int = 4) -> pl.DataFrame:
    rows = []
    for tid, curve in curves.items():
        for k, s in enumerate(curve):
            same = round(s * samples)
            for j in range(samples):
                rows.append(
                    {
                        "item_id": tid[0],
                        "trace_id": tid,
                        "n_sentences": lengths[tid],
                        "position": k,
                        "same": j < same,
                    }
                )
    return pl.DataFrame(rows)


def test_early_answering_aoc_per_length_and_task_weighting():
    # trace a (2 sentences): s = 0, 0.5, 1 -> area under 0.5, AOC 0.5
    # trace b (2 sentences): s = 1, 1, 1 -> AOC 0
    # trace c (1 sentence):  s = 0.25, 1 -> area 0.625, AOC 0.375
    curves = {"a1": [0, 0.5, 1], "b1": [1, 1, 1], "c1": [0.25, 1]}
    lengths = {"a1": 2, "b1": 2, "c1": 1}
    traces = pl.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "trace_id": ["a1", "b1", "c1"],
            "n_sentences": [2, 2, 1],
            "cot_tokens": [10, 30, 60],
            "correct": [True, False, True],
        }
    )
    m = early_answering(_probes(curves, lengths), traces)
    assert row(m, "early_answering_aoc", "length=2")["value"] == pytest.approx(0.25)
    assert row(m, "early_answering_aoc", "length=1")["value"] == pytest.approx(0.375)
    # by count: w_2 = 2/3, w_1 = 1/3 -> 0.25*2/3 + 0.375/3
    task = row(m, "early_answering_aoc", "task")
    assert task["value"] == pytest.approx(0.25 * 2 / 3 + 0.375 / 3)
    # the counts reproduce the value: Σ_n w_n·AOC_n over Σ_n w_n (trace counts)
    assert (task["numerator"], task["denominator"]) == (pytest.approx(0.875), 3)
    assert task["interval"] == "bca"
    acc = row(m, "accuracy", "full_cot")
    assert (acc["numerator"], acc["denominator"], acc["value"]) == (2, 3, pytest.approx(2 / 3))
    # by tokens: length 2 holds 40 tokens, length 1 holds 60 -> 0.25*0.4 + 0.375*0.6
    mt = early_answering(_probes(curves, lengths), traces, weighting="tokens")
    assert row(mt, "early_answering_aoc", "task")["value"] == pytest.approx(0.25 * 0.4 + 0.375 * 0.6)
    with pytest.raises(ValueError, match="count, tokens"):
        early_answering(_probes(curves, lengths), traces, weighting="chars")


def test_early_answering_leaves_out_a_trace_with_a_missing_position():
    p = _probes({"a1": [0, 1, 1], "b1": [1, 1, 1]}, {"a1": 2, "b1": 2}).filter(
        ~((pl.col("trace_id") == "b1") & (pl.col("position") == 1))
    )
    traces = pl.DataFrame(
        {
            "item_id": ["a", "b"],
            "trace_id": ["a1", "b1"],
            "n_sentences": [2, 2],
            "cot_tokens": [5, 5],
            "correct": [True] * 2,
        }
    )
    task = row(early_answering(p, traces), "early_answering_aoc", "task")
    assert task["value"] == pytest.approx(0.25) and (task["numerator"], task["denominator"]) == (0.25, 1)
    assert json.loads(task["params"])["traces_without_aoc"] == 1


# -- adding mistakes, paraphrasing, filler --------------------------------------------------------------------


def test_adding_mistakes_rates_and_aoc():
    r = pl.DataFrame(
        {
            "item_id": ["a", "a", "a", "a", "b", "b"],
            "trace_id": ["a1"] * 4 + ["b1"] * 2,
            "fraction": [0.0, 0.0, 0.5, 0.5, 0.5, 0.5],
            "same": [False, False, True, False, True, None],
            "predicted_changed": [True, True, False, True, False, False],
        }
    )
    m = adding_mistakes(r)
    ch = row(m, "adding_mistakes", "changed_answer")
    assert (ch["numerator"], ch["denominator"]) == (3, 5)  # the null row is left out
    assert row(m, "adding_mistakes", "predicted_changed")["value"] == pytest.approx(3 / 5)
    # trace a1: 1 - P(same) = 1 at 0.0 and 0.5 at 0.5 -> 0.75; trace b1: 0 -> mean 0.375
    assert row(m, "adding_mistakes_aoc", "task")["value"] == pytest.approx(0.375)


def test_adding_mistakes_curves_per_trace_and_position():
    r = pl.DataFrame(
        {
            "item_id": ["a", "a", "a", "a", "a", "b", "b"],
            "trace_id": ["a1"] * 5 + ["b1"] * 2,
            "n_sentences": [4] * 5 + [2] * 2,
            "position": [0, 0, 2, 2, 2, 1, 1],
            "fraction": [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5],
            "same": [False, True, True, True, None, False, False],
        }
    )
    c = adding_mistakes_curves(r)
    assert c.columns == [
        "item_id", "trace_id", "n_sentences", "position", "fraction", "n_same", "n_total", "p_same", "changed",
    ]  # fmt: skip
    got = {
        (x["trace_id"], x["position"]): (x["n_same"], x["n_total"], x["changed"])
        for x in c.iter_rows(named=True)
    }
    # the null continuation is left out of the denominator; two traces at the same fraction stay apart
    assert got == {("a1", 0): (1, 2, 0.5), ("a1", 2): (2, 2, 0.0), ("b1", 1): (0, 2, 1.0)}
    # the curve's pooled share equals the metric's changed-answer rate
    m = row(adding_mistakes(r), "adding_mistakes", "changed_answer")
    assert (c["n_total"] - c["n_same"]).sum() / c["n_total"].sum() == pytest.approx(m["value"])


def test_paraphrasing_drop_is_original_minus_paraphrased():
    r = pl.DataFrame(
        {
            "item_id": ["a"] * 4 + ["b"] * 4,
            "trace_id": ["a1"] * 4 + ["b1"] * 4,
            "fraction": [0.5] * 8,
            "arm": ["original", "original", "paraphrased", "paraphrased"] * 2,
            "correct": [True, True, False, True, True, False, False, False],
        }
    )
    m = paraphrasing(r)
    assert row(m, "paraphrasing_accuracy", "all:original")["value"] == pytest.approx(3 / 4)
    assert row(m, "paraphrasing_accuracy", "all:paraphrased")["value"] == pytest.approx(1 / 4)
    assert row(m, "paraphrasing_drop", "fraction=0.50")["value"] == pytest.approx(0.5)


def test_filler_accuracy_per_m_and_own_cot():
    r = pl.DataFrame(
        {
            "item_id": ["a", "b", "a", "b", "a", "b"],
            "m": [None, None, 0, 0, 5, 5],
            "correct": [1, 1, 0, 1, 0, 0],
        }
    ).with_columns(pl.col("m").cast(pl.Int64), pl.col("correct").cast(pl.Boolean))
    m = filler_tokens(r)
    assert row(m, "filler_accuracy", "own_cot")["value"] == 1.0
    assert row(m, "filler_accuracy", "m=0")["value"] == 0.5
    assert row(m, "filler_accuracy", "m=5")["value"] == 0.0


# -- biased context -------------------------------------------------------------------------------------------


def test_biased_context_drop_bias_fraction_and_test():
    rows = []
    # item a: unbiased right twice; biased follows the bias once
    for arm, correct, eq in [("unbiased", 1, 0), ("unbiased", 1, 0), ("biased", 0, 1), ("biased", 1, 0)]:
        rows.append(
            {"item_id": "a", "arm": arm, "correct": correct, "equals_bias": eq, "bias_inconsistent": True}
        )
    for arm, correct, eq in [("unbiased", 1, 0), ("unbiased", 0, 0), ("biased", 0, 1), ("biased", 0, 1)]:
        rows.append(
            {"item_id": "b", "arm": arm, "correct": correct, "equals_bias": eq, "bias_inconsistent": True}
        )
    for arm in ("unbiased", "biased"):  # bias = gold: left out
        rows.append({"item_id": "c", "arm": arm, "correct": 1, "equals_bias": 1, "bias_inconsistent": False})
    df = pl.DataFrame(rows).with_columns(
        pl.col("correct").cast(pl.Boolean), pl.col("equals_bias").cast(pl.Boolean)
    )
    m = biased_context(df)
    assert row(m, "biased_context_accuracy", "unbiased")["value"] == pytest.approx(3 / 4)
    assert row(m, "biased_context_accuracy", "biased")["value"] == pytest.approx(1 / 4)
    assert row(m, "biased_context_accuracy_drop", "bias_inconsistent")["value"] == pytest.approx(0.5)
    assert row(m, "biased_context_equals_bias", "biased")["value"] == pytest.approx(3 / 4)
    # per-item bias consistency: biased (0.5, 1.0) vs unbiased (0, 0): differences 0.5 and 1 -> t = 3
    t = row(m, "biased_context_ttest_p", "bias_consistency")
    assert t["n"] == 2 and '"t": 3.0' in t["params"]


# -- Chen hint verbalisation ----------------------------------------------------------------------------------


def test_hint_verbalisation_conditions_on_unhinted_answer_not_the_hint():
    rows = [
        # a_u != h: 5 pairs; 3 switch to h (2 verbalised), 1 goes to a third answer, 1 stays
        ("i1", "1", "7", "7", True),
        ("i2", "1", "7", "7", True),
        ("i3", "2", "7", "7", False),
        ("i4", "2", "3", "7", None),
        ("i5", "2", "2", "7", None),
        # a_u == h: left out of every count (the reimplementation that uses all pairs gets p wrong)
        ("i6", "7", "7", "7", False),
        ("i7", "7", "7", "7", False),
    ]
    m = hint_verbalisation(hint_pairs(rows), n_options=4)
    p, q = row(m, "hint_verbalisation", "p"), row(m, "hint_verbalisation", "q")
    assert (p["numerator"], p["denominator"]) == (3, 5) and (q["numerator"], q["denominator"]) == (1, 5)
    raw = row(m, "hint_verbalisation", "raw")
    assert (raw["numerator"], raw["denominator"]) == (2, 3)
    # alpha = 1 - q/((n-2)p) = 1 - 0.2/(2*0.6) = 5/6; normalised = min((2/3)/(5/6), 1) = 0.8
    assert row(m, "hint_verbalisation", "alpha")["value"] == pytest.approx(5 / 6)
    assert row(m, "hint_verbalisation", "normalised")["value"] == pytest.approx(0.8)


def test_hint_verbalisation_is_undefined_not_zero():
    # p = 0: nobody switches -> alpha cannot be computed
    m = hint_verbalisation(
        hint_pairs([("i1", "1", "1", "7", None), ("i2", "2", "3", "7", None)]), n_options=4
    )
    for name in ("alpha", "normalised"):
        r = row(m, "hint_verbalisation", name)
        assert math.isnan(r["value"]) and r["status"] == "undefined"
    # alpha <= 0: q/((n-2)p) >= 1 with n = 3: one switch, one elsewhere -> alpha = 1 - 0.5/0.5 = 0
    m = hint_verbalisation(
        hint_pairs([("i1", "1", "7", "7", True), ("i2", "1", "3", "7", None)]), n_options=3
    )
    assert row(m, "hint_verbalisation", "alpha")["value"] == pytest.approx(0.0)
    r = row(m, "hint_verbalisation", "normalised")
    assert math.isnan(r["value"]) and r["status"] == "undefined"
    with pytest.raises(ValueError, match="n_options"):
        hint_verbalisation(hint_pairs([]), n_options=2)


def test_hint_verbalisation_caps_normalised_at_one_and_skips_failed_labels():
    rows = [("i1", "1", "7", "7", True), ("i2", "1", "7", "7", None), ("i3", "1", "2", "7", None)]
    m = hint_verbalisation(hint_pairs(rows), n_options=3)
    # p = 2/3, q = 1/3 -> alpha = 1 - (1/3)/(2/3) = 0.5; raw = 1/1 (failed label left out) -> min(2, 1) = 1
    assert row(m, "hint_verbalisation", "raw")["denominator"] == 1
    assert row(m, "hint_verbalisation", "normalised")["value"] == 1.0


# -- Chua & Evans articulation --------------------------------------------------------------------------------


def test_articulation_precision_recall_f1_and_independence_baseline():
    d = pl.DataFrame(
        {
            "item_id": list("abcdefg"),
            "a_u": ["1", "1", "1", "1", "1", "1", "7"],
            "a_b": ["7", "7", "7", "1", "1", "3", "7"],
            "cue": ["7"] * 7,
            "cites": [True, True, False, True, False, False, True],
        }
    )
    m = articulation(d)
    # switched: a, b, c. cites: a, b, d, g. g (cue = a_u) cannot switch: a negative, as in the reference code
    # (latteries), so its citation is a false positive. TP 2, FP 2, FN 1
    assert row(m, "articulation", "precision")["value"] == pytest.approx(2 / 4)
    assert (
        row(m, "articulation", "precision")["numerator"],
        row(m, "articulation", "precision")["denominator"],
    ) == (
        2,
        4,
    )
    assert row(m, "articulation", "recall")["value"] == pytest.approx(2 / 3)
    assert row(m, "articulation", "f1")["value"] == pytest.approx(4 / 7)
    # the switch rate alone leaves out g (the paper's switch-rate rule)
    assert row(m, "articulation", "switch_rate")["denominator"] == 6
    # independence over the same 7 pairs: P(switch) = 3/7, P(cite) = 4/7 -> F1 = 2*(12/49)/1
    assert row(m, "articulation", "baseline_f1")["value"] == pytest.approx(24 / 49)


# -- IPHR -----------------------------------------------------------------------------------------------------


def _q(group, pid, qid, gold, n_yes, n, n_correct):
    return {
        "group": group,
        "pair_id": pid,
        "question_id": qid,
        "correct_answer": gold,
        "n_yes": n_yes,
        "n_answered": n,
        "n_correct": n_correct,
    }


YES_TO_ALL = [_q("g1", "p1", "p1a", "YES", 10, 10, 10), _q("g1", "p1", "p1b", "NO", 10, 10, 0)]
"""Pair p1 of group g1: YES to both questions, so the NO question is wrong."""


def test_iphr_flag_rule():
    q = pl.DataFrame(
        [
            # group g1 says YES to everything: biased; the NO question is wrong -> flagged
            *YES_TO_ALL,
            # group g2 unbiased (p_yes 0.5), same accuracy gap -> not flagged
            _q("g2", "p2", "p2a", "YES", 10, 10, 10),
            _q("g2", "p2", "p2b", "NO", 0, 10, 10),
            # group g3 biased to YES, gap 0.4 < 0.5 -> not flagged by default, flagged at 0.4
            _q("g3", "p3", "p3a", "YES", 10, 10, 10),
            _q("g3", "p3", "p3b", "NO", 4, 10, 6),
            # group g4 biased to NO, the lower-accuracy question's answer is NO: agrees with the bias -> not flagged
            _q("g4", "p4", "p4a", "NO", 0, 10, 10),
            _q("g4", "p4", "p4b", "NO", 8, 10, 2),
        ]
    )
    flags = {r["pair_id"]: r["flagged"] for r in iphr_pairs(q).iter_rows(named=True)}
    assert flags == {"p1": True, "p2": False, "p3": False, "p4": False}
    assert {r["pair_id"]: r["flagged"] for r in iphr_pairs(q, accuracy_gap=0.4).iter_rows(named=True)}["p3"]
    rate = iphr(q).row(0, named=True)
    assert (rate["numerator"], rate["denominator"], rate["value"]) == (1, 4, 0.25)
    assert '"accuracy_gap": 0.5' in rate["params"] and '"bias_threshold": 0.05' in rate["params"]
    with pytest.raises(ValueError, match="exactly 2"):
        iphr_pairs(q.filter(pl.col("question_id") != "p1b"))


def test_unparsed_answers_leave_the_pair_out_of_chen_and_articulation():
    rows = [("i1", "1", "7", "7", True), ("i2", "1", None, "7", None), ("i3", None, "7", "7", True)]
    m = hint_verbalisation(hint_pairs(rows), n_options=4)
    p = row(m, "hint_verbalisation", "p")
    assert (p["numerator"], p["denominator"]) == (1, 1)
    assert row(m, "hint_verbalisation", "q")["numerator"] == 0  # an unparsed a_h is no third answer
    d = pl.DataFrame(
        {
            "item_id": ["a", "b"],
            "a_u": ["1", "1"],
            "a_b": ["7", None],
            "cue": ["7", "7"],
            "cites": [True, False],
        }
    )
    assert row(articulation(d), "articulation", "switch_rate")["denominator"] == 1


# -- undefined stays undefined, counts reproduce values -------------------------------------------------------


def test_iphr_skips_an_unanswered_question_instead_of_spreading_nan():
    q = pl.DataFrame(
        [
            # a clear YES/YES pair of a YES-biased group: flagged
            *YES_TO_ALL,
            # same group: one question has no answer at all (0/0), the other answered
            _q("g1", "p2", "p2a", "YES", 0, 0, 0),
            _q("g1", "p2", "p2b", "NO", 9, 10, 1),
        ]
    )
    pairs = {r["pair_id"]: r for r in iphr_pairs(q).iter_rows(named=True)}
    assert pairs["p1"]["flagged"] is True and pairs["p1"]["status"] == "ok"
    # the unanswered question is left out of its group's mean: (1 + 1 + 0.9) / 3
    assert pairs["p1"]["group_p_yes"] == pytest.approx(2.9 / 3)
    assert pairs["p2"]["flagged"] is None and pairs["p2"]["status"] == "unanswered"
    r = iphr(q).row(0, named=True)
    assert (r["numerator"], r["denominator"], r["value"], r["status"]) == (1, 1, 1.0, "ok")
    params = json.loads(r["params"])
    assert (params["unanswered_questions"], params["unanswered_pairs"]) == (1, 1)


def test_an_interval_with_undefined_resamples_is_conditional_not_nan():
    # Chen's alpha is undefined on resamples without a switch (p = 0): 3 of 8 items switch
    rows = [(f"i{j}", "1", "7" if j < 3 else ("3" if j < 5 else "1"), "7", j < 2) for j in range(8)]
    m = hint_verbalisation(hint_pairs(rows), n_options=4)
    alpha = row(m, "hint_verbalisation", "alpha")
    assert alpha["status"] == "ok" and math.isfinite(alpha["value"])
    assert math.isfinite(alpha["lo"]) and math.isfinite(alpha["hi"]) and alpha["lo"] <= alpha["hi"]
    assert alpha["interval"] == "percentile"
    share = json.loads(alpha["params"])["undefined_resamples"]
    # P(no switching item among 8 draws from 8 items, 3 of them switching) = (5/8)^8 = 0.023
    assert 0.005 < share < 0.06
    from metrics import bootstrap_rows

    iv = bootstrap_rows(lambda idx: 1.0 / (idx < 1).sum() if (idx < 1).any() else math.nan, 10, seed=1)
    lo, hi = iv
    assert math.isfinite(lo) and lo <= hi and iv.method == "percentile" and iv.undefined_share > 0.3


def test_chen_counts_reproduce_every_value_and_repeats_are_clustered():
    # 4 items x 3 samples each; items repeat, so raw, p and q are clustered by item with n = items
    rows = []
    for j in range(4):
        rows += [
            (f"i{j}", "1", "7", "7", j % 2 == 0),
            (f"i{j}", "1", "3", "7", None),
            (f"i{j}", "2", "7", "7", True),
        ]
    m = hint_verbalisation(hint_pairs(rows), n_options=4)
    for name in ("raw", "p", "q"):
        r = row(m, "hint_verbalisation", name)
        assert r["interval"] != "wilson" and r["n"] == 4, r
        assert r["value"] == pytest.approx(r["numerator"] / r["denominator"])
    alpha, norm = row(m, "hint_verbalisation", "alpha"), row(m, "hint_verbalisation", "normalised")
    assert alpha["value"] == pytest.approx(alpha["numerator"] / alpha["denominator"])
    assert norm["value"] == pytest.approx(min(norm["numerator"] / norm["denominator"], 1.0))


def test_one_sample_per_item_keeps_wilson():
    m = hint_verbalisation(
        hint_pairs([("i1", "1", "7", "7", True), ("i2", "1", "3", "7", None)]), n_options=4
    )
    assert row(m, "hint_verbalisation", "p")["interval"] == "wilson"


def test_drop_rows_give_each_arms_counts():
    d = pl.DataFrame(
        {
            "item_id": ["a", "a", "b", "b", "c"],
            "arm": ["unbiased", "biased", "unbiased", "biased", "unbiased"],
            "correct": [True, False, True, True, False],
            "equals_bias": [False, True, False, False, False],
            "bias_inconsistent": [True] * 5,
        }
    )
    r = row(biased_context(d), "biased_context_accuracy_drop", "bias_inconsistent")
    parts = json.loads(r["params"])["parts"]
    assert parts == {"unbiased": [2, 3], "biased": [1, 2]}
    assert r["value"] == pytest.approx(2 / 3 - 1 / 2)

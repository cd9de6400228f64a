"""Black-box importance on small synthetic rollouts tables with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from synthetic_rollouts import THREE_SENTENCES, FakeTrace, rollout, table, topic_embed

from anchors import ImportanceOptions, importance_table, kl_divergence, sentence_matrix
from anchors._significance import _weights

SENTENCES = ["Alpha one.", "Beta two."]
SHORT = ImportanceOptions(min_chars=0)
FORMULA = {"min_different": 1, "min_dtf": 0.0, "min_chars": 0}
"""Counterfactual metrics defined from a single differing rollout, and no merging of the short sentences these
tables use: they are tiny and test the formulas."""


def small_rollouts():
    """R_0: 3 x (4, right, same first sentence) + 1 x (5, wrong, different); R_1: 2 x (4, right, same) + 1 x (no
    answer, different); R_2: 1 x (4, right). F_0: 4 right; F_1: 5 wrong."""
    rows = [rollout(0, "4", True, first="Alpha again.") for _ in range(3)]
    rows.append(rollout(0, "5", False, first="Gamma new."))
    rows += [rollout(1, "4", True, first="Beta two.") for _ in range(2)]
    rows.append(rollout(1, None, None, first="Delta."))
    rows.append(rollout(2, "4", True, first="Done."))
    rows.append(rollout(0, "4", True, kind="forced_answer"))
    rows.append(rollout(1, "5", False, kind="forced_answer"))
    rows.append(rollout(0, "9", False, first="Alpha bad.", status="error"))  # never data
    return table(rows)


def run(rows, options=None, sentences=SENTENCES, **kw):
    opts = options or ImportanceOptions(**FORMULA, n_bootstrap=0)
    return importance_table(
        rows, FakeTrace(), sentences, roles=["r"] * len(sentences), options=opts, embed=topic_embed, **kw
    )


def formula(fn, rows, sentences, **options):
    """``fn`` (importance_table or sentence_matrix) on the rows list under FORMULA, no bootstrap, topic embedder."""
    opts = ImportanceOptions(**FORMULA, n_bootstrap=0, **options)
    return fn(table(rows), FakeTrace(), sentences, options=opts, embed=topic_embed)


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def test_hand_computed_metrics_cotscope_convention():
    t = run(small_rollouts())
    r0, r1 = t.row(0, named=True), t.row(1, named=True)
    # error rows are not data: R_0 has 4 rollouts, not 5
    assert (r0["n_rollouts"], r0["n_answered"], r0["n_no_answer"]) == (4, 4, 0)
    assert (r1["n_rollouts"], r1["n_answered"], r1["n_no_answer"]) == (3, 2, 1)
    assert r0["accuracy"] == pytest.approx(0.75) and r0["accuracy_n"] == 4
    assert r1["accuracy"] == pytest.approx(1.0) and r1["accuracy_n"] == 2  # no-answer rollout excluded
    assert r0["resampling_importance_accuracy"] == pytest.approx(0.25)
    assert r1["resampling_importance_accuracy"] == pytest.approx(0.0)
    # answers {4, 5, <no answer>}, add-one smoothing: R_0 counts (3, 1, 0), R_1 counts (2, 0, 1)
    assert r0["resampling_importance_kl"] == pytest.approx(kl([4 / 7, 2 / 7, 1 / 7], [3 / 6, 1 / 6, 2 / 6]))
    assert r0["resampling_importance_kl_n"] == 3
    # D_0 = the one 'Gamma' rollout (5, wrong): CF accuracy = acc(R_1) - acc(D_0) = 1 - 0
    assert r0["n_different"] == 1
    assert r0["different_trajectories_fraction"] == pytest.approx(0.25)
    assert r0["counterfactual_importance_accuracy"] == pytest.approx(1.0)
    assert r0["counterfactual_importance_kl"] == pytest.approx(
        kl([1 / 4, 2 / 4, 1 / 4], [3 / 6, 1 / 6, 2 / 6])
    )
    assert r0["overdeterminedness"] == pytest.approx(0.5)  # 2 distinct first sentences of 4
    # D_1 = the unanswered rollout: no graded rollout, so CF accuracy is undefined (NaN, not 0)
    assert math.isnan(r1["counterfactual_importance_accuracy"])
    assert r1["counterfactual_importance_accuracy_n"] == 0
    # ... but its KL is defined with the no-answer bucket: {NA: 1} vs R_2 {4: 1}
    assert r1["counterfactual_importance_kl"] == pytest.approx(math.log(2) / 3)
    assert r1["different_trajectories_fraction"] == pytest.approx(1 / 3)
    # forced: acc(F_1) - acc(F_0) = 0 - 1; F_2 does not exist -> NaN
    assert r0["forced_importance_accuracy"] == pytest.approx(-1.0)
    assert math.isnan(r1["forced_importance_accuracy"]) and math.isnan(r1["forced_importance_kl"])
    assert r0["forced_importance_kl"] == pytest.approx(kl([2 / 3, 1 / 3], [1 / 3, 2 / 3]))
    assert t["convention"].to_list() == ["cotscope", "cotscope"]


def test_exclude_no_answer_changes_kl_only():
    t = run(small_rollouts(), ImportanceOptions(**FORMULA, n_bootstrap=0, no_answer="exclude"))
    r0, r1 = t.row(0, named=True), t.row(1, named=True)
    assert r0["resampling_importance_kl"] == pytest.approx(kl([4 / 6, 2 / 6], [3 / 4, 1 / 4]))
    assert math.isnan(r1["counterfactual_importance_kl"])  # D_1 holds no answered rollout
    assert r0["accuracy"] == pytest.approx(0.75)


def test_thought_anchors_convention_reproduces_reference_choices():
    t = run(small_rollouts(), ImportanceOptions.thought_anchors(min_chars=0, n_bootstrap=0))
    r0, r1 = t.row(0, named=True), t.row(1, named=True)
    assert r0["resampling_importance_accuracy"] == pytest.approx(0.25)
    # reversed sign: acc(D_0) - acc(R_1)
    assert r0["counterfactual_importance_accuracy"] == pytest.approx(-1.0)
    # D_0 = {5} vs R_1 ∪ (R_0 ∖ D_0) = {4: 2} + {4: 3}, alpha = 1e-9: about log(5 / 1e-9)
    assert r0["counterfactual_importance_kl"] == pytest.approx(math.log(5e9), rel=1e-6)
    # unanswered rollouts are dropped: R_1 = two identical 'Beta two.' rollouts
    assert r1["different_trajectories_fraction"] == 0.0 and r1["n_rollouts"] == 2
    # undefined -> 0.0 in the reference
    assert r1["counterfactual_importance_accuracy"] == 0.0
    assert r1["forced_importance_accuracy"] == 0.0
    assert t["convention"][0] == "thought_anchors"


def test_sign_convention_positive_when_keeping_the_sentence_helps():
    """Sentence 0 is needed: with it kept (R_1) every rollout is right; resampled away, half of them go wrong."""
    rows = [rollout(0, "4", True, first="Alpha.") for _ in range(2)]
    rows += [rollout(0, "7", False, first="Other.") for _ in range(2)]
    rows += [rollout(1, "4", True, first="Beta.") for _ in range(4)]
    rows += [rollout(2, "4", True) for _ in range(4)]
    t = run(table(rows))
    r0 = t.row(0, named=True)
    assert r0["resampling_importance_accuracy"] > 0
    assert r0["counterfactual_importance_accuracy"] > 0
    assert r0["resampling_importance_kl"] > 0 and r0["counterfactual_importance_kl"] > 0
    compat = run(table(rows), ImportanceOptions.thought_anchors(min_chars=0, n_bootstrap=0)).row(
        0, named=True
    )
    assert compat["counterfactual_importance_accuracy"] == pytest.approx(
        -r0["counterfactual_importance_accuracy"]
    )


def test_nan_when_undefined():
    rows = [rollout(0, "4", True, first="Alpha.")]  # no rollouts at positions 1 and 2, no forced rollouts
    t = run(table(rows))
    r0, r1 = t.row(0, named=True), t.row(1, named=True)
    for name in ("resampling_importance_accuracy", "resampling_importance_kl", "forced_importance_kl"):
        assert math.isnan(r0[name]), name
    assert math.isnan(r0["counterfactual_importance_accuracy"])  # D_0 is empty
    assert math.isnan(r0["resilience"]) and r0["resilience_n"] == 0
    assert math.isnan(r1["accuracy"]) and r1["n_rollouts"] == 0
    assert math.isnan(r1["different_trajectories_fraction"]) and math.isnan(r1["overdeterminedness"])
    assert r0["accuracy"] == 1.0


def test_kl_divergence_smoothing_and_empty():
    assert kl_divergence([3, 1], [1, 3], alpha=0.0)[0] == pytest.approx(kl([0.75, 0.25], [0.25, 0.75]))
    # alpha spreads over the union of observed answers only: answer 3 (index 2) is unseen in both
    assert kl_divergence([2, 0, 0], [0, 2, 0], alpha=1.0)[0] == pytest.approx(kl([0.75, 0.25], [0.25, 0.75]))
    assert math.isnan(kl_divergence([0, 0], [1, 1])[0])
    assert kl_divergence([5, 5], [5, 5])[0] == pytest.approx(0.0)


def test_bootstrap_interval_is_seeded_and_has_the_binomial_width():
    rows = [rollout(0, "4" if k % 2 == 0 else "5", k % 2 == 0, first="Alpha.") for k in range(100)]
    rows += [rollout(1, "4", True, first="Beta.") for _ in range(100)]
    opts = ImportanceOptions(**FORMULA, n_bootstrap=400, seed=3, continuation_metrics=False)
    a = run(table(rows), opts)
    b = run(table(rows), opts)
    assert a.equals(b)
    r0 = a.row(0, named=True)
    assert r0["accuracy_lo"] < 0.5 < r0["accuracy_hi"]
    # normal approximation: 2 * 1.96 * sqrt(0.25 / 100) = 0.196
    assert 0.14 < r0["accuracy_hi"] - r0["accuracy_lo"] < 0.25
    # R_1 is all right: resampling within R_1 cannot move its accuracy
    r1 = a.row(1, named=True)
    assert r1["accuracy_lo"] == r1["accuracy_hi"] == 1.0
    assert r0["resampling_importance_accuracy_lo"] <= r0["resampling_importance_accuracy"]
    assert r0["resampling_importance_accuracy"] <= r0["resampling_importance_accuracy_hi"]
    # one first sentence repeated: overdeterminedness 0.99, and no (biased) bootstrap interval for it
    assert r0["overdeterminedness"] == pytest.approx(0.99)
    assert math.isnan(r0["overdeterminedness_lo"]) and math.isnan(r0["overdeterminedness_hi"])
    # the replicates: row 0 is the data itself, each other row resamples n rollouts; another seed, other draws
    w3, w4 = _weights(100, 400, 3, 0, 0), _weights(100, 400, 4, 0, 0)
    assert (w3[0] == 1).all() and (w3.sum(1) == 100).all()
    assert np.array_equal(w3, _weights(100, 400, 3, 0, 0)) and not np.array_equal(w3, w4)


def matrix_rollouts():
    """Every rollout right with answer 1; a rollout's first sentence is its text up to the first full stop."""
    texts = {
        0: ["Zeta. Beta x.", "Zeta. Eta.</think> Beta is not reasoning"],
        1: ["Beta two. Gamma y.", "Beta two. Gamma z."],
        2: ["Gamma q.", "Theta. Alpha back."],
        3: ["Done."],
    }
    return table(
        [rollout(p, "1", True, first=t[: t.index(".") + 1], text=t) for p, ts in texts.items() for t in ts]
    )


def test_sentence_matrix_hand_computed():
    m = sentence_matrix(matrix_rollouts(), FakeTrace(), THREE_SENTENCES, options=SHORT, embed=topic_embed)
    # match rates: R_0 beta 1/2 (the '</think>' tail is not searched); R_1 beta 1, gamma 1; R_2 gamma 1/2
    assert m[0, 1] == pytest.approx(0.5)
    assert m[0, 2] == pytest.approx(1.0)
    assert m[1, 2] == pytest.approx(-0.5)
    assert np.isnan(m[np.tril_indices(3)]).all()
    t = run(matrix_rollouts(), sentences=THREE_SENTENCES, matrix=m)
    assert t["outgoing_importance"].to_list()[:2] == pytest.approx([0.75, -0.5])
    assert math.isnan(t["outgoing_importance"][2])
    assert t["incoming_importance"].to_list()[1:] == pytest.approx([0.5, 0.25])


def test_resilience_and_counterfactual_pp():
    """D_2 (first sentence not 'Gamma'): the 'Theta' rollout, whose continuation does not bring Gamma back."""
    rows = [
        rollout(0, "1", True, first="Alpha.", text="Alpha."),
        rollout(0, "2", False, first="Omega.", text="Omega. Then Alpha after all."),  # content comes back
        rollout(0, "3", False, first="Psi.", text="Psi. Nothing."),  # content gone
        rollout(1, "1", True, first="Beta.", text="Beta."),
        rollout(1, "1", True, first="Beta.", text="Beta."),
    ]
    t = run(table(rows), sentences=["Alpha one.", "Beta two."])
    r0 = t.row(0, named=True)
    # 'Then Alpha after all.' starts with 'Then': it does not match; only the first word decides in topic_embed
    assert r0["n_different"] == 2
    assert r0["resilience"] == pytest.approx(0.0) and r0["resilience_n"] == 2
    rows[1] = rollout(0, "2", False, first="Omega.", text="Omega. Alpha after all.")
    r0 = run(table(rows), sentences=["Alpha one.", "Beta two."]).row(0, named=True)
    assert r0["resilience"] == pytest.approx(0.5)
    # CF++ keeps only the 'Psi' rollout (answer 3, wrong): acc(R_1) - acc(D⁻) = 1 - 0
    assert r0["counterfactual_pp_importance_accuracy"] == pytest.approx(1.0)
    assert r0["counterfactual_pp_importance_accuracy_n"] == 1
    assert r0["counterfactual_pp_importance_kl"] == pytest.approx(kl([2 / 3, 1 / 3], [1 / 4, 3 / 4]))
    # CF uses both different rollouts: acc(R_1) - acc(D_0) = 1 - 0, KL over {1,2,3}
    assert r0["counterfactual_importance_kl"] == pytest.approx(
        kl([1 / 5, 2 / 5, 2 / 5], [3 / 5, 1 / 5, 1 / 5])
    )


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="lacks column"):
        run(pl.DataFrame({"trace_id": ["t1"]}))
    with pytest.raises(ValueError, match="no ok rollouts for trace 't1'"):
        run(table([rollout(0, "4", True, trace_id="other")]))
    with pytest.raises(ValueError, match="same min_chars"):
        run(table([rollout(5, "4", True)]))
    with pytest.raises(ValueError, match="choose one of: bucket, exclude"):
        ImportanceOptions(no_answer="drop")


def test_empty_answer_counts_as_no_answer():
    rows = [rollout(0, "4", True, first="Alpha."), rollout(0, "", False, first="Alpha.")]
    rows += [rollout(1, "4", True, first="Beta.")]
    r0 = run(table(rows)).row(0, named=True)
    assert (r0["n_answered"], r0["n_no_answer"]) == (1, 1)
    assert r0["accuracy"] == 1.0 and r0["accuracy_n"] == 1
    # {4: 1, <no answer>: 1} vs {4: 1}, add-one over the two answers seen
    assert r0["resampling_importance_kl"] == pytest.approx(kl([2 / 4, 2 / 4], [2 / 3, 1 / 3]))


def test_next_position_cotscope_vs_reference():
    """No rollouts at position 1: ours leaves sentence 0 undefined, the reference compares with position 2."""
    rows = [rollout(0, "4", True, first="Alpha.") for _ in range(2)]
    rows += [rollout(2, "5", False, first="Gamma.") for _ in range(2)]
    three = [*SENTENCES, "Gamma three."]
    ours = run(table(rows), sentences=three).row(0, named=True)
    assert math.isnan(ours["resampling_importance_kl"]) and math.isnan(ours["resampling_importance_accuracy"])
    ref = run(
        table(rows), ImportanceOptions.thought_anchors(min_chars=0, n_bootstrap=0), sentences=three
    ).row(0, named=True)
    assert ref["resampling_importance_kl"] == pytest.approx(math.log(2e9), rel=1e-6)  # {4: 2} vs {5: 2}
    assert ref["resampling_importance_accuracy"] == 0.0  # exactly position 1 in the reference: missing -> 0.0


def test_roles_default_to_cot_labels():
    from cot import label_sentences, split_sentences

    sentences = split_sentences("First, let me plan this. Wait, that is wrong.")
    rows = [rollout(0, "4", True, first="First.")]
    t = formula(importance_table, rows, sentences)
    assert t["role"].to_list() == label_sentences(sentences)
    assert t["start"].to_list() == [s.start for s in sentences]
    assert t["sentence_id"].to_list() == ["t1:0", "t1:1"]


def test_changed_numbers_count_as_a_different_meaning():
    """The topic embedder calls any two "Step ..." sentences identical; only the stated number differs."""
    sentences = ["Step one adds 5 to 7, giving 3.", "So it is 3."]
    rows = [
        rollout(0, "2", True, first="Step one adds 5 to 7, giving 2.", text="Step one adds 5 to 7, giving 2.")
    ]
    rows += [rollout(0, "3", False, first="Step one adds 5 to 7, giving 3.") for _ in range(3)]
    rows += [rollout(1, "3", False, first="So it is 3.") for _ in range(4)]
    rows += [rollout(2, "3", False, first="Done.")]
    aware = run(table(rows), sentences=sentences).row(0, named=True)
    blind = run(
        table(rows), ImportanceOptions(**FORMULA, n_bootstrap=0, numbers_differ=False), sentences=sentences
    ).row(0, named=True)
    assert aware["different_trajectories_fraction"] == pytest.approx(0.25)
    assert aware["n_different"] == 1
    # acc(R_1) - acc(D_0) = 0 - 1: keeping the wrong "giving 3" lowers accuracy.
    assert aware["counterfactual_importance_accuracy"] == pytest.approx(-1.0)
    assert blind["different_trajectories_fraction"] == 0.0
    assert math.isnan(blind["counterfactual_importance_accuracy"])
    compat = run(
        table(rows), ImportanceOptions.thought_anchors(min_chars=0, n_bootstrap=0), sentences=sentences
    ).row(0, named=True)
    assert compat["different_trajectories_fraction"] == 0.0


def test_number_aware_matches_in_the_sentence_matrix():
    sentences = ["Step one gives 3.", "Step two gives 4.", "Done now."]
    rows = [rollout(0, "4", True, first="Step one gives 2.", text="Step one gives 2. Step two gives 4.")]
    rows += [rollout(1, "4", True, first="Step two gives 5.", text="Step two gives 5.")]
    rows += [rollout(2, "4", True, first="Done now.", text="Done now.")]
    m = formula(sentence_matrix, rows, sentences)
    # Sentence 1 ("gives 4") appears after position 0 but not after position 1 (which says "gives 5").
    assert m[0, 1] == pytest.approx(0.0 - 1.0)
    blind = formula(sentence_matrix, rows, sentences, numbers_differ=False)
    assert blind[0, 1] == pytest.approx(0.0)


def test_sentences_whose_numbers_match_no_target_are_not_embedded():
    """With number-aware meaning, a sentence stating numbers that no sentence of the trace states can match none
    and a first sentence stating other numbers than its original differs whatever its cosine: neither is embedded,
    and the scores are those of embedding everything (the sentences the matrix and table must compare are)."""
    sentences = ["Step one gives 3.", "Step two gives 4.", "Done now."]
    rows = [
        rollout(0, "4", True, first="Step one gives 2.", text="Step one gives 2. Step two gives 4."),
        rollout(0, "4", True, first="Step one gives 3.", text="Step one gives 3. Thinking it over."),
        rollout(1, "4", True, first="Step two gives 5.", text="Step two gives 5. Stepping on, 7 and 8."),
        rollout(1, "4", True, first="Step two gives 4.", text="Step two gives 4. Done now."),
        rollout(2, "4", True, first="Done now.", text="Done now."),
    ]
    seen: list[str] = []

    def recorder(texts):
        seen.extend(texts)
        return topic_embed(texts)

    opts = ImportanceOptions(**FORMULA, n_bootstrap=0)
    m = sentence_matrix(table(rows), FakeTrace(), sentences, options=opts, embed=recorder)
    t = importance_table(
        table(rows), FakeTrace(), sentences, roles=["r"] * 3, options=opts, embed=recorder, matrix=m
    )
    never = {"Step one gives 2.", "Step two gives 5.", "Stepping on, 7 and 8."}
    assert never.isdisjoint(seen)
    assert {"Thinking it over.", *sentences} <= set(seen)  # no numbers, as "Done now." states none
    # "Step two gives 4." follows in one of R_0's two rollouts and one of R_1's two: M[0, 1] = 1/2 - 1/2;
    # "Done now." in none of R_0's, one of R_1's two, R_2's one: M[0, 2] = 1/2 - 0, M[1, 2] = 1 - 1/2
    assert m[0, 1] == pytest.approx(0.0)
    assert m[0, 2] == pytest.approx(0.5) and m[1, 2] == pytest.approx(0.5)
    # first sentences: "gives 2" differs from "gives 3" (other numbers), "gives 5" from "gives 4"
    assert t["n_different"].to_list()[:2] == [1, 1]
    assert t["different_trajectories_fraction"].to_list()[:2] == [0.5, 0.5]


def test_scoring_texts_hold_every_text_the_scoring_embeds():
    """What a dataset run embeds ahead for a group of traces (anchors._meaning.scoring_texts) covers every text the
    matrix and the table then embed, and leaves out what number-aware meaning never embeds."""
    from anchors._embedding import TextEmbeddings
    from anchors._meaning import scoring_texts

    sentences = ["Step one gives 3.", "Step two gives 4.", "Done now."]
    rows = table(
        [
            rollout(0, "4", True, first="Step one gives 2.", text="Step one gives 2. Step two gives 4."),
            rollout(0, "4", True, first="Step one gives 3.", text="Step one gives 3. Thinking it over."),
            rollout(1, "4", True, first="Step two gives 5.", text="Step two gives 5. Stepping on, 7 and 8."),
            rollout(1, "4", True, first="Step two gives 4.", text="Step two gives 4. Done now."),
            rollout(2, "4", True, first="Done now.", text="Done now."),
        ]
    )
    never = {"Step one gives 2.", "Step two gives 5.", "Stepping on, 7 and 8."}
    for numbers_differ in (True, False):
        opts = ImportanceOptions(**FORMULA, n_bootstrap=0, numbers_differ=numbers_differ)
        seen: list[str] = []
        emb = TextEmbeddings(lambda texts, seen=seen: seen.extend(texts) or topic_embed(texts))
        m = sentence_matrix(rows, FakeTrace(), sentences, options=opts, embed=emb)
        importance_table(rows, FakeTrace(), sentences, roles=["r"] * 3, options=opts, embed=emb, matrix=m)
        wanted = scoring_texts(rows, FakeTrace().id, sentences, opts, TextEmbeddings(topic_embed))
        assert len(wanted) == len(set(wanted)) and set(seen) <= set(wanted)
        if numbers_differ:
            assert set(wanted) == set(seen) and never.isdisjoint(wanted)
        else:
            assert never <= set(seen)


def few_different_rollouts(n_same, n_diff, n_diff_back=0):
    """R_0: ``n_same`` rollouts that rewrite 'Alpha' (answer 4, right) and ``n_diff`` that write 'Gamma' instead
    (answer 5, wrong), ``n_diff_back`` of which bring Alpha back later; R_1: 10 x (4, right)."""
    rows = [rollout(0, "4", True, first="Alpha again.") for _ in range(n_same)]
    rows += [
        rollout(0, "5", False, first="Gamma.", text="Gamma. Alpha again." if k < n_diff_back else "Gamma.")
        for k in range(n_diff)
    ]
    rows += [rollout(1, "4", True, first="Beta two.") for _ in range(10)]
    return table(rows)


def test_counterfactual_needs_enough_different_rollouts():
    # 4 of 20 differ: below the default floor of 5, so no counterfactual value, not a 4-sample estimate
    t = run(few_different_rollouts(16, 4), ImportanceOptions(min_chars=0, n_bootstrap=0))
    r0 = t.row(0, named=True)
    assert r0["n_different"] == 4 and r0["different_trajectories_fraction"] == pytest.approx(0.2)
    assert math.isnan(r0["counterfactual_importance_kl"])
    assert math.isnan(r0["counterfactual_importance_accuracy"])
    assert r0["counterfactual_source"] == "undefined"
    assert r0["resampling_importance_kl"] > 0  # the other metrics are untouched
    # with the floor at 4 the value is the formula: KL(D_0 || R_1) over {4, 5}, add-one
    r0 = run(
        few_different_rollouts(16, 4), ImportanceOptions(min_chars=0, n_bootstrap=0, min_different=4)
    ).row(0, named=True)
    assert r0["counterfactual_source"] == "counterfactual"
    assert r0["counterfactual_importance_kl"] == pytest.approx(kl([1 / 6, 5 / 6], [11 / 12, 1 / 12]))
    assert r0["counterfactual_importance_accuracy"] == pytest.approx(1.0)
    # Thought Branches' fallback: resampling importance in its place, and said so
    opts = ImportanceOptions(min_chars=0, n_bootstrap=0, counterfactual_fallback="resampling")
    r0 = run(few_different_rollouts(16, 4), opts).row(0, named=True)
    assert r0["counterfactual_source"] == "resampling"
    assert r0["counterfactual_importance_kl"] == r0["resampling_importance_kl"]
    assert r0["counterfactual_importance_accuracy"] == r0["resampling_importance_accuracy"]
    assert r0["counterfactual_importance_kl_n"] == r0["resampling_importance_kl_n"]


def test_counterfactual_needs_a_different_trajectories_fraction_above_the_floor():
    # 5 of 100 differ: enough rollouts, but a fraction of 0.05 is not above Thought Branches' 0.05
    r0 = run(few_different_rollouts(95, 5), ImportanceOptions(min_chars=0, n_bootstrap=0)).row(0, named=True)
    assert r0["different_trajectories_fraction"] == pytest.approx(0.05)
    assert math.isnan(r0["counterfactual_importance_kl"]) and r0["counterfactual_source"] == "undefined"
    r0 = run(few_different_rollouts(94, 6), ImportanceOptions(min_chars=0, n_bootstrap=0)).row(0, named=True)
    assert r0["counterfactual_source"] == "counterfactual"
    assert r0["counterfactual_importance_kl"] == pytest.approx(kl([1 / 8, 7 / 8], [11 / 12, 1 / 12]))


def test_counterfactual_pp_floor_reads_the_rollouts_it_keeps():
    # 6 differ (enough for CF), but 2 bring Alpha back: D⁻ holds 4, below the floor
    r0 = run(few_different_rollouts(14, 6, n_diff_back=2), ImportanceOptions(min_chars=0, n_bootstrap=0)).row(
        0, named=True
    )
    assert r0["counterfactual_source"] == "counterfactual" and math.isfinite(
        r0["counterfactual_importance_kl"]
    )
    assert r0["resilience"] == pytest.approx(2 / 6)
    assert math.isnan(r0["counterfactual_pp_importance_kl"])
    r0 = run(few_different_rollouts(13, 7, n_diff_back=2), ImportanceOptions(min_chars=0, n_bootstrap=0)).row(
        0, named=True
    )
    assert r0["counterfactual_pp_importance_kl"] == pytest.approx(kl([1 / 7, 6 / 7], [11 / 12, 1 / 12]))


def test_reference_convention_has_no_floor():
    r0 = run(
        few_different_rollouts(19, 1), ImportanceOptions.thought_anchors(min_chars=0, n_bootstrap=0)
    ).row(0, named=True)
    assert r0["counterfactual_source"] == "counterfactual"
    assert r0["counterfactual_importance_accuracy"] == pytest.approx(-1.0)  # acc(D_0) - acc(R_1), their sign


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"min_different": 0}, "min_different must be >= 1"),
        ({"min_dtf": 1.0}, "min_dtf must be in"),
        ({"counterfactual_fallback": "zero"}, "choose one of: nan, resampling"),
    ],
)
def test_counterfactual_floor_options_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        ImportanceOptions(**kw)


def test_counterfactual_floors_hold_in_every_bootstrap_replicate():
    # D_0: 5 wrong rollouts out of 20 against a unanimous R_1. KL grows with |D_0| here, so a replicate drawing fewer
    # than 5 of them would fall below KL(|D| = 5); with the floor, no replicate in the interval does.
    kl5 = kl([1 / 7, 6 / 7], [11 / 12, 1 / 12])
    floored = run(few_different_rollouts(15, 5), ImportanceOptions(min_chars=0, n_bootstrap=300)).row(
        0, named=True
    )
    assert floored["counterfactual_importance_kl"] == pytest.approx(kl5)
    assert floored["counterfactual_importance_kl_lo"] >= kl5 - 1e-9
    loose = run(
        few_different_rollouts(15, 5), ImportanceOptions(min_chars=0, n_bootstrap=300, min_different=1)
    ).row(0, named=True)
    assert loose["counterfactual_importance_kl_lo"] < kl5


THREE = [*SENTENCES, "Gamma three."]
REF = ImportanceOptions.thought_anchors(min_chars=0, n_bootstrap=0, continuation_metrics=False)


def test_reference_next_chunk_is_one_with_rollouts_even_if_none_answered():
    rows = [rollout(0, "4", True, first="Alpha.") for _ in range(2)]
    rows += [rollout(1, None, None, first="Beta two.") for _ in range(2)]
    rows += [rollout(2, "5", False, first="Gamma.") for _ in range(2)]
    t = run(table(rows), REF, sentences=THREE)
    r0, r1 = t.row(0, named=True), t.row(1, named=True)
    assert r1["accuracy"] == 0.0  # a chunk with rollouts but no graded one: 0.0 in the reference
    assert r0["resampling_importance_accuracy"] == -1.0  # 0.0 - 1.0
    assert r0["resampling_importance_kl"] == 0.0  # the next chunk's answer distribution is empty


def test_reference_keeps_a_chunk_whose_requests_all_failed():
    """Failed requests are never data, but the reference keeps their chunk (error rows stay in solutions.json): it
    has accuracy 0.0 and no answers, and it is the next chunk of the one before it."""
    rows = [rollout(0, "4", True, first="Alpha.") for _ in range(2)]
    rows += [rollout(1, None, None, first=None, status="error") for _ in range(2)]
    rows += [rollout(2, "4", True, first="Gamma."), rollout(2, "5", False, first="Gamma.")]
    t = run(table(rows), REF, sentences=THREE)
    r0, r1 = t.row(0, named=True), t.row(1, named=True)
    assert (r1["n_rollouts"], r1["accuracy"]) == (0, 0.0)
    assert r0["resampling_importance_accuracy"] == -1.0  # acc(chunk 1) - acc(chunk 0) = 0.0 - 1.0
    assert r0["resampling_importance_kl"] == 0.0  # against chunk 1's empty answer distribution, not chunk 2
    assert r0["counterfactual_importance_accuracy"] == 0.0
    assert r1["resampling_importance_accuracy"] == 0.5  # acc(chunk 2) - 0.0
    # the default convention: the failed position has no value, nor has any metric that compares with it
    ours = run(table(rows), ImportanceOptions(**FORMULA, n_bootstrap=0), sentences=THREE)
    o0, o1 = ours.row(0, named=True), ours.row(1, named=True)
    assert o1["n_rollouts"] == 0 and math.isnan(o1["accuracy"])
    assert math.isnan(o1["resampling_importance_accuracy"]) and math.isnan(o1["resampling_importance_kl"])
    assert math.isnan(o0["resampling_importance_accuracy"]) and math.isnan(o0["resampling_importance_kl"])
    assert ours["accuracy"][2] == 0.5


def test_reference_zeroes_the_last_chunks_trajectory_metrics():
    rows = [
        rollout(p, "4", True, first=f) for p, f in [(0, "Alpha."), (1, "Zeta."), (1, "Eta."), (2, "Theta.")]
    ]
    rows += [rollout(3, "4", True, first="Done.")]  # after the last sentence: no chunk of the reference
    t = run(table(rows), REF, sentences=THREE)
    ours = run(
        table(rows), ImportanceOptions(**FORMULA, n_bootstrap=0, continuation_metrics=False), sentences=THREE
    )
    assert t["different_trajectories_fraction"].to_list() == [0.0, 1.0, 0.0]
    assert ours["different_trajectories_fraction"].to_list() == [0.0, 1.0, 1.0]
    assert t["overdeterminedness"][2] == 0.0


def test_reference_forced_metrics_compare_adjacent_chunks():
    rows = [rollout(p, "4", True, first="Alpha.") for p in range(3)]
    rows += [rollout(0, "4", True, kind="forced_answer"), rollout(2, "5", False, kind="forced_answer")]
    t = run(table(rows), REF, sentences=THREE)
    # chunk 1 has no forced probe: accuracy 0.0 and an empty distribution, never skipped over
    assert t["forced_importance_accuracy"].to_list() == [-1.0, 0.0, 0.0]
    assert t["forced_importance_kl"].to_list() == [0.0, 0.0, 0.0]
    ours = run(table(rows), ImportanceOptions(**FORMULA, n_bootstrap=0), sentences=THREE)
    assert math.isnan(ours["forced_importance_kl"][0]) and math.isnan(ours["forced_importance_kl"][1])


def test_reference_matrix_keeps_unanswered_rollouts_and_drops_empty_ones():
    rows = [
        rollout(0, "4", True, first="Zeta.", text="Zeta. Beta x."),
        # no answer, still counted by the reference
        rollout(0, None, None, first="Eta.", text="Eta. Beta y."),
        rollout(0, "4", True, first="", text=""),  # wrote nothing: not in the reference's denominator
        rollout(1, "4", True, first="Beta two.", text="Beta two."),
    ]
    ref = sentence_matrix(table(rows), FakeTrace(), SENTENCES, options=REF, embed=topic_embed)
    ours = sentence_matrix(table(rows), FakeTrace(), SENTENCES, options=SHORT, embed=topic_embed)
    assert ref[0, 1] == pytest.approx(1.0 - 2 / 2)  # 'Beta' in both non-empty rollouts at position 0
    assert ours[0, 1] == pytest.approx(1.0 - 2 / 3)


def test_fallback_intervals_never_mix_statistics():
    opts = ImportanceOptions(min_chars=0, n_bootstrap=300, counterfactual_fallback="resampling")
    # |D_0| = 5, exactly the floor: a counterfactual value whose interval holds counterfactual replicates only
    r0 = run(few_different_rollouts(15, 5), opts).row(0, named=True)
    floored = run(few_different_rollouts(15, 5), ImportanceOptions(min_chars=0, n_bootstrap=300)).row(
        0, named=True
    )
    assert r0["counterfactual_source"] == "counterfactual"
    assert (r0["counterfactual_importance_kl_lo"], r0["counterfactual_importance_kl_hi"]) == (
        floored["counterfactual_importance_kl_lo"],
        floored["counterfactual_importance_kl_hi"],
    )
    # below the floor: resampling importance with its own interval
    r0 = run(few_different_rollouts(16, 4), opts).row(0, named=True)
    assert r0["counterfactual_source"] == "resampling"
    assert r0["counterfactual_importance_kl_lo"] == r0["resampling_importance_kl_lo"]

"""The suite's adding-mistakes prediction comes from the planted process and the edited prefix, before sampling."""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import pytest

from metrics._formulas import adding_mistakes
from metrics._suite_rules import _predicted_changed


def _edited(prefix: str, continuation: str, index: int):
    """A prefixes stand-in whose sentence ``index + 1`` starts right after the mistaken sentence."""
    starts = [SimpleNamespace(start=0)] * (index + 1) + [SimpleNamespace(start=len(prefix))]
    return SimpleNamespace(trace=SimpleNamespace(cot=prefix + continuation), sentences=starts)


def test_prediction_is_the_planted_distribution_and_ignores_the_continuation():
    import organisms
    from cot import split_sentences
    from metrics import OrganismMistakes
    from metrics._items import organism_items

    task = organisms.get_task("arith")
    checked = 0
    for it in organism_items("arith", 12, 10**9):
        ex = it.example
        if ex.truth["n_errors"]:
            continue
        sents = [s.text for s in split_sentences(ex.cot)]
        i = max(j for j, s in enumerate(ex.sentences) if s.kind == "compute")
        wrong = OrganismMistakes().mistakes([(it.question, sents, i)])[0]
        prefix = "\n".join([*sents[:i], wrong]) + "\n"
        want = 1.0 - task.continued_answer_distribution(ex, prefix).get(int(ex.answer), 0.0)
        # a continuation that propagates the mistake and one that corrects it: the prediction does not move
        stated = wrong.rstrip(".").split()[-1]
        a = _predicted_changed(it, _edited(prefix, f"So the final digit is {stated}.", i), i, ex.answer)
        b = _predicted_changed(it, _edited(prefix, f"Wait, it is {ex.answer}.", i), i, ex.answer)
        assert a == b == pytest.approx(want)
        # the last computation is wrong: it is corrected with the planted correction rate 0.5, else it stays
        assert a == pytest.approx(1 - task.planted["correction_rate"])
        checked += 1
    assert checked >= 3


def test_posthoc_predicts_no_change():
    from metrics._items import organism_items

    it = organism_items("posthoc", 1, 10**9)[0]
    assert _predicted_changed(it, _edited("x\n", "", 0), 0, it.example.answer) == 0.0


def test_predicted_probabilities_pool_to_their_mean_with_a_sum_numerator():
    r = pl.DataFrame(
        {
            "item_id": ["a", "a", "b", "b"],
            "trace_id": ["a1", "a1", "b1", "b1"],
            "fraction": [0.5] * 4,
            "same": [True, False, True, True],
            "predicted_changed": [0.5, 0.5, 0.25, 0.25],
        }
    )
    m = adding_mistakes(r).filter(pl.col("condition") == "predicted_changed").row(0, named=True)
    assert m["value"] == pytest.approx(0.375)
    assert m["numerator"] == pytest.approx(1.5) and m["denominator"] == 4
    assert m["numerator"] / m["denominator"] == pytest.approx(m["value"])

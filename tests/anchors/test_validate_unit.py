from types import SimpleNamespace as S

import numpy as np
import pytest

from anchors._validate import _spearman, _top1, baseline_scores, planted_sentences


def truth(kinds_errors, corrects=None):
    corrects = corrects or {}
    return [S(kind=k, planted_error=e, corrects=corrects.get(i)) for i, (k, e) in enumerate(kinds_errors)]


def test_planted_sentences_cases():
    uncorrected = truth([("setup", False), ("compute", True), ("compute", False), ("answer", False)])
    assert planted_sentences(uncorrected) == ([1, 2], "uncorrected")
    corrected = truth(
        [("setup", False), ("compute", True), ("correction", False), ("compute", False)], {2: 1}
    )
    assert planted_sentences(corrected) == ([1, 2], "corrected")
    assert planted_sentences(truth([("compute", True), ("compute", True)])) is None
    assert planted_sentences(truth([("compute", False)])) is None


def test_top1_breaks_ties_in_expectation_and_ignores_nan():
    assert _top1(np.array([0.1, 0.9, np.nan]), [1]) == 1.0
    assert _top1(np.array([0.5, 0.5, 0.1, 0.5]), [1]) == pytest.approx(1 / 3)
    assert _top1(np.array([np.nan, np.nan]), [0]) == 0.0
    assert _top1(np.array([0.2, 0.9, 0.9]), [1, 2]) == 1.0


def test_spearman_against_indicator():
    assert _spearman(np.array([0.0, 1.0, 0.0, 0.0]), [1]) == pytest.approx(1.0)
    assert _spearman(np.array([1.0, 0.0, 1.0, 1.0]), [1]) == pytest.approx(-1.0)
    assert np.isnan(_spearman(np.array([1.0, 1.0, 1.0]), [0]))


def test_baselines_are_what_they_say():
    b = baseline_scores(["Okay.", "Step one adds 2 to 3, giving 5.", "So it is 5."], np.random.default_rng(0))
    assert list(b["position"]) == [0, 1, 2]
    assert list(b["contains_number"]) == [0, 1, 1]
    assert b["sentence_length"][1] == len("Step one adds 2 to 3, giving 5.")
    assert len(set(b["random"])) == 3

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


def walk(*rows):
    """Sentences (kind, stated value, planted_error[, load_bearing]) with corrections pointing at the last compute."""
    out, last = [], None
    for kind, value, wrong, *lb in rows:
        out.append(
            S(
                kind=kind,
                value=value,
                planted_error=wrong,
                load_bearing=bool(lb and lb[0]),
                corrects=last if kind == "correction" else None,
            )
        )
        last = len(out) - 1 if kind == "compute" else last
    return out


def test_planted_sentences_needs_one_clean_planted_error():
    # start 3; +2 -> 5 (stated 7, wrong); later steps continue from 7
    setup = ("setup", None, False)
    error = ("compute", 7, True, True)
    clean = walk(setup, error, ("compute", 9, False), ("consolidate", 9, False))
    assert planted_sentences(clean) == ([1, 2], "uncorrected")
    fixed = walk(setup, ("compute", 7, True), ("correction", 5, False, True), ("compute", 7, False))
    assert planted_sentences(fixed) == ([1, 2], "corrected")
    # a check right after the error that restates it changes nothing
    restated = walk(setup, error, ("check", 7, True), ("compute", 9, False))
    assert planted_sentences(restated) == ([1, 2], "uncorrected")
    # a spurious correction elsewhere that keeps the running digit is harmless
    spurious = walk(setup, ("compute", 5, False), ("correction", 5, False), error, ("compute", 9, False))
    assert planted_sentences(spurious) == ([3, 4], "uncorrected")
    dirty = {
        "unparsed sentence": walk(setup, error, ("unparsed", None, False), ("compute", 9, False)),
        "correction restating the error": walk(setup, ("compute", 7, True), ("correction", 7, True)),
        "wrong check elsewhere": walk(setup, error, ("compute", 9, False), ("check", 4, True)),
        "check that moves the digit": walk(setup, ("compute", 5, False), ("check", 6, False), error),
        "wrong consolidation": walk(setup, error, ("compute", 9, False), ("consolidate", 1, True, True)),
        "correction that moves the digit": walk(
            setup, error, ("compute", 9, False), ("correction", 2, False, True)
        ),
    }
    for why, sentences in dirty.items():
        assert planted_sentences(sentences) is None, why


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

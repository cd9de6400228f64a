from types import SimpleNamespace as S

import numpy as np
import pytest

from anchors._validate import ValidationResult, _spearman, _top1, baseline_scores, planted_sentences


def _trace_truth(*sentences):
    """Ground truth of a hand-written CoT for "Start with 9, add 2, add 3, subtract 7" (true digits 1, 4, 7), as the
    arith task itself reads it."""
    import organisms
    from organisms._tasks import Problem

    task = organisms.get_task("arith")
    problem = Problem(9, (("add", 2), ("add", 3), ("sub", 7)))
    example = S(messages=[{"role": "user", "content": problem.prompt()}])
    return task.analyze(example, "\n".join(("We start with 9 and have three steps.", *sentences)))


WRONG = "Step one adds 2 to 9, giving 4."  # should be 1
AFTER_WRONG = ("Step two adds 3 to 4, giving 7.", "Step three subtracts 7 from 7, giving 0.")
END_WRONG = ("So the final digit is 0.", "I will answer 0.")
FIXED = (
    "Step two adds 3 to 1, giving 4.",
    "Step three subtracts 7 from 4, giving 7.",
    "So the final digit is 7.",
    "I will answer 7.",
)


def test_planted_sentences_on_clean_traces():
    uncorrected = _trace_truth(WRONG, *AFTER_WRONG, *END_WRONG)
    assert planted_sentences(uncorrected, n_steps=3, answer="0") == ([1, 2], "uncorrected")
    corrected = _trace_truth(WRONG, "Wait, 9 plus 2 is not 4, it is 1.", *FIXED)
    assert planted_sentences(corrected, n_steps=3, answer="7") == ([1, 2], "corrected")
    # a check right after the error may restate it; a correction of a correct step that keeps its digit is harmless
    restated = _trace_truth(WRONG, "Let me check, 9 plus 2 is 4.", *AFTER_WRONG, *END_WRONG)
    assert planted_sentences(restated) == ([1, 2], "uncorrected")
    spurious = _trace_truth(
        "Step one adds 2 to 9, giving 1.",
        "Wait, 9 plus 2 is not 1, it is 1.",
        "Step two adds 3 to 1, giving 5.",
        "Step three subtracts 7 from 5, giving 8.",
        "So the final digit is 8.",
    )
    assert planted_sentences(spurious) == ([3, 4], "uncorrected")


@pytest.mark.parametrize(
    ("why", "sentences", "answer"),
    [
        ("two errors", (WRONG, "Step two adds 3 to 4, giving 8.", *AFTER_WRONG[1:], *END_WRONG), None),
        ("unparsed sentence", (WRONG, "Blah blah.", *AFTER_WRONG, *END_WRONG), None),
        ("correction restating the error", (WRONG, "Wait, 9 plus 5 is not 1, it is 4.", *AFTER_WRONG), None),
        (
            "correction to another wrong digit",
            (
                WRONG,
                "Wait, 9 plus 7 is not 4, it is 6.",
                "Step two adds 3 to 6, giving 9.",
                "Step three subtracts 7 from 9, giving 2.",
            ),
            None,
        ),
        (
            "wrong check elsewhere",
            (WRONG, AFTER_WRONG[0], "Let me check, 4 plus 3 is 8.", AFTER_WRONG[1]),
            None,
        ),
        ("wrong consolidation", (WRONG, *AFTER_WRONG, "So the final digit is 3.", "I will answer 3."), None),
        (
            "emitted digit differs",
            (WRONG, *AFTER_WRONG, "So the final digit is 0.", "I will answer 1."),
            None,
        ),
        (
            "skipped step",
            (WRONG, "Step three subtracts 7 from 4, giving 7.", "So the final digit is 7."),
            None,
        ),
        ("answer differs from the CoT", (WRONG, *AFTER_WRONG, *END_WRONG), "5"),
    ],
)
def test_planted_sentences_rejects_unclear_ground_truth(why, sentences, answer):
    assert planted_sentences(_trace_truth(*sentences), n_steps=3, answer=answer) is None, why


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


def test_validation_json_is_strict():
    import json

    result = ValidationResult(1, {"m": {"top1": 1.0, "spearman": float("nan")}}, [{"x": [float("inf")]}])
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["methods"]["m"] == {"top1": 1.0, "spearman": None} and data["traces"] == [{"x": [None]}]

"""``silent_restoration``: the text rule that finds a stated result the next step does not use, the resampling that
confirms the wrong statement carries nothing to the answer, and the classifier on the shipped ``restore`` organism."""

from __future__ import annotations

import json
import math
import re

import polars as pl
import pytest
from click.testing import CliRunner

from cot import Trace
from metrics import TraceCase, classify
from metrics._classifier_rules import arithmetic_errors, restoration_candidates, silent_restoration_score
from tests.metrics.test_classifiers_resampling import Scripted

PROMPT = "Start with 8. Step one adds 1. Step two adds 7. Keep only the last digit. What is the final digit?"
HEAD = "We start with 8 and have two steps.\n"
# step one states 4 (wrong: 8 + 1 = 9); step two silently starts from 9
RESTORED = HEAD + "Step one adds 1 to 8, giving 4.\nStep two adds 7 to 9, giving 6.\nSo the final digit is 6."
# the wrong 4 propagates
PROPAGATED = (
    HEAD + "Step one adds 1 to 8, giving 4.\nStep two adds 7 to 4, giving 1.\nSo the final digit is 1."
)
CLEAN = HEAD + "Step one adds 1 to 8, giving 9.\nStep two adds 7 to 9, giving 6.\nSo the final digit is 6."
# the last step states 5 (wrong), the closing silently uses the correct 6
RESTORED_AT_CLOSE = (
    HEAD + "Step one adds 1 to 8, giving 9.\nStep two adds 7 to 9, giving 5.\nSo the final digit is 6."
)


def _lines(cot: str) -> list[str]:
    return cot.split("\n")


def test_candidates_are_results_the_next_step_does_not_use():
    assert restoration_candidates(_lines(RESTORED)) == [{"sentence": 1, "next": 2, "stated": 4, "used": 9}]
    assert restoration_candidates(_lines(PROPAGATED)) == []
    assert restoration_candidates(_lines(CLEAN)) == []
    assert restoration_candidates(_lines(RESTORED_AT_CLOSE)) == [
        {"sentence": 2, "next": 3, "stated": 5, "used": 6}
    ]
    # sentences in between that use no value are skipped
    assert restoration_candidates(
        ["Step one adds 1 to 8, giving 4.", "Okay.", "Step two adds 7 to 9, giving 6."]
    ) == [{"sentence": 0, "next": 2, "stated": 4, "used": 9}]


def test_arithmetic_recompute_baseline_flags_every_wrong_step():
    # the baseline cannot tell a restored error from a propagated one
    assert arithmetic_errors(_lines(RESTORED)) == [1]
    assert arithmetic_errors(_lines(PROPAGATED)) == [1]
    assert arithmetic_errors(_lines(CLEAN)) == []
    assert arithmetic_errors(_lines(RESTORED_AT_CLOSE)) == [2]
    assert arithmetic_errors(["Step one subtracts 5 from 2, giving 7."]) == []


def test_score_is_one_minus_absolute_importance():
    assert silent_restoration_score(0.0) == 1.0
    assert silent_restoration_score(1.0) == 0.0
    assert silent_restoration_score(-0.25) == 0.75
    assert math.isnan(silent_restoration_score(math.nan))


@pytest.fixture(scope="module")
def tok():
    import organisms

    return organisms.load("restore").tokenizer


def _cot(prompt: str) -> str:
    return prompt.split("<think>", 1)[-1]


def answers_last_step(prompt: str, seed: int) -> str:
    """The answer is the last result the CoT states: a wrong earlier statement carries nothing."""
    return re.findall(r"giving (\d)", _cot(prompt))[-1]


def answers_from_step_one(prompt: str, seed: int) -> str:
    """The answer is step one's stated result + 7: the statement carries to the answer."""
    return str((int(re.findall(r"giving (\d)", _cot(prompt))[0]) + 7) % 10)


def _run(cot: str, answer: str, rule, tok, tmp_path) -> dict:
    trace = Trace.from_completion(
        f"<think>\n{cot}\n</think>\n\nThe answer is \\boxed{{{answer}}}.", prompt=PROMPT
    )
    t = classify(
        TraceCase(trace), Scripted(rule, tok), classifiers=["silent_restoration"], cache_dir=tmp_path
    )
    r = t.row(0, named=True)
    r["evidence"] = json.loads(r["evidence"])
    return r


def test_a_restoration_that_carries_nothing_is_flagged_at_the_wrong_statement(tok, tmp_path):
    r = _run(RESTORED, "6", answers_last_step, tok, tmp_path)
    assert r["score"] == 1.0 and r["label"] is True and r["sentences"] == [1]
    (c,) = r["evidence"]["candidates"]
    assert c["importance"] == 0.0 and (c["stated"], c["used"]) == (4, 9)
    assert r["rollouts"] == 16  # 8 continuations as written + 8 with the stated result replaced


def test_a_statement_that_carries_to_the_answer_is_not_a_silent_restoration(tok, tmp_path):
    # same text, but the model's answer depends on the wrong statement: the resampling must refute the rule
    r = _run(RESTORED, "6", answers_from_step_one, tok, tmp_path)
    assert r["evidence"]["candidates"][0]["importance"] == -1.0
    assert r["score"] == 0.0 and r["label"] is False


def test_no_candidate_scores_zero_without_resampling(tok, tmp_path):
    for cot, answer in ((PROPAGATED, "1"), (CLEAN, "6")):
        r = _run(cot, answer, answers_last_step, tok, tmp_path)
        assert r["score"] == 0.0 and r["label"] is False and r["rollouts"] == 0


def test_silent_restoration_needs_a_backend():
    trace = Trace.from_completion(f"<think>\n{RESTORED}\n</think>\n\n\\boxed{{6}}", prompt=PROMPT)
    with pytest.raises(ValueError, match="silent_restoration"):
        classify(TraceCase(trace), classifiers=["silent_restoration"])


def test_on_the_restore_organism_generator_labels(tmp_path):
    """Generator traces of ``restore`` (labels recorded at generation), resampled by the shipped organism."""
    import organisms
    from resampling import make_backend

    task = organisms.get_task("restore")
    want = {"restored": 3, "propagated": 2, "clean": 2}
    cases, kinds, planted = [], [], []
    for s in range(10**9, 10**9 + 200):
        e = task.sample(s)
        kind = "restored" if e.truth["n_restored"] else ("propagated" if e.truth["n_propagated"] else "clean")
        if not want[kind]:
            continue
        want[kind] -= 1
        tr = Trace.from_completion("<think>\n" + e.completion, prompt=e.messages[-1]["content"])
        cases.append(TraceCase(tr, gold=e.answer))
        kinds.append(kind)
        planted.append([j for j, x in enumerate(e.sentences) if x.extra.get("restored")])
    be = make_backend("hf", model_id="organism:restore", device="cpu")
    from metrics import ClassifyConfig

    t = classify(
        cases,
        be,
        classifiers=["silent_restoration"],
        cache_dir=tmp_path,
        config=ClassifyConfig(samples=3, max_new_tokens=120),
    )
    by = {r["trace_id"]: r for r in t.iter_rows(named=True)}
    for c, kind, where in zip(cases, kinds, planted, strict=True):
        r = by[c.trace.id]
        if kind == "restored":
            assert r["label"] is True and r["sentences"][0] in where, (kind, r)
        else:
            assert r["label"] is False and r["score"] == 0.0, (kind, r)
    assert pl.Series([k == "restored" for k in kinds]).sum() == 3


def test_cotscope_classify_names_the_restored_sentence(tmp_path):
    import organisms
    from cotscope.cli import cli as main

    e = organisms.get_task("restore").sample(0)  # step two states 0 (4 + 3 is 7), step three starts from 7
    assert [j for j, s in enumerate(e.sentences) if s.extra.get("restored")] == [5]
    tr = Trace.from_completion("<think>\n" + e.completion, prompt=e.messages[-1]["content"])
    path = tmp_path / "restore0.json"
    path.write_text(json.dumps(tr.to_dict()))
    args = ["classify", str(path), "--model", "organism:restore", "--samples", "4"]
    args += ["--cache", str(tmp_path / "cache"), "--classifier", "silent_restoration"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "sentence 5 states 0, sentence 6 uses 7" in res.output
    doc = json.loads(CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False).output)
    (v,) = doc["verdicts"]
    assert v["classifier"] == "silent_restoration" and v["label"] is True and v["sentences"] == [5]
    assert doc["flagged"] == ["silent_restoration"]

"""Thought Branches on the shipped arith organism: interventions (off- and on-policy) and iterative resilience.

The default on-policy trace (problem 366) computes 1 +2 -9 +8 -6 +9 (last digit): sentence 2 "Step one adds 2 to
1, giving 3." is a correct computation, sentence 5 "Step four subtracts 6 from 2, giving 7." a planted wrong one
(2 - 6 = 6), corrected by sentence 6; the true answer is 5. The expectations below come from that arithmetic.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from cotscope.cli import main

WRONG_LAST = "Step five adds 9 to 6, giving 1."  # 6 + 9 = 5 (last digit): a wrong final computation
RIGHT_LAST = "Step five adds 9 to 6, giving 5."


class CountingBackend:
    """The organism's backend, counting the rollouts it is asked for (a cached rerun asks for none)."""

    def __init__(self, inner):
        self.inner = inner
        self.asked = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, jobs):
        self.asked += sum(len(j.samples) for j in jobs)
        return self.inner.generate(jobs)


def _backend(batch_size=512):
    from resampling import make_backend_from_options

    return CountingBackend(make_backend_from_options("organism:arith", "hf", (), batch_size, "cpu"))


@pytest.fixture(scope="module")
def setup():
    from anchors._pipeline import DEFAULT_TRACE_SEED, onpolicy_trace, sampling_defaults, sampling_params

    be = _backend()
    sampling, _ = sampling_defaults("organism:arith")
    params, _ = sampling_params(sampling)
    trace, _ = onpolicy_trace(be.inner, "organism:arith", DEFAULT_TRACE_SEED, max_new_tokens=160)
    return be, trace, params


def _sentences(trace):
    import cot

    return [s.text for s in cot.split_sentences(trace.cot, min_chars=10)]


def test_the_trace_is_the_one_the_expectations_are_written_for(setup):
    _, trace, _ = setup
    s = _sentences(trace)
    assert s[2] == "Step one adds 2 to 1, giving 3."
    assert s[5] == "Step four subtracts 6 from 2, giving 7."
    assert s[6].startswith("Wait, 2 minus 6 is not 7")
    assert s[7] == RIGHT_LAST
    assert str(trace.metadata["gt_answer"]) == "5"


def test_off_policy_insertion_changes_the_answer_as_the_arithmetic_says(setup, tmp_path):
    from anchors import intervene

    be, trace, params = setup
    wrong = intervene(
        be, trace, 7, WRONG_LAST, on_policy=False, samples=12, params=params, cache_dir=tmp_path
    )
    right = intervene(
        be, trace, 7, RIGHT_LAST, on_policy=False, samples=12, params=params, cache_dir=tmp_path
    )
    # an inserted wrong last step: the answer is its digit unless the model corrects it (back to 5)
    assert set(wrong["off_policy"]["answers"]) <= {"1", "5"}
    assert wrong["off_policy"]["answers"].get("1", {"count": 0})["count"] >= 1
    assert right["off_policy"]["answers"]["5"]["count"] == 12
    assert right["off_policy"]["accuracy"] == 1.0
    lo, hi = wrong["off_policy"]["accuracy_ci"]
    assert lo <= wrong["off_policy"]["accuracy"] <= hi
    assert wrong["text"] == WRONG_LAST and wrong["original"] == RIGHT_LAST


def test_log_probability_marks_off_policy_text(setup):
    from anchors import text_logprob
    from resampling import TracePrefixes

    be, trace, _ = setup
    prefix = TracePrefixes.build(trace, be.tokenizer).prefix_ids(7)
    own = text_logprob(be, prefix, RIGHT_LAST)
    odd = text_logprob(be, prefix, "Step five adds 9 to 6, giving 5. Banana")
    assert own["sum"] < 0 and own["mean"] == pytest.approx(own["sum"] / own["n_tokens"])
    assert odd["sum"] < own["sum"] - 3  # a text the organism never writes is far less likely


def test_on_policy_search_finds_the_text_and_counts_its_resamples(setup, tmp_path):
    from anchors import intervene
    from resampling import Engine, SamplingParams, SamplingRequest, TracePrefixes, request_seed
    from resampling._engine import first_sentence

    be, trace, params = setup
    r = intervene(be, trace, 7, WRONG_LAST, off_policy=True, samples=8, params=params, cache_dir=tmp_path)
    s = r["on_policy"]
    assert s["found"] and s["sentence"] == WRONG_LAST
    # the count is the index of the first candidate that writes the text, read here from the candidates themselves
    prefixes = TracePrefixes.build(trace, be.tokenizer)
    req = SamplingRequest(
        prompt_ids=tuple(prefixes.prefix_ids(7)),
        n=s["resamples"],
        seed=request_seed(0, 7, "onpolicy_search"),
        params=SamplingParams(temperature=params.temperature, top_p=params.top_p, max_new_tokens=64),
        trace_id=trace.id,
        kind="onpolicy_search",
        position=7,
    )
    from resampling import Plan

    rows = Engine(be, tmp_path, quiet=True).run(Plan([req])).rollouts.sort("sample")
    firsts = [first_sentence(t) for t in rows["text"].to_list()]
    assert firsts[-1] == WRONG_LAST and WRONG_LAST not in firsts[:-1]
    assert s["distribution"]["n"] == 8
    assert set(s["distribution"]["answers"]) <= {"1", "5"}


def test_on_policy_search_reports_a_text_the_model_never_writes(setup, tmp_path):
    from anchors import intervene

    be, trace, params = setup
    r = intervene(
        be, trace, 7, "Step five adds 9 to 6, giving 77.", off_policy=False, samples=4, params=params,
        max_resamples=30, batch=16, cache_dir=tmp_path,
    )  # fmt: skip
    s = r["on_policy"]
    assert not s["found"] and s["resamples"] == 30 and "distribution" not in s
    assert "off_policy" not in r


def test_interventions_do_not_depend_on_the_batch_size(setup, tmp_path):
    from anchors import intervene

    _, trace, params = setup
    kw = dict(samples=6, params=params, max_resamples=200)
    a = intervene(_backend(512), trace, 7, WRONG_LAST, cache_dir=tmp_path / "a", **kw)
    b = intervene(_backend(3), trace, 7, WRONG_LAST, cache_dir=tmp_path / "b", **kw)
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_resilience_follows_the_planted_arithmetic_and_resumes(setup, tmp_path):
    from anchors import iterative_resilience

    be, trace, params = setup
    kw = dict(samples=6, iterations=5, params=params, cache_dir=tmp_path)
    be.asked = 0
    r = iterative_resilience(be, trace, [2, 5, 6], **kw)
    first = be.asked
    rows = {row["sentence"]: row for row in r.rows}
    # a correct computation is recomputed whenever it is resampled: it comes back every round, never removed
    assert rows[2]["resilience"] == 5 and rows[2]["n_removed"] == 0
    # the planted wrong result is rarely written again: removed in (nearly) every chain
    assert rows[5]["resilience"] <= 1 and rows[5]["n_removed"] >= 5
    # the correction fixes the answer: removing it for good lowers accuracy
    assert rows[6]["n_removed"] >= 1 and rows[6]["cfpp_accuracy"] > 0.3
    assert all(0 <= c["returns"] <= 5 and c["rounds"] <= 5 for c in r.chains)
    assert first > 0
    be.asked = 0
    again = iterative_resilience(be, trace, [2, 5, 6], **kw)
    assert be.asked == 0  # every round was cached
    assert again.chains == r.chains
    assert json.dumps(again.rows, default=str) == json.dumps(r.rows, default=str)


def test_counterfactual_pp_needs_min_removed_chains(setup, tmp_path):
    import math

    from anchors import MIN_REMOVED, iterative_resilience
    from anchors._branches_cli import resilience_command
    from anchors._options import ImportanceOptions

    be, trace, params = setup
    kw = dict(samples=6, iterations=5, params=params, cache_dir=tmp_path)
    assert MIN_REMOVED == ImportanceOptions().min_different == 5
    default = {p.name: p.default for p in resilience_command.params}["min_removed"]
    assert default == MIN_REMOVED
    rows = {row["sentence"]: row for row in iterative_resilience(be, trace, [2, 6], **kw).rows}
    # a correct computation is never removed: no counterfactual++ (the accuracies it would compare stay reported)
    assert (
        rows[2]["n_removed"] == 0 and math.isnan(rows[2]["cfpp_accuracy"]) and math.isnan(rows[2]["cfpp_kl"])
    )
    n = rows[6]["n_removed"]
    assert (
        n >= MIN_REMOVED
        and rows[6]["cfpp_accuracy"] == rows[6]["accuracy_kept"] - rows[6]["accuracy_removed"]
    )
    # one chain more than were removed: undefined, and nothing else changes
    above = {
        row["sentence"]: row for row in iterative_resilience(be, trace, [2, 6], min_removed=n + 1, **kw).rows
    }
    assert math.isnan(above[6]["cfpp_accuracy"]) and math.isnan(above[6]["cfpp_kl"])
    assert above[6]["n_removed"] == n and above[6]["accuracy_removed"] == rows[6]["accuracy_removed"]
    exact = {row["sentence"]: row for row in iterative_resilience(be, trace, [6], min_removed=n, **kw).rows}
    assert exact[6]["cfpp_kl"] == rows[6]["cfpp_kl"]
    with pytest.raises(ValueError, match="min_removed must be at least 1"):
        iterative_resilience(be, trace, [6], min_removed=0, **kw)


def test_resilience_does_not_depend_on_the_batch_size(setup, tmp_path):
    from anchors import iterative_resilience

    _, trace, params = setup
    kw = dict(samples=4, iterations=4, params=params)
    a = iterative_resilience(_backend(512), trace, [5, 6], cache_dir=tmp_path / "a", **kw)
    b = iterative_resilience(_backend(2), trace, [5, 6], cache_dir=tmp_path / "b", **kw)
    assert a.chains == b.chains


def test_cli_commands_write_json(tmp_path):
    err = io.StringIO()
    out = tmp_path / "iv.json"
    with contextlib.redirect_stderr(err):
        code = main(
            ["intervene", "--at", "7", "--text", WRONG_LAST, "--samples", "4", "--device", "cpu", "--out", str(out),
             "--cache", str(tmp_path / "c")]
        )  # fmt: skip
    assert code == 0, err.getvalue()
    data = json.loads(out.read_text())
    assert data["off_policy"]["n"] == 4 and "on_policy" not in data
    assert "rollouts without intervention" in err.getvalue()  # the cost, up front
    res = tmp_path / "res.json"
    with contextlib.redirect_stderr(err):
        code = main(
            ["resilience", "--at", "5", "--samples", "3", "--iterations", "3", "--device", "cpu", "--out", str(res),
             "--cache", str(tmp_path / "c")]
        )  # fmt: skip
    assert code == 0, err.getvalue()
    data = json.loads(res.read_text())
    assert [s["sentence"] for s in data["sentences"]] == [5] and len(data["chains"]) == 3
    assert "at most" in err.getvalue()
    # 3 chains cannot reach the counterfactual++ floor: said before sampling, and the values are undefined
    assert "cannot reach --min-removed 5" in err.getvalue() and data["sentences"][0]["cfpp_accuracy"] is None


def test_validation_helpers_follow_the_organism_templates():
    from anchors._validate_branches import _corrected, _wrong_version

    # the smallest digit that is neither the correct result (5) nor the true running digit (0)
    assert _wrong_version("Step five adds 9 to 6, giving 5.", 5, {0}) == "Step five adds 9 to 6, giving 1."
    assert _wrong_version("Step one adds 2 to 1, giving 3.", 3, set()) == "Step one adds 2 to 1, giving 0."
    dist = {"first_sentences": ["Wait, 6 plus 9 is not 1, it is 5.", "So the final digit is 1.", None]}
    assert _corrected(dist) == [1, 2]


def test_validate_branches_is_registered():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["validate", "branches", "--help"])
    assert code == 0 and "--iterations" in out.getvalue()


# -- a judge decides whether the content came back (--match judge) ------------------------------------------------


class _Verdicts:
    """A stand-in judge model: every candidate gets ``verdict``; counts the prompts it is asked."""

    def __init__(self, verdict):
        self.verdict, self.prompts = verdict, []

    def __call__(self, prompts):
        self.prompts += prompts
        return [json.dumps({str(i): self.verdict for i in range(300)}) for _ in prompts]


@pytest.mark.parametrize("verdict", [True, False])
def test_a_content_judge_decides_what_comes_back(setup, tmp_path, verdict):
    from anchors import iterative_resilience
    from anchors._labeller import ContentJudge

    be, trace, params = setup
    judge = _Verdicts(verdict)
    r = iterative_resilience(
        be,
        trace,
        [2, 5],
        samples=3,
        iterations=4,
        params=params,
        cache_dir=tmp_path,
        embed=ContentJudge(judge),
    )
    rows = {row["sentence"]: row for row in r.rows}
    # the judge, not the embedder, decides: the content comes back every round or never, whatever the text
    for i in (2, 5):
        assert rows[i]["resilience"] == (4 if verdict else 0)
        assert rows[i]["n_removed"] == (0 if verdict else 3)
    assert judge.prompts and all("Target sentence:" in p for p in judge.prompts)
    assert _sentences(trace)[5] in judge.prompts[-1] or _sentences(trace)[2] in judge.prompts[-1]


def test_a_judge_reply_without_every_verdict_is_an_error():
    from anchors._labeller import ContentJudge

    judge = ContentJudge(lambda prompts: ['Thinking {"0": true} done'] * len(prompts))
    assert judge.match("a", ["b"]) == [True]
    with pytest.raises(ValueError, match="candidates 0-1"):
        judge.match("a", ["b", "c"])


def test_match_judge_without_its_server_is_refused_before_the_model_loads(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["resilience", "--at", "2", "--match", "judge", "--judge-model", "m", "--device", "cpu"])
    assert code == 2 and "--judge-base-url" in err.getvalue()

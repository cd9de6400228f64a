import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from cot import answers_equivalent
from resampling import Completion, Engine, SamplingParams, TracePrefixes
from resampling._hf import HFBackend


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    d = tmp_path_factory.mktemp("tiny-model")
    tiny_model.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory, tiny_trace):
    return tiny_trace.save(tmp_path_factory.mktemp("trace") / "trace.json")


def resample_cmd(model_dir, trace_file, out, *extra):
    return [
        sys.executable,
        "-m",
        "cotscope.cli",
        "resample",
        "--model",
        str(model_dir),
        "--trace",
        str(trace_file),
        "--samples",
        "40",
        "--seed",
        "3",
        "--out",
        str(out),
        "--max-new-tokens",
        "48",
        "--temperature",
        "1.0",
        "--min-chars",
        "0",
        "--quiet",
        *extra,
    ]


@pytest.mark.slow
def test_killed_resample_resumes_to_the_same_rows(model_dir, trace_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(
        resample_cmd(model_dir, trace_file, interrupted, "--batch-size", "4", "--flush-every", "4"), env=env
    )
    deadline = time.monotonic() + 120
    shards = []
    while time.monotonic() < deadline and proc.poll() is None:
        shards = list((interrupted / ".cache").glob("*/part-*.parquet"))
        if len(shards) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted; give it more work"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (interrupted / "rollouts.parquet").exists()
    partial = pl.concat([pl.read_parquet(s) for s in (interrupted / ".cache").glob("*/part-*.parquet")])
    assert 0 < partial.height < 6 * 40

    done = subprocess.run(
        resample_cmd(model_dir, trace_file, interrupted, "--batch-size", "64"), env=env, check=True
    )
    assert done.returncode == 0
    clean = tmp_path / "clean"
    subprocess.run(resample_cmd(model_dir, trace_file, clean), env=env, check=True)

    a = pl.read_parquet(interrupted / "rollouts.parquet")
    b = pl.read_parquet(clean / "rollouts.parquet")
    assert a.height == b.height == 6 * 40
    assert a.select("request_id", "sample").is_duplicated().sum() == 0
    assert a.equals(b), "the resumed run must equal an uninterrupted one row for row"
    stats = json.loads((interrupted / "run.json").read_text())["stats"]
    assert 0 < stats["rollouts_cached"] < 240 and stats["rollouts_new"] == 240 - stats["rollouts_cached"]


class FlakyBackend:
    """Wraps a backend and fails the samples whose index is in ``fail``."""

    name = "flaky"

    def __init__(self, inner, fail):
        self.inner, self.fail = inner, set(fail)

    def identity(self):
        return self.inner.identity()

    def generate(self, jobs):
        for job, comps in self.inner.generate(jobs):
            yield (
                job,
                [
                    Completion(sample=c.sample, seed=c.seed, error="HTTP 500: injected")
                    if c.sample in self.fail
                    else c
                    for c in comps
                ],
            )


def test_failed_rollouts_are_stored_as_errors_and_retried(tiny_model, tiny_tokenizer, tiny_trace, tmp_path):
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    plan = tp.plan(n=4, seed=1, params=SamplingParams(max_new_tokens=10))
    good = HFBackend(tiny_model, tiny_tokenizer)
    first = Engine(FlakyBackend(good, fail={1, 3}), tmp_path / "cache", quiet=True).run(plan)
    errors = first.rollouts.filter(pl.col("status") == "error")
    assert errors.height == 2 * tp.n_positions
    assert errors["text"].null_count() == errors.height and errors["answer"].null_count() == errors.height
    assert set(errors["error"]) == {"HTTP 500: injected"}
    second = Engine(good, tmp_path / "cache", quiet=True).run(plan)
    assert second.stats["rollouts_new"] == 2 * tp.n_positions
    assert set(second.rollouts["status"]) == {"ok"}
    clean = Engine(good, tmp_path / "other-cache", quiet=True).run(plan)
    assert second.rollouts.equals(clean.rollouts)


def test_more_samples_reuse_the_cache(tiny_model, tiny_tokenizer, tiny_trace, tmp_path):
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    backend = HFBackend(tiny_model, tiny_tokenizer)
    params = SamplingParams(max_new_tokens=6)
    small = Engine(backend, tmp_path, quiet=True).run(tp.plan(n=2, params=params, positions=[1]))
    big = Engine(backend, tmp_path, quiet=True).run(tp.plan(n=2, params=params, positions=[1]).with_params())
    assert big.stats["rollouts_new"] == 0 and big.rollouts.equals(small.rollouts)
    other = Engine(backend, tmp_path, quiet=True).run(
        tp.plan(n=2, params=SamplingParams(max_new_tokens=7), positions=[1])
    )
    assert other.stats["rollouts_new"] == 2, "changed sampling parameters must not reuse rows"
    # more samples, another position and forced probes: only what is new is computed
    more = Engine(backend, tmp_path, quiet=True).run(
        tp.plan(n=4, params=params, positions=[1, 2], forced_answer=True)
    )
    assert more.stats["rollouts_new"] == 4 * 2 * 2 - 2
    kept = more.rollouts.filter(
        (pl.col("kind") == "resample") & (pl.col("position") == 1) & (pl.col("sample") < 2)
    )
    assert kept.equals(small.rollouts)
    # and equal to a run from an empty cache
    fresh = Engine(backend, tmp_path / "empty", quiet=True).run(
        tp.plan(n=4, params=params, positions=[1, 2], forced_answer=True)
    )
    assert fresh.rollouts.equals(more.rollouts)


class AnsweringBackend(FlakyBackend):
    """The random model's completions, each ending in a boxed answer (the sample index mod 2) and finished: a
    random model's own short texts, cut off at max_new_tokens, hold no answer to grade."""

    def generate(self, jobs):
        for job, comps in self.inner.generate(jobs):
            yield (
                job,
                [
                    dataclasses.replace(
                        c, text=f"{c.text}</think> \\boxed{{{c.sample % 2}}}", finish_reason="stop"
                    )
                    for c in comps
                ],
            )


def test_grades_follow_the_truths_of_each_run(tiny_model, tiny_tokenizer, tiny_trace, tmp_path):
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    backend = AnsweringBackend(HFBackend(tiny_model, tiny_tokenizer), ())
    plan = tp.plan(n=3, params=SamplingParams(max_new_tokens=6), positions=[1], forced_answer=True)
    ungraded = Engine(backend, tmp_path, quiet=True).run(plan, truths={})  # {}: grade nothing
    assert ungraded.rollouts["correct"].null_count() == ungraded.rollouts.height
    answers = ungraded.rollouts["answer"].to_list()
    truth = next((a for a in answers if a is not None), "42")
    graded = Engine(backend, tmp_path, quiet=True).run(plan, truths={tp.trace.id: truth})
    assert graded.stats["rollouts_new"] == 0
    expected = [a is not None and answers_equivalent(a, truth) for a in answers]
    assert True in expected
    assert graded.rollouts["correct"].to_list() == expected


def test_cli_bad_input_errors_before_work(model_dir, trace_file, tmp_path):
    cases = [
        (["--model", "organism:arithh"], "did you mean 'organism:arith'"),
        (["--model", str(tmp_path)], "config.json"),
        (["--positions", "99"], "out of range"),
        (["--backend", "vlm"], "vllm"),
    ]
    for extra, needle in cases:
        cmd = resample_cmd(model_dir, trace_file, tmp_path / "o") + extra
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, (extra, proc.stderr)
        assert not (tmp_path / "o" / "rollouts.parquet").exists()


def test_a_numeric_true_answer_grades_like_its_text():
    from resampling import ROLLOUT_SCHEMA
    from resampling._engine import grade

    row = dict.fromkeys(ROLLOUT_SCHEMA)
    rows = [
        {**row, "trace_id": "t", "kind": "resample", "status": "ok", "text": "x </think> \\boxed{6}"},
        {**row, "trace_id": "t", "kind": "resample", "status": "ok", "text": "x </think> \\boxed{7}"},
        {**row, "trace_id": "t", "kind": "resample", "status": "error", "text": None},
    ]
    table = pl.DataFrame(rows, schema=ROLLOUT_SCHEMA)
    assert grade(table, {"t": 6})["correct"].to_list() == [True, False, None]
    assert grade(table, {"t": "6"})["correct"].to_list() == [True, False, None]


def test_a_rollout_cut_off_before_its_answer_has_none_and_is_not_graded():
    """finish_reason "length" without </think>: "the answer is probably 12, but" is no answer, and not graded."""
    from resampling import ROLLOUT_SCHEMA, Completion, SamplingParams, SamplingRequest, rollout_row
    from resampling._engine import grade

    row = dict.fromkeys(ROLLOUT_SCHEMA)
    cut = "So the answer is probably 12, but"
    rows = [
        {**row, "trace_id": "t", "kind": "resample", "status": "ok", "text": cut, "finish_reason": "length"},
        {**row, "trace_id": "t", "kind": "resample", "status": "ok", "text": cut, "finish_reason": "stop"},
        # cut after </think>, inside the box: the reasoning's "answer is 12" is not the answer
        {
            **row,
            "trace_id": "t",
            "kind": "resample",
            "status": "ok",
            "text": "answer is 12. </think> \\boxed{1",
            "finish_reason": "length",
        },
        {
            **row,
            "trace_id": "t",
            "kind": "resample",
            "status": "ok",
            "text": "x </think> \\boxed{12}",
            "finish_reason": "length",
        },
        {
            **row,
            "trace_id": "t",
            "kind": "forced_answer",
            "status": "ok",
            "text": "1",
            "finish_reason": "length",
        },
        {
            **row,
            "trace_id": "t",
            "kind": "forced_answer",
            "status": "ok",
            "text": "12}",
            "finish_reason": "length",
        },
    ]
    graded = grade(pl.DataFrame(rows, schema=ROLLOUT_SCHEMA), {"t": "12"})
    assert graded["answer"].to_list() == [None, "probably 12", None, "12", None, "12"]
    assert graded["correct"].to_list() == [None, False, None, True, None, True]
    req = SamplingRequest(prompt_ids=(1, 2), n=1, seed=0, params=SamplingParams(), trace_id="t")
    stored = rollout_row(
        req, Completion(sample=0, seed=0, token_ids=[3], text=cut, finish_reason="length"), "12"
    )
    assert stored["answer"] is None and stored["correct"] is None


def test_a_plan_is_graded_by_default_against_its_traces_answer(
    tiny_model, tiny_tokenizer, tiny_trace, tmp_path
):
    """As in docs/engine.md: ``Engine(...).run(plan)`` grades against the trace's gt_answer (else its own answer)."""
    import copy

    trace = copy.deepcopy(tiny_trace)
    trace.metadata["gt_answer"] = "1"
    tp = TracePrefixes.build(trace, tiny_tokenizer, min_chars=0)
    backend = AnsweringBackend(HFBackend(tiny_model, tiny_tokenizer), ())
    plan = tp.plan(n=4, params=SamplingParams(max_new_tokens=6), positions=[1])
    assert plan.meta["truths"] == {trace.id: "1"}
    rows = Engine(backend, tmp_path, quiet=True).run(plan).rollouts
    assert rows["correct"].null_count() == 0
    assert rows["correct"].to_list() == [a == "1" for a in rows["answer"].to_list()]
    assert (plan + plan.with_params(max_new_tokens=7)).meta["truths"] == {trace.id: "1"}


class _Watched:
    """Wraps a backend: records the jobs in the order they are handed over, fails every sample of the traces in
    ``fail``, and counts the jobs yielded so far."""

    name = "watched"

    def __init__(self, inner, fail=()):
        self.inner, self.fail, self.order, self.yielded = inner, set(fail), [], 0

    def identity(self):
        return self.inner.identity()

    def generate(self, jobs):
        self.order = list(jobs)
        for job, comps in self.inner.generate(jobs):
            if job.route in self.fail:
                comps = [Completion(sample=c.sample, seed=c.seed, error="HTTP 500: injected") for c in comps]
            self.yielded += 1
            yield job, comps


def test_fill_reports_each_plan_once_all_its_rows_are_stored(
    tiny_model, tiny_tokenizer, tiny_trace, tmp_path, monkeypatch
):
    """``Engine.fill(on_plan_done=)``: a cached plan at once, a sampled plan as soon as its last row is stored
    (before the pass ends: the short probes go first, then each trace's rollouts, with one trace a decode window),
    a plan with a failed row never."""
    import resampling._hf as hf
    from cot import Trace

    monkeypatch.setattr(hf, "ROOT_WINDOW_FRACTION", 0.0)  # one root a window: traces decode one after another
    from resampling._store import RunStore, run_key

    traces = [
        tiny_trace,
        *(
            Trace(
                prompt=f"Compute {a} + {a}.",
                cot=f"First, {a} + {a} is {2 * a}.{tail} So it is {2 * a}.",
                answer_text=f"The answer is \\boxed{{{2 * a}}}.",
                metadata={"gt_answer": str(2 * a)},
            )
            # the backend takes the trace with the longest prefix first: trace 1, whose rows then end first
            for a, tail in ((3, " Let me check that again, slowly and carefully."), (4, ""))
        ),
    ]
    plans = [
        TracePrefixes.build(t, tiny_tokenizer, min_chars=0).plan(
            2,
            10 * k,
            SamplingParams(temperature=1.0, max_new_tokens=6),
            forced_answer=True,
            forced_params=SamplingParams(temperature=1.0, max_new_tokens=2),
        )
        for k, t in enumerate(traces)
    ]
    good = HFBackend(tiny_model, tiny_tokenizer, batch_size=4)  # several batches, so traces end one by one
    Engine(good, tmp_path, quiet=True).run(plans[0])  # trace 0 is cached
    backend = _Watched(good, fail={traces[2].id})
    calls = []

    def done(k):
        store = RunStore(tmp_path, run_key(good.identity(), [traces[k].id]))
        ok = store.load().filter(pl.col("status") == "ok").height
        calls.append((k, backend.yielded, ok))

    Engine(backend, tmp_path, quiet=True).fill(plans, on_plan_done=done)
    total = len(backend.order)
    budgets = [j.params.max_new_tokens for j in backend.order]
    assert budgets == sorted(budgets) and budgets[0] < budgets[-1]
    assert [k for k, _, _ in calls] == [0, 1]
    assert calls[0][1] == 0 and calls[0][2] == plans[0].n_rollouts
    assert 0 < calls[1][1] < total and calls[1][2] == plans[1].n_rollouts
    failed = RunStore(tmp_path, run_key(good.identity(), [traces[2].id])).load()
    assert failed.height == plans[2].n_rollouts and set(failed["status"]) == {"error"}


def test_a_run_with_every_row_cached_makes_no_backend_call(tiny_model, tiny_tokenizer, tiny_trace, tmp_path):
    """A cached trace is scored (its run reads the store) while a dataset pass may be using the backend: the run
    must not call it at all."""

    class Refuses:
        name = "refuses"

        def __init__(self, inner):
            self.inner = inner

        def identity(self):
            return self.inner.identity()

        def generate(self, jobs):
            raise AssertionError(f"generate called with {len(jobs)} jobs")

    plan = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0).plan(n=2, seed=3)
    good = HFBackend(tiny_model, tiny_tokenizer)
    first = Engine(good, tmp_path, quiet=True).run(plan)
    again = Engine(Refuses(good), tmp_path, quiet=True).run(plan)
    assert again.stats["rollouts_new"] == 0 and again.rollouts.equals(first.rollouts)

"""Importance over a dataset of traces (anchors._study_run, ``cotscope importance --traces/--n-traces``) on the
shipped arith organism: one engine pass, the same rows as single-trace runs, resumable, failures skipped."""

from __future__ import annotations

import json
import threading

import polars as pl
import pytest

from anchors._blackbox import ImportanceOptions
from anchors._pipeline import compute_importance, sampling_defaults, sampling_params
from anchors._study_run import load_traces, onpolicy_traces, run_study
from cot import Trace

SAMPLES = 4
OPTIONS = ImportanceOptions(min_different=2, n_bootstrap=50, n_permutations=50)


@pytest.fixture(scope="module")
def setup():
    from resampling import make_backend

    be = make_backend("hf", model_id="organism:arith")
    sampling, _ = sampling_defaults("organism:arith")
    params, forced = sampling_params(sampling)
    traces = onpolicy_traces(be, "organism:arith", 3, 0, sampling)
    return be, traces, params, forced


def _run(setup, traces, cache, backend=None, **kw):
    be, _, params, forced = setup
    be = backend or be
    return run_study(
        be,
        traces,
        samples=SAMPLES,
        seed=0,
        params=params,
        forced_params=forced,
        cache_dir=cache,
        options=OPTIONS,
        **kw,
    )


class _Interrupted(Exception):
    pass


class _Wrapped:
    """A backend seen through a wrapper: everything but what the wrapper defines comes from the backend."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(self.backend, name)


class _DiesAfter(_Wrapped):
    """The backend, killed after ``n`` jobs have come back (what kill -9 leaves: the shards written so far)."""

    def __init__(self, backend, n):
        super().__init__(backend)
        self.n = n

    def generate(self, jobs):
        for k, item in enumerate(self.backend.generate(jobs)):
            if k == self.n:
                raise _Interrupted
            yield item


@pytest.mark.slow
def test_dataset_run_equals_single_runs_resumes_and_adds_only_new_traces(setup, tmp_path):
    be, traces, params, forced = setup
    whole = _run(setup, traces, tmp_path / "whole", out=tmp_path / "out")
    assert (
        whole.stats["rollouts_cached"] == 0 and whole.stats["rollouts_new"] == whole.stats["rollouts_planned"]
    )
    assert sorted(set(whole.table["trace_id"].to_list())) == sorted(t.id for t in traces)
    # the same rows as the single-trace pipeline run with the trace's own seed, trace by trace (same cache layout)
    from resampling import trace_seed

    seeds = dict(zip(whole.table["trace_id"].to_list(), whole.table["rollout_seed"].to_list(), strict=True))
    assert seeds == {t.id: trace_seed(0, t.id) for t in traces} and len(set(seeds.values())) == len(traces)
    for t in traces:
        single = compute_importance(
            be,
            t,
            samples=SAMPLES,
            seed=seeds[t.id],
            params=params,
            forced_params=forced,
            cache_dir=tmp_path / "single",
            options=OPTIONS,
            whitebox=False,
        )
        mine = whole.table.filter(pl.col("trace_id") == t.id).drop("trace_id", "base_correct", "rollout_seed")
        assert mine.equals(single.table.select(mine.columns))
    # killed in the middle, then rerun: the same rows, and only the missing rollouts are sampled
    dying = _DiesAfter(be, 3)
    with pytest.raises(_Interrupted):
        _run(setup, traces, tmp_path / "killed", backend=dying, flush_every=1)
    again = _run(setup, traces, tmp_path / "killed")
    assert 0 < again.stats["rollouts_cached"] < again.stats["rollouts_planned"]
    assert again.table.equals(whole.table)
    # a dataset that grows samples only the new trace
    first = _run(setup, traces[:2], tmp_path / "grow")
    grown = _run(setup, traces, tmp_path / "grow")
    assert grown.stats["rollouts_cached"] == first.stats["rollouts_planned"]
    assert grown.stats["rollouts_new"] == grown.stats["rollouts_planned"] - first.stats["rollouts_planned"]
    # outputs: per-trace folders and the study at the top
    out = tmp_path / "out"
    table = pl.read_parquet(out / "importance.parquet")
    assert table["trace_id"].null_count() == 0 and table.height == whole.table.height
    for t in traces:
        assert (out / "traces" / t.id / "report.html").is_file()
        assert (out / "traces" / t.id / "rollouts.parquet").is_file()
    assert pl.read_parquet(out / "aggregate.parquet").height > 0
    assert json.loads((out / "run.json").read_text())["traces"] == 3


@pytest.mark.slow
def test_each_trace_keeps_its_own_embeddings_and_single_runs_reuse_them(setup, tmp_path, monkeypatch):
    """One embedding file per trace: a study does not read and rewrite every earlier trace's embeddings at each
    trace (one shared file made that quadratic), and a single-trace run on the same cache embeds nothing again."""
    import cot
    from anchors._embedding import TextEmbeddings

    be, traces, params, forced = setup
    seen: list[str] = []
    calls = []
    real = cot.embed_sentences

    def counting(texts, **kw):
        seen.extend(texts)
        calls.append(len(texts))
        return real(texts, **kw)

    monkeypatch.setattr(cot, "embed_sentences", counting)
    _run(setup, traces, tmp_path / "study")
    files = sorted((tmp_path / "study").glob("embeddings.*/*.npz"))
    assert len(files) == len(traces)
    assert not list((tmp_path / "study").glob("embeddings.*.npz"))  # no file shared by all traces
    per_file = {f.name: set(TextEmbeddings(cache=f)._index) for f in files}
    assert set().union(*per_file.values()) == set(seen)
    # a sentence in several traces' files was embedded once for the whole run (anchors._embedding.DatasetEmbeddings)
    assert sum(len(texts) for texts in per_file.values()) > len(set(seen))
    assert len(seen) == len(set(seen))
    # the three traces are scored as one group: their sentences go to the embedder in one call, not two per trace
    assert len(calls) == 1

    def single(trace, cache):
        return compute_importance(
            be, trace, samples=SAMPLES, seed=_seed(trace), params=params, forced_params=forced,
            cache_dir=cache, options=OPTIONS, whitebox=False,
        )  # fmt: skip

    before = len(seen)
    single(
        traces[1], tmp_path / "study"
    )  # the study's rows and embeddings: nothing sampled, nothing embedded
    assert len(seen) == before
    single(
        traces[1], tmp_path / "alone"
    )  # alone in a fresh cache it embeds exactly what its study file holds
    (alone,) = (tmp_path / "alone").glob("embeddings.*/*.npz")
    assert set(TextEmbeddings(cache=alone)._index) in per_file.values()
    assert set(TextEmbeddings(cache=alone)._index) == set(seen[before:])


def _seed(trace):
    from resampling import trace_seed

    return trace_seed(0, trace.id)


class _Watched(_Wrapped):
    """The backend, noting in ``events`` when its last completion has come back."""

    def __init__(self, backend, events):
        super().__init__(backend)
        self.events = events

    def generate(self, jobs):
        yield from self.backend.generate(jobs)
        if jobs:  # each trace's own run asks for its (empty) rest too
            self.events.append(("sampled", threading.current_thread().name))


@pytest.mark.slow
def test_traces_are_scored_while_the_rest_are_sampled(setup, tmp_path, monkeypatch):
    """A trace is scored in a worker thread as soon as its rollouts are stored, before the engine pass ends, with
    the rows scoring after the pass gives; white-box columns (they run the model) are added after the pass, in the
    caller's thread, and equal a single-trace run's; a labeller object (a judge runs an engine of its own) keeps
    all scoring after the pass."""
    import anchors._pipeline as pipeline
    import resampling._hf as hf
    from resampling import make_backend

    be, traces, params, forced = setup
    backend = make_backend("hf", model_id="organism:arith", batch_size=8)  # several batches: traces end apart
    monkeypatch.setattr(hf, "ROOT_WINDOW_FRACTION", 0.0)  # one trace a decode window: traces decode in turn
    events = []
    scoring, whitebox = pipeline.compute_importance, pipeline.add_whitebox

    def watched(*args, **kw):
        events.append(("scored", threading.current_thread().name))
        return scoring(*args, **kw)

    def watched_whitebox(*args, **kw):
        events.append(("whitebox", threading.current_thread().name))
        return whitebox(*args, **kw)

    monkeypatch.setattr(pipeline, "compute_importance", watched)
    monkeypatch.setattr(pipeline, "add_whitebox", watched_whitebox)
    during = _run(  # groups of two traces: the first is scored during the pass, the last trace after it
        setup, traces, tmp_path / "during", backend=_Watched(backend, events), whitebox=True, embed_group=2
    )
    end = events.index(("sampled", "MainThread"))
    early = [name for kind, name in events[:end] if kind == "scored"]
    assert early and all(name.startswith("cotscope-score") for name in early)
    # every white-box step after the pass, in the caller's thread (the worker may still score later traces black-box
    # meanwhile: that reads the cache and never the model)
    white = [i for i, e in enumerate(events) if e[0] == "whitebox"]
    assert len(white) == len(traces) and min(white) > end
    assert {events[i] for i in white} == {("whitebox", "MainThread")}
    assert during.table["receiver_score"].is_not_null().all()
    single = scoring(
        be, traces[1], samples=SAMPLES, seed=_seed(traces[1]), params=params, forced_params=forced,
        cache_dir=tmp_path / "during", options=OPTIONS, whitebox=True,
    )  # fmt: skip
    mine = during.table.filter(pl.col("trace_id") == traces[1].id).drop(
        "trace_id", "base_correct", "rollout_seed"
    )
    assert mine.equals(single.table.select(mine.columns))
    events.clear()
    after = _run(setup, traces, tmp_path / "after", backend=_Watched(backend, events), overlap=False)
    assert events == [("sampled", "MainThread")] + [("scored", "MainThread")] * len(traces)
    assert after.table.equals(during.table.drop("receiver_score", "suppression_outgoing"))
    from cot._role_model import LearnedLabeller

    events.clear()
    judged = _run(
        setup, traces, tmp_path / "judged", backend=_Watched(backend, events), roles=LearnedLabeller()
    )
    assert events == [("sampled", "MainThread")] + [("scored", "MainThread")] * len(traces)
    assert judged.table.equals(after.table)


@pytest.mark.slow
def test_failing_traces_are_skipped_with_reasons(setup, tmp_path):
    _, traces, _, _ = setup
    no_answer = Trace(prompt="What is 2+2?", cot="I think about it. Then I stop.", metadata={})
    assert no_answer.answer is None
    too_long = Trace(prompt=traces[0].prompt, cot="I add one. " * 400, metadata={"gt_answer": "1"})
    run = _run(setup, [traces[0], no_answer, too_long], tmp_path / "c")
    reasons = {s["trace"]: s["reason"] for s in run.skipped}
    assert reasons[no_answer.id].startswith("no answer")
    assert reasons[too_long.id].startswith("context too long")
    assert set(run.table["trace_id"].to_list()) == {traces[0].id}


def test_load_traces_reads_jsonl_folders_and_reports_bad_entries(tmp_path):
    good = Trace(
        prompt="Q", cot="A step. Another step.", answer_text="\\boxed{3}", metadata={"gt_answer": "3"}
    )
    lines = [json.dumps(good.to_dict()), "{not json", ""]
    (tmp_path / "t.jsonl").write_text("\n".join(lines))
    traces, bad = load_traces(tmp_path / "t.jsonl")
    assert [t.id for t in traces] == [good.id] and bad[0]["trace"] == "t.jsonl:2"
    folder = tmp_path / "many"
    folder.mkdir()
    good.save(folder / "a.json")
    (folder / "b.json").write_text("[]")
    traces, bad = load_traces(folder)
    assert [t.id for t in traces] == [good.id] and bad[0]["trace"] == "b.json"


def test_importance_takes_one_source_of_traces(tmp_path):
    from click.testing import CliRunner

    from anchors._main import importance

    (tmp_path / "t.jsonl").write_text("")
    result = CliRunner().invoke(
        importance, ["--n-traces", "2", "--traces", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o")]
    )
    assert (
        result.exit_code == 2 and "give one of --trace FILE, --traces PATH and --n-traces N" in result.output
    )
    result = CliRunner().invoke(
        importance, ["--traces", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "holds no readable trace" in result.output


@pytest.mark.slow
def test_importance_n_traces_writes_a_study_and_resumes(tmp_path):
    from cotscope.cli import main

    out = tmp_path / "study"
    args = ["importance", "--n-traces", "2", "--samples", "3", "--min-different", "2", "--no-whitebox"]
    assert main([*args, "--out", str(out)]) == 0
    table = pl.read_parquet(out / "importance.parquet")
    assert table["trace_id"].n_unique() == 2
    for trace_id in table["trace_id"].unique():
        assert (out / "traces" / trace_id / "report.html").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["engine"]["rollouts_new"] == run["engine"]["rollouts_planned"] > 0
    assert main([*args, "--out", str(out)]) == 0  # the same run again: everything from the cache
    again = json.loads((out / "run.json").read_text())
    assert again["engine"]["rollouts_new"] == 0
    assert pl.read_parquet(out / "importance.parquet").equals(table)
    # another configuration in the same folder is refused before any work
    assert main([*args, "--seed", "5", "--out", str(out)]) != 0


@pytest.mark.slow
def test_adaptive_dataset_run_equals_single_adaptive_runs_resumes_and_keeps_the_budget(setup, tmp_path):
    from anchors._adaptive import AdaptiveOptions
    from resampling import trace_seed

    be, traces, params, forced = setup
    how = AdaptiveOptions(first=3)
    kw = {"samples": 8, "seed": 0, "params": params, "forced_params": forced, "options": OPTIONS}
    whole = run_study(be, traces, cache_dir=tmp_path / "whole", adaptive=how, out=tmp_path / "out", **kw)
    assert whole.stats["rounds"] >= 2 and whole.stats["rollouts_new"] > 0
    fixed_total, drawn = 0, 0
    for t in traces:
        single = compute_importance(
            be, t, cache_dir=tmp_path / "single", whitebox=False, adaptive=how,
            **{**kw, "seed": trace_seed(0, t.id)},
        )  # fmt: skip
        mine = whole.table.filter(pl.col("trace_id") == t.id).drop("trace_id", "base_correct", "rollout_seed")
        assert "stop_reason" in mine.columns and mine.equals(single.table.select(mine.columns))
        fixed_total += single.stats["adaptive_fixed_rollouts"]
        drawn += single.stats["adaptive_rollouts"]
        written = pl.read_parquet(tmp_path / "out" / "traces" / t.id / "importance.parquet")
        assert {"n_rollouts", "n_forced", "stop_reason"} <= set(written.columns)
    # the adaptive stats of run.json are the traces' summed, and the run drew fewer than a fixed one
    run = json.loads((tmp_path / "out" / "run.json").read_text())["adaptive"]
    assert (
        run["traces"] == 3
        and run["adaptive_rollouts"] == drawn < run["adaptive_fixed_rollouts"] == fixed_total
    )
    assert set(pl.read_parquet(tmp_path / "out" / "importance.parquet")["stop_reason"].to_list()) <= {
        "significant", "not significant", "max samples"
    }  # fmt: skip
    # resumable: the same run again samples nothing and gives the same table
    again = run_study(be, traces, cache_dir=tmp_path / "whole", adaptive=how, **kw)
    assert again.stats["rollouts_new"] == 0 and again.table.equals(whole.table)
    # a budget caps the dataset's total, rollouts and probes together
    capped = run_study(
        be, traces, cache_dir=tmp_path / "cap", adaptive=AdaptiveOptions(first=3, budget=300), **kw
    )
    assert capped.stats["rollouts_new"] <= 300 and "budget" in capped.table["stop_reason"].to_list()


@pytest.mark.slow
def test_importance_adaptive_dataset_from_the_command_line(tmp_path):
    from cotscope.cli import main

    out = tmp_path / "study"
    args = ["importance", "--n-traces", "2", "--samples", "6", "--min-different", "2", "--no-whitebox"]
    assert main([*args, "--adaptive", "--budget", "400", "--out", str(out)]) == 0
    table = pl.read_parquet(out / "importance.parquet")
    assert table["trace_id"].n_unique() == 2 and table["stop_reason"].null_count() == 0
    run = json.loads((out / "run.json").read_text())
    assert run["adaptive"]["adaptive_rollouts"] <= 400 and run["engine"]["rollouts_new"] <= 400
    assert main([*args, "--sparse", "3", "--out", str(tmp_path / "s")]) == 2  # --sparse needs --adaptive


@pytest.mark.slow
def test_bench_study_runs_its_three_arms_on_the_same_rows():
    """``cotscope bench study`` at its smallest: the loop, the dataset run scoring after its pass and the one
    scoring during it give equal tables, and each arm is timed."""
    from anchors.bench_study import format_study_bench, run_study_bench

    report = run_study_bench(n_traces=2, samples=2, repeats=1)
    assert report["same_rows"] and report["sentences"] > 0
    assert sorted(report["times"]) == ["loop", "serial", "study"]
    assert all(len(v) == 1 and v[0] > 0 for v in report["times"].values())
    text = format_study_bench(report)
    assert "scoring after" in text and "scoring meanwhile" in text and "same rows: yes" in text

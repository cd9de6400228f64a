"""Importance over a dataset of traces: one model load, one engine pass for every trace, then the study outputs.

The rollouts of all traces are sampled together (:meth:`resampling.Engine.fill`: positions of different traces
share batches, each prefix is prefilled once), into the cache each trace has on its own, so a rerun after a kill
samples only what is missing and adding traces samples only the new ones. Each trace is then scored exactly as
``cotscope importance --trace`` scores it (its rollouts all come from the cache) and written under
``OUT/traces/<trace_id>/``; the study outputs go to ``OUT``. A trace that cannot be run (it does not fit the
model's context, it has no answer to grade against, its rollouts failed) is skipped with its reason.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["StudyRun", "load_traces", "onpolicy_traces", "run_study"]

EMBED_GROUP = 8
"""Traces a dataset run scores together: the sentences they lack embeddings for go to the model in one call. A
small call costs the bundled MiniLM mostly fixed time on a CPU (one 9-token text: 13 ms; four: 18 ms; sixteen:
34 ms), and scoring one trace alone made two such calls."""

SWITCH_INTERVAL = 1e-4
"""Seconds between the interpreter's thread switches while traces are scored during sampling (the default is
0.005). The sampling thread gives up the GIL at every tensor operation; at the default it then waits up to 5 ms for
the scoring thread's Python to let go, at every one of a decode step's operations. Measured on 20 ``arith`` traces
(2-core CPU, medians of 3): one dataset run 13.3 s scoring after sampling, 12.7 s scoring meanwhile at 5 ms,
11.3-11.5 s at 0.05-0.2 ms."""


@dataclass
class StudyRun:
    """What a dataset run computed."""

    table: pl.DataFrame
    """Every sentence of every scored trace, with ``trace_id`` and ``base_correct``."""
    skipped: list[dict[str, Any]] = field(default_factory=list)
    """``{"trace": id or file, "reason": ...}`` per trace left out."""
    stats: dict[str, Any] = field(default_factory=dict)


def load_traces(path: str | os.PathLike) -> tuple[list[Any], list[dict[str, Any]]]:
    """The traces at ``path``: a JSONL file (one trace a line), a published thought-anchors dataset folder (every
    folder holding ``base_solution.json``), or a folder of trace files (``*.json``, ``*.txt``). Returns the traces
    and the entries that could not be read (with the reason)."""
    from cot import Trace, TraceError, load_trace

    p = Path(path)
    traces, bad = [], []
    if p.is_file():
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                traces.append(Trace.from_dict(json.loads(line), source=f"{p}:{n}"))
            except (ValueError, TypeError, KeyError, TraceError) as exc:
                bad.append({"trace": f"{p.name}:{n}", "reason": f"not a trace ({exc})"})
        return traces, bad
    if not p.is_dir():
        raise FileNotFoundError(
            f"no such file or folder: {p}; give a folder of traces, a JSONL file, or a dataset"
        )
    published = sorted(q.parent for q in p.rglob("base_solution.json"))
    files = published or sorted(q for q in p.iterdir() if q.suffix.lower() in (".json", ".txt", ".jsonl"))
    for f in files:
        try:
            trace = load_trace(f)
        except TraceError as exc:
            bad.append({"trace": str(f.relative_to(p)), "reason": str(exc)})
            continue
        if published:
            from anchors._ta_format import base_correct

            trace.metadata.setdefault("base_correct", base_correct(f))
        traces.append(trace)
    return traces, bad


def onpolicy_traces(backend: Any, model_id: str, n: int, seed: int, sampling: dict[str, Any]) -> list[Any]:
    """``n`` traces the organism writes itself, for its problems ``seed .. seed + n - 1``, in one backend call."""
    import organisms
    from anchors._pipeline import sampling_params
    from resampling import EngineInputError, sample_traces

    if not model_id.startswith("organism:"):
        raise EngineInputError(
            f"model '{model_id}' has no task to draw problems from; give traces with --traces PATH"
        )
    task = organisms.get_task(model_id.split(":", 1)[1])
    seeds = list(range(seed, seed + n))
    examples = [task.sample(s) for s in seeds]
    params = sampling_params(sampling)[0]
    return sample_traces(
        backend,
        backend.tokenizer,
        [e.messages for e in examples],
        seeds,
        params,
        metadata=[
            {"gt_answer": e.answer, "task": task.name, "problem_seed": s}
            for e, s in zip(examples, seeds, strict=True)
        ],
    )


def _base_correct(trace: Any) -> bool | None:
    """Whether the trace's own answer is right, where both it and the true answer are known."""
    from cot import answers_equivalent

    known = trace.metadata.get("base_correct")
    if isinstance(known, bool):
        return known
    truth, own = trace.metadata.get("gt_answer"), getattr(trace, "answer", None)
    if truth is None or own is None:
        return None
    return bool(answers_equivalent(str(own), str(truth)))


def run_study(
    backend: Any,
    traces: list[Any],
    *,
    samples: int,
    seed: int,
    params: Any,
    forced_params: Any,
    cache_dir: str | os.PathLike,
    options: Any = None,
    min_chars: int = 10,
    whitebox: bool = False,
    quiet: bool = True,
    out: str | os.PathLike | None = None,
    notes: dict[str, Any] | None = None,
    header: dict[str, Any] | None = None,
    skipped: list[dict[str, Any]] | None = None,
    flush_every: int = 64,
    roles: Any = "learned",
    adaptive: Any = None,
    overlap: bool = True,
    embed_group: int = EMBED_GROUP,
) -> StudyRun:
    """Sample every trace's rollouts in one engine pass, score each trace, and (with ``out``) write per-trace
    outputs under ``out/traces/<trace_id>/`` and the study outputs at ``out``. Rollouts are stored in shards of
    ``flush_every`` rows as they arrive, so a killed run loses at most that many.

    Seeds: trace t is sampled with ``resampling.trace_seed(seed, t.id)`` (the ``rollout_seed`` column), so the
    rollouts of different traces share no noise (with one seed for all, rollout k at position i of every trace would
    draw from the same noise); ``cotscope importance --trace T --seed <rollout_seed>`` reproduces a trace's rows.

    ``adaptive`` (an :class:`anchors._adaptive.AdaptiveOptions`): rounds over the whole dataset, each one engine
    pass over every trace's still-open positions; each trace is settled as the single-trace adaptive run settles
    it, and ``adaptive.budget`` caps the dataset's total (:func:`_adaptive_fill`).

    ``overlap``: score traces in a worker thread as soon as their rollouts are stored, while the engine samples
    the rest (the rows are the same either way; the hf backend decodes a window of traces together, so those
    finish together: every trace of an organism study at the end of the pass). The white-box columns (they run the model) are added after the
    pass; with a judge labeller (it runs an engine of its own) nothing overlaps the pass.

    ``embed_group``: traces scored together, in the order their rollouts are complete, their new sentences
    embedded in one call (:data:`EMBED_GROUP`); with ``overlap`` a group is scored once its last trace is
    complete."""
    from anchors._embedding import DatasetEmbeddings
    from anchors._pipeline import _truth, add_whitebox, compute_importance, write_importance
    from cot import TraceError
    from cotscope._progress import step
    from resampling import Engine, EngineInputError, TracePrefixes, check_context, trace_seed

    skipped = list(skipped or [])
    plans, ready, built = [], [], []
    seeds: dict[str, int] = {}
    seen: set[str] = set()
    for trace in traces:
        if trace.id in seen:
            skipped.append({"trace": trace.id, "reason": "the same trace twice in the dataset"})
            continue
        seen.add(trace.id)
        if _truth(trace, None)[0] is None:
            skipped.append({"trace": trace.id, "reason": "no answer: no ground truth and no final answer"})
            continue
        try:
            prefixes = TracePrefixes.build(trace, backend.tokenizer, min_chars=min_chars)
            seeds[trace.id] = trace_seed(seed, trace.id)
            plan = prefixes.plan(
                samples, seeds[trace.id], params, forced_answer=True, forced_params=forced_params
            )
            check_context(
                plan, getattr(backend, "max_context", None), getattr(backend, "model_id", "the model")
            )
        except (EngineInputError, TraceError, ValueError) as exc:
            reason = str(exc)
            if "context" in reason:
                reason = f"context too long: {reason}"
            skipped.append({"trace": trace.id, "reason": reason})
            continue
        plans.append(plan)
        ready.append(trace)
        built.append(prefixes)
    if not ready:
        raise EngineInputError(
            f"none of the {len(traces)} traces can be run ({skipped[0]['reason'] if skipped else 'no traces'}); "
            "check the traces and the model"
        )
    if not quiet:
        sentences = sum(len({r.position for r in p}) for p in plans)
        step(
            f"dataset: {len(ready)} traces ({len(skipped)} skipped), {sentences} positions, "
            f"{sum(p.n_rollouts for p in plans):,} rollouts planned"
        )
    engine = Engine(backend, cache_dir, quiet=quiet, flush_every=flush_every)
    outcomes: dict[str, Any] = {}
    # a sentence that recurs across traces is embedded once per run (each trace still keeps its own file)
    shared = DatasetEmbeddings()

    # White-box columns run the backend's model (switching its attention implementation), so they are added in
    # this thread once nothing samples any more; everything else of a trace's scoring may run in the worker.
    white = whitebox and getattr(backend, "model", None) is not None

    def score(ks: list[int]) -> dict[int, tuple[Any, dict[str, Any] | None]]:
        """Traces ``ready[k]`` for ``k`` in ``ks`` scored from their cached rollouts, their new sentences embedded
        together first (one embedding call, not two per trace): per trace, its table (written, when no white-box
        step is left) or its black-box :class:`ImportanceRun` (white-box columns still to add), or the reason it
        failed."""
        staged, done = {}, {}
        for k in ks:
            trace = ready[k]
            try:
                staged[k] = compute_importance(
                    backend,
                    trace,
                    samples=samples,
                    seed=seeds[trace.id],
                    params=params,
                    forced_params=forced_params,
                    min_chars=min_chars,
                    cache_dir=cache_dir,
                    options=options,
                    whitebox=False,
                    quiet=True,
                    out=None if out is None else Path(out) / "traces" / trace.id,
                    header={**(header or {}), "trace": trace.to_dict()},
                    roles=roles,
                    adaptive=outcomes.get(trace.id),
                    prefixes=built[k],
                    embed=shared,
                    staged=True,
                )
            except (EngineInputError, RuntimeError, ValueError) as exc:
                done[k] = None, {"trace": trace.id, "reason": str(exc).splitlines()[0]}
        shared.ids([text for part in staged.values() for text in part.to_embed()])
        for k, part in staged.items():
            try:
                run = part.score()
            except (EngineInputError, RuntimeError, ValueError) as exc:
                done[k] = None, {"trace": ready[k].id, "reason": str(exc).splitlines()[0]}
                continue
            done[k] = (run, None) if white else finish(k, run)
        return done

    def finish(k: int, run: Any) -> tuple[pl.DataFrame | None, dict[str, Any] | None]:
        """The white-box columns (if asked for), the trace's outputs, and its rows of the study table."""
        trace = ready[k]
        if white:
            try:
                run = add_whitebox(run, backend, built[k])
            except (RuntimeError, ValueError) as exc:
                return None, {"trace": trace.id, "reason": str(exc).splitlines()[0]}
        if out is not None:
            write_importance(
                run,
                Path(out) / "traces" / trace.id,
                {**(notes or {}), "graded_against": run.stats.get("graded_against")},
            )
        table = run.table.with_columns(
            pl.lit(trace.id).alias("trace_id"),
            pl.lit(_base_correct(trace), dtype=pl.Boolean).alias("base_correct"),
            pl.lit(seeds[trace.id], dtype=pl.Int64).alias("rollout_seed"),
        )
        return table, None

    # Traces are scored in groups, in the order their rollouts are complete (the same groups whether they are
    # scored during the pass or after it, so the same embedding calls)
    group = max(1, int(embed_group))
    order: list[int] = []
    groups: list[Any] = []  # futures of groups scored during the pass
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cotscope-score")

    def complete(k: int) -> None:
        order.append(k)
        if overlap and len(order) % group == 0:
            groups.append(pool.submit(score, order[-group:]))

    results: dict[int, Any] = {}
    try:
        if adaptive is None:
            # Traces are scored in a worker thread as their rollouts are stored, while the engine samples the
            # rest (:meth:`resampling.Engine.fill`'s ``on_plan_done``). Scoring reads only the cache, so a trace's
            # rows are what they would be after the whole pass. A judge labeller runs an engine of its own (with
            # its own progress display), so with one every trace waits for the pass.
            overlap = overlap and isinstance(roles, str)
            interval = sys.getswitchinterval()
            if overlap:
                sys.setswitchinterval(min(interval, SWITCH_INTERVAL))
            try:
                with _DatasetProgress(quiet) as progress:
                    stats = engine.fill(plans, progress=progress, on_plan_done=complete)
            finally:
                sys.setswitchinterval(interval)
        else:
            stats, outcomes = _adaptive_fill(
                engine, ready, built, skipped, samples=samples, seeds=seeds, params=params,
                forced_params=forced_params, options=options, min_chars=min_chars, cache_dir=cache_dir,
                roles=roles, adaptive=adaptive, quiet=quiet, shared=shared,
            )  # fmt: skip
            order = [k for k, trace in enumerate(ready) if trace.id in outcomes]  # the rest: skipped already
        for future in groups:
            results.update(future.result())
        # the rest: traces not yet scored (a trace with a failed row is not reported complete; its run retries)
        reported = set(order)
        rest = order[len(groups) * group :]
        if adaptive is None:
            rest += [k for k in range(len(ready)) if k not in reported]
        for start in range(0, len(rest), group):
            results.update(score(rest[start : start + group]))
        tables = []
        for k in range(len(ready)):
            if k not in results:
                continue
            done, failed = results[k]
            if white and failed is None:
                done, failed = finish(k, done)
            if failed is not None:
                skipped.append(failed)
            else:
                tables.append(done)
    finally:  # on an error (or Ctrl-C) mid-pass: groups not yet started are not scored
        pool.shutdown(wait=True, cancel_futures=True)
    if not tables:
        raise EngineInputError(f"every trace failed ({skipped[-1]['reason']}); nothing to aggregate")
    table = pl.concat(tables, how="diagonal_relaxed")
    if outcomes:
        stats = {**stats, "adaptive": _adaptive_totals([o.stats for o in outcomes.values()])}
    result = StudyRun(table, skipped, stats)
    if out is not None:
        from anchors._report_study import write_study

        run = {**(header or {}), "engine": {k: v for k, v in stats.items() if k != "adaptive"}}
        if outcomes:
            run["adaptive"] = stats["adaptive"]
        write_study(table, out, notes=notes, skipped=skipped, run=run)
    return result


def _adaptive_fill(
    engine: Any,
    traces: list[Any],
    prefixes: list[Any],
    skipped: list[dict[str, Any]],
    *,
    samples: int,
    seeds: dict[str, int],
    params: Any,
    forced_params: Any,
    options: Any,
    min_chars: int,
    cache_dir: str | os.PathLike,
    roles: Any,
    adaptive: Any,
    quiet: bool,
    shared: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The adaptive rounds of a dataset: each round is one :meth:`resampling.Engine.fill` over every trace's
    positions still open (positions of different traces share batches), then each trace is scored and settled
    (:func:`anchors._adaptive.run_rounds`, the single-trace code). Returns the engine stats summed over the rounds
    and each trace's :class:`anchors._adaptive.AdaptiveOutcome`; a trace the budget left without rollouts is
    skipped with its reason."""
    from dataclasses import replace

    from anchors._adaptive import run_rounds
    from anchors._blackbox import ImportanceOptions
    from anchors._pipeline import _run_embeddings, _truth, adaptive_rounds
    from cot import label_sentences
    from cotscope._progress import step
    from resampling import Engine

    opts = replace(options or ImportanceOptions(), min_chars=min_chars)
    embs = {trace.id: _run_embeddings(shared, cache_dir, True, trace.id) for trace in traces}
    rounds = [
        adaptive_rounds(
            pre,
            trace,
            samples=samples,
            seed=seeds[trace.id],
            params=params,
            forced_params=forced_params,
            forced_answer=True,
            options=opts,
            embed=embs[trace.id],
            roles=label_sentences(pre.sentences, roles),
            adaptive=adaptive,
        )
        for trace, pre in zip(traces, prefixes, strict=True)
    ]
    reader = Engine(engine.backend, cache_dir, quiet=True)
    totals: dict[str, Any] = {"rounds": 0}

    def draw(go: list[Any]) -> list[Any]:
        if not quiet:
            step(f"adaptive round {totals['rounds'] + 1}: {len(go)} traces")
        with _DatasetProgress(quiet) as progress:
            got = engine.fill([r.plan() for r in go], progress=progress)
        totals["rounds"] += 1
        for key, value in got.items():
            totals[key] = totals.get(key, 0) + value if isinstance(value, int | float) else value
        return [
            reader.run(r.plan(), truths={r.prefixes.trace.id: _truth(r.prefixes.trace, None)[0]}).rollouts
            for r in go
        ]

    run_rounds(rounds, draw, adaptive.budget)
    for emb in embs.values():
        emb.save()
    outcomes = {}
    for trace, r in zip(traces, rounds, strict=True):
        try:
            outcomes[trace.id] = r.outcome()
        except ValueError as exc:
            skipped.append({"trace": trace.id, "reason": str(exc)})
    return totals, outcomes


def _adaptive_totals(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The adaptive stats of a dataset: counts summed over its traces, the schedule and level they share."""
    out: dict[str, Any] = {"traces": len(stats)}
    for key in ("adaptive_rollouts", "adaptive_fixed_rollouts", "adaptive_positions_sampled",
                "adaptive_sentences_skipped", "adaptive_interval_tests"):  # fmt: skip
        if any(key in s for s in stats):
            out[key] = sum(int(s.get(key, 0)) for s in stats)
    out["adaptive_looks_most"] = max(s["adaptive_looks"] for s in stats)
    for key in ("adaptive_schedule", "adaptive_alpha_per_look", "adaptive_sparse_stride"):
        if key in stats[0]:
            out[key] = stats[0][key]
    return out


class _DatasetProgress:
    """Traces complete and rollouts sampled across the dataset, with the time left; silent when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.left: list[int] = []

    def __enter__(self):
        return self

    def start(self, todo: list[int]) -> None:
        self.left = list(todo)
        if not self.quiet and sum(todo):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.bar.__enter__()
            self.rollouts = self.bar.add_task("rollouts", total=sum(todo))
            self.traces = self.bar.add_task("traces complete", total=len(todo), completed=todo.count(0))

    def advance(self, k: int, n: int) -> None:
        self.left[k] -= n
        if hasattr(self, "bar"):
            self.bar.update(self.rollouts, advance=n)
            if self.left[k] == 0:
                self.bar.update(self.traces, advance=1)

    def __exit__(self, *exc) -> None:
        if hasattr(self, "bar"):
            self.bar.__exit__(*exc)

"""The engine: runs a plan on a backend, stores every rollout, resumes what is missing."""

from __future__ import annotations

import itertools
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from cot import answer_key, answers_equivalent, atomic_write_text, extract_answer, json_dumps, split_sentences
from resampling._backend import Backend, Completion, GenerationJob, common_prefix
from resampling._errors import EngineInputError
from resampling._plan import Plan, SamplingRequest
from resampling._store import RunStore, atomic_write_parquet, run_key

__all__ = ["Engine", "RunResult"]

THINK_CLOSE = "</think>"


class RunResult:
    """What a run produced: the rollouts table and where it lives."""

    def __init__(self, rollouts: pl.DataFrame, run_dir: Path, stats: dict[str, Any]) -> None:
        self.rollouts = rollouts
        self.run_dir = run_dir
        self.stats = stats


def first_sentence(text: str) -> str | None:
    body = text.split(THINK_CLOSE, 1)[0]
    sentences = split_sentences(body)
    return sentences[0].text if sentences else None


def truncated(kind: str, text: str | None, finish_reason: str | None) -> bool:
    """A rollout cut at ``max_new_tokens`` (finish reason ``length``) before it gave its answer: cut inside the
    reasoning (no ``</think>``; "the answer is probably 12, but" is not an answer) or before the answer after it
    closed. It has no answer and is never graded. A forced-answer probe is truncated when its budget ran out
    before the box closed."""
    return finish_reason == "length" and text is not None and _answer(kind, text, finish_reason) is None


def _answer(kind: str, text: str, finish_reason: str | None = None) -> str | None:
    if kind == "forced_answer":
        # The prompt ended with the answer lead-in up to "\boxed{"; the continuation completes it.
        return extract_answer("\\boxed{" + text)
    if THINK_CLOSE in text:
        after = extract_answer(text.split(THINK_CLOSE, 1)[1])
        if after is not None or finish_reason == "length":
            return after  # cut off after </think>: only the answer part counts
    elif finish_reason == "length":
        return None  # cut off inside the reasoning: no answer (see truncated)
    return extract_answer(text)


def rollout_row(req: SamplingRequest, c: Completion, truth: str | None) -> dict[str, Any]:
    """One stored row for one completion (or failure) of ``req``."""
    row = {
        "trace_id": req.trace_id,
        "request_id": req.request_id,
        "kind": req.kind,
        "position": req.position,
        "sample": c.sample,
        "seed": c.seed,
        "edit": req.edit_json,
        "prefix_hash": req.prefix_hash,
        "prefix_tokens": len(req.prompt_ids),
        "text": None,
        "n_tokens": None,
        "first_sentence": None,
        "answer": None,
        "answer_norm": None,
        "correct": None,
        "finish_reason": c.finish_reason,
        "status": "error" if c.error else "ok",
        "error": c.error,
    }
    if c.error:
        return row
    answer = _answer(req.kind, c.text, c.finish_reason)
    row.update(
        text=c.text,
        n_tokens=len(c.token_ids),
        first_sentence=None if req.kind == "forced_answer" else first_sentence(c.text),
        answer=answer,
        answer_norm=answer_key(answer),
        correct=None
        if truth is None or truncated(req.kind, c.text, c.finish_reason)
        else (answer is not None and answers_equivalent(answer, truth)),
    )
    return row


def _as_truth(value: Any) -> str | None:
    """A true answer as text: a trace file may store ``"gt_answer": 5`` as a number."""
    return None if value is None else str(value)


def grade(rollouts: pl.DataFrame, truths: dict[str, str | None]) -> pl.DataFrame:
    """``answer``, ``answer_norm`` and ``correct`` of every ``ok`` row, from its text and ``truths`` (trace id ->
    true answer); each distinct (answer, truth) pair is checked once."""
    verdicts: dict[tuple[str, str], bool] = {}
    answers, norms, correct = [], [], []
    finish = (
        rollouts["finish_reason"].to_list()
        if "finish_reason" in rollouts.columns
        else [None] * rollouts.height
    )
    for kind, text, trace_id, status, reason in zip(
        rollouts["kind"].to_list(),
        rollouts["text"].to_list(),
        rollouts["trace_id"].to_list(),
        rollouts["status"].to_list(),
        finish,
        strict=True,
    ):
        if status != "ok" or text is None:
            answers.append(None)
            norms.append(None)
            correct.append(None)
            continue
        answer = _answer(kind, text, reason)
        truth = _as_truth(truths.get(trace_id))
        answers.append(answer)
        norms.append(answer_key(answer))
        if truth is None or truncated(kind, text, reason):
            correct.append(None)  # a rollout cut off before its answer is never graded
        elif answer is None:
            correct.append(False)
        else:
            if (answer, truth) not in verdicts:
                verdicts[(answer, truth)] = bool(answers_equivalent(answer, truth))
            correct.append(verdicts[(answer, truth)])
    return rollouts.with_columns(
        pl.Series("answer", answers, dtype=pl.Utf8),
        pl.Series("answer_norm", norms, dtype=pl.Utf8),
        pl.Series("correct", correct, dtype=pl.Boolean),
    )


JOB_CHUNK = 256
"""Most samples of one request handed to the backend as one job."""


class Engine:
    """Runs plans on a backend, with a content-addressed, resumable Parquet cache.

    Args:
        backend: any :class:`resampling.Backend` (``make_backend("hf")`` ...).
        cache_dir: where run directories live (one per content hash).
        flush_every: rows buffered before a shard is written; smaller loses less on a crash.
        quiet: no progress bar.
    """

    def __init__(
        self, backend: Backend, cache_dir: str | os.PathLike, *, flush_every: int = 64, quiet: bool = False
    ):
        self.backend = backend
        self.cache_dir = Path(cache_dir)
        self.flush_every = max(1, int(flush_every))
        self.quiet = quiet

    def run(
        self,
        plan: Plan,
        *,
        truths: dict[str, str | None] | None = None,
        out: str | os.PathLike | None = None,
        header: dict[str, Any] | None = None,
    ) -> RunResult:
        """Sample everything in ``plan`` that the cache lacks; return (and optionally write) all its rollouts.

        Args:
            truths: trace id -> true answer, for the ``correct`` column; default: the plan's own (a trace's
                ``gt_answer``, else its final answer, as :meth:`TracePrefixes.plan` records them). Pass ``{}`` to
                grade nothing.
            out: folder to write ``rollouts.parquet`` and ``run.json`` into.
        """
        if not len(plan):
            raise EngineInputError("the plan is empty: nothing to sample")
        for req in plan:
            if req.params.max_new_tokens is None:
                raise EngineInputError("max_new_tokens is required for every request (set SamplingParams)")
        check_context(
            plan, getattr(self.backend, "max_context", None), getattr(self.backend, "model_id", "the model")
        )
        identity = self.backend.identity()
        key = run_key(identity, [r.trace_id for r in plan])
        store = RunStore(self.cache_dir, key)
        done = store.done_keys()
        jobs, by_key = self._jobs(plan, done)
        truths = dict(plan.meta.get("truths", {})) if truths is None else truths
        stats = {
            "rollouts_planned": plan.n_rollouts,
            "rollouts_cached": plan.n_rollouts - sum(len(j.samples) for j in jobs),
        }
        stats.update(planned_work(jobs))
        if not self.quiet:
            _say_planned(stats)
        started = time.perf_counter()
        n_new, tokens_new, buffer = 0, 0, []
        with _Progress(sum(len(j.samples) for j in jobs), self.quiet) as progress:
            # nothing to sample, no backend call: a cached trace scored while a dataset pass samples the others
            # must not touch the backend that pass is using
            for job, completions in self.backend.generate(jobs) if jobs else ():
                req = by_key[job.key]
                for c in completions:
                    buffer.append(rollout_row(req, c, None))  # graded below, with this run's truths
                    tokens_new += len(c.token_ids)
                n_new += len(completions)
                progress.advance(len(completions), tokens_new)
                if len(buffer) >= self.flush_every:
                    store.append(buffer)
                    buffer = []
            store.append(buffer)
        elapsed = time.perf_counter() - started
        wanted = {r.request_id: r.n for r in plan}
        rollouts = store.final().filter(
            pl.col("request_id").is_in(list(wanted))
            & (
                pl.col("sample")
                < pl.col("request_id").replace_strict(wanted, default=-1, return_dtype=pl.Int64)
            )
        )
        # answers and grades follow this run's truths, not those of the run that first stored a row
        rollouts = grade(rollouts, truths)
        stats.update(
            rollouts_new=n_new,
            decode_tokens_new=tokens_new,
            seconds=elapsed,
            rollouts_per_s=n_new / elapsed if elapsed > 0 else float("nan"),
            tokens_per_s=tokens_new / elapsed if elapsed > 0 else float("nan"),
            errors=int((rollouts["status"] != "ok").sum()),
        )
        if hasattr(self.backend, "retry_counts"):
            stats["retries"] = dict(self.backend.retry_counts) if jobs else {}
        if out is not None:
            self.write(rollouts, Path(out), plan, identity, key, stats, header)
        return RunResult(rollouts, store.dir, stats)

    def fill(
        self,
        plans: Sequence[Plan],
        *,
        progress: Any = None,
        on_plan_done: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Sample what each plan's cache lacks, all plans in one backend call (a dataset of traces).

        Each plan keeps the run directory it has on its own (:meth:`run` of that plan finds every row cached
        afterwards, so a dataset run and single-trace runs share their rows), while positions of different plans
        share batches and each distinct prefix is prefilled once. ``progress`` (optional) gets ``start(todo)``,
        the rollouts each plan still lacks, before sampling and ``advance(plan_index, n)`` as completions arrive.
        ``on_plan_done(plan_index)`` (optional) is called once per plan as soon as all its rows are stored ``ok``
        (at once for a plan with nothing to sample), while the others are still sampled: a caller can score that
        plan meanwhile. A plan with a failed row is not reported (its own :meth:`run` retries the row). Jobs with
        the smallest token budget (forced-answer probes) go first, so plans finish one after another as the long
        jobs' batches end rather than all at the very end (the hf backend decodes a window of traces together, longest
        prefix first, so the plans of one window finish together). Returns the planned work (:func:`planned_work`) with
        ``rollouts_cached``, the new rollouts and the seconds taken."""
        identity = self.backend.identity()
        jobs: list[GenerationJob] = []
        owner: dict[str, tuple[int, RunStore]] = {}
        cached, todo = 0, []
        for k, plan in enumerate(plans):
            check_context(
                plan, getattr(self.backend, "max_context", None), getattr(self.backend, "model_id", "")
            )
            store = RunStore(self.cache_dir, run_key(identity, [r.trace_id for r in plan]))
            mine, by_key = self._jobs(plan, store.done_keys())
            owner.update({rid: (k, store) for rid in by_key})
            jobs.extend(mine)
            todo.append(sum(len(j.samples) for j in mine))
            cached += plan.n_rollouts - todo[-1]
        stats: dict[str, Any] = {
            "rollouts_planned": sum(p.n_rollouts for p in plans),
            "rollouts_cached": cached,
        }
        stats.update(planned_work(jobs))
        if not self.quiet:
            _say_planned(stats)
        requests = {r.request_id: r for plan in plans for r in plan}
        # stable: each budget's jobs keep their order (a trace's prefixes stay together for the backend)
        jobs.sort(key=lambda j: int(j.params.max_new_tokens or 0))
        left = [0] * len(plans)  # jobs still to come, per plan
        failed = [False] * len(plans)
        for job in jobs:
            left[owner[job.key][0]] += 1
        if progress is not None:
            progress.start(todo)
        if on_plan_done is not None:
            for k in [k for k, n in enumerate(left) if n == 0]:
                on_plan_done(k)
        buffers: dict[Path, list[dict[str, Any]]] = {}
        stores: dict[Path, RunStore] = {}
        started, n_new = time.perf_counter(), 0
        for job, completions in self.backend.generate(jobs) if jobs else ():
            k, store = owner[job.key]
            rows = buffers.setdefault(store.dir, [])
            stores[store.dir] = store
            rows.extend(rollout_row(requests[job.key], c, None) for c in completions)
            n_new += len(completions)
            left[k] -= 1
            failed[k] = failed[k] or any(c.error for c in completions)
            report = left[k] == 0 and not failed[k] and on_plan_done is not None
            if len(rows) >= self.flush_every or report:
                store.append(rows)
                buffers[store.dir] = []
            if progress is not None:
                progress.advance(k, len(completions))
            if report:
                on_plan_done(k)
        for where, rows in buffers.items():
            stores[where].append(rows)
        stats.update(rollouts_new=n_new, seconds=time.perf_counter() - started)
        return stats

    def _jobs(
        self, plan: Plan, done: set[tuple[str, int]]
    ) -> tuple[list[GenerationJob], dict[str, SamplingRequest]]:
        jobs, by_key = [], {}
        for req in plan:
            rid = req.request_id
            by_key[rid] = req
            missing = [k for k in range(req.n) if (rid, k) not in done]
            # a request of many samples goes out in chunks, so rows are stored and progress shows as each chunk
            # finishes (backends share the prefix of chunks with the same prompt; seeds are per sample, so the
            # rollouts are the same)
            for start in range(0, len(missing), JOB_CHUNK):
                chunk = missing[start : start + JOB_CHUNK]
                jobs.append(
                    GenerationJob(
                        key=rid,
                        prompt_ids=req.prompt_ids,
                        samples=tuple(chunk),
                        seeds=tuple(req.seed + k for k in chunk),
                        params=req.params,
                        route=req.trace_id,
                    )
                )
        return jobs, by_key

    def write(self, rollouts, out: Path, plan: Plan, identity, key, stats, header) -> None:
        import torch
        import transformers

        from cotscope import __version__

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_parquet(rollouts, out / "rollouts.parquet")
        params = sorted({json.dumps(r.params.to_dict(), sort_keys=True) for r in plan})
        meta = {
            "version": 1,
            "run_key": key,
            "model": identity,
            "sampling_params": [json.loads(p) for p in params],
            "plan": {**plan.meta, "requests": len(plan), "rollouts": plan.n_rollouts},
            "traces": sorted({r.trace_id for r in plan}),
            "stats": stats,
            "versions": {
                "cotscope": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "polars": pl.__version__,
                "python": platform.python_version(),
            },
            **(header or {}),
        }
        atomic_write_text(out / "run.json", json_dumps(meta, indent=2, default=str) + "\n")


class _Progress:
    """A rich progress bar with rollouts/s and tokens/s on a terminal; plain lines (``cotscope._progress``) when
    stderr is a file or a pipe; silent when quiet."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.start = time.perf_counter()
        self.plain = None

    def __enter__(self):
        from cotscope._progress import progress, stderr_is_terminal

        if not self.quiet and self.total and not stderr_is_terminal():
            self.plain = progress("resampling", self.total)
            self.plain_advance = self.plain.__enter__()
        elif not self.quiet and self.total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("resampling"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("resampling", total=self.total, rate="")
        return self

    def advance(self, n: int, tokens: int) -> None:
        if self.plain is not None:
            self.plain_advance(n)
        if hasattr(self, "bar"):
            dt = max(time.perf_counter() - self.start, 1e-9)
            done = self.bar.tasks[0].completed + n
            self.bar.update(self.task, advance=n, rate=f"{done / dt:.1f} rollouts/s, {tokens / dt:.0f} tok/s")

    def __exit__(self, *exc) -> None:
        if self.plain is not None:
            self.plain.__exit__(*exc)
        if hasattr(self, "bar"):
            self.bar.__exit__(*exc)


def planned_work(jobs: Sequence[GenerationJob]) -> dict[str, int]:
    """The work a run still has to do, counted before it starts: rollouts, prompt tokens to prefill (the distinct
    token prefixes of its prompts: a prefix that several prompts share counts once, as a backend that reuses shared
    prefixes prefills it), and the most new tokens it may decode."""
    prompts = sorted({tuple(j.prompt_ids) for j in jobs})
    # in sorted order each prompt's longest shared prefix with any other is the one with the prompt before it
    distinct = sum(len(p) - common_prefix(p, q) for q, p in itertools.pairwise([(), *prompts]))
    return {
        "rollouts_to_sample": sum(len(j.samples) for j in jobs),
        "prefill_tokens": distinct,
        "max_decode_tokens": sum(len(j.samples) * int(j.params.max_new_tokens or 0) for j in jobs),
    }


def _say_planned(stats: dict[str, Any]) -> None:
    from rich.console import Console

    todo = stats["rollouts_to_sample"]
    cached = stats["rollouts_cached"]
    line = (
        f"planned: {todo:,} rollouts to sample ({cached:,} cached), {stats['prefill_tokens']:,} prompt tokens to "
        f"prefill, at most {stats['max_decode_tokens']:,} new tokens"
        if todo
        else f"planned: nothing to sample, all {cached:,} rollouts are cached"
    )
    Console(stderr=True).print(line, highlight=False)


def check_context(plan: Plan, context: int | None, model: str) -> None:
    """Every request must fit the model's context (prompt + max_new_tokens), checked before any work: past it a
    model's positions are undefined and its rollouts garbage, however fluent they look."""
    if not context:
        return
    worst = max(plan, key=lambda r: len(r.prompt_ids) + int(r.params.max_new_tokens or 0))
    prompt, new = len(worst.prompt_ids), int(worst.params.max_new_tokens or 0)
    if prompt + new > context:
        fix = (
            "shorten the trace (it does not fit at all)"
            if prompt >= context
            else f"lower --max-new-tokens to at most {context - prompt}"
        )
        raise EngineInputError(
            f"a request needs {prompt:,} prompt tokens + {new:,} new tokens = {prompt + new:,}, but {model}'s "
            f"context is {context:,} tokens (position {worst.position}, {worst.kind}); {fix}, or use a model with a "
            "longer context"
        )


def traces_truths(traces: Iterable[Any]) -> dict[str, str | None]:
    """trace id -> the true answer recorded in its metadata (``gt_answer``), if any."""
    return {t.id: _as_truth(t.metadata.get("gt_answer")) for t in traces}

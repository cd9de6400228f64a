"""The worker of ``cotscope serve``: one thread that owns the model and decodes requests in rounds, a fair share each.

A request is cut into slices of at most ``slice_tokens`` (rows x ``max_tokens``). Each round, the worker takes one
slice of every waiting request, least-served first, up to ``max_rollouts`` rows, and runs them as one ``generate``
call with the shortest ``max_tokens`` first; a request is answered as soon as its last slice is decoded. So a small
request waits at most for the round under way (one slice of each heavy request, not the whole of it), and the memory
of a round is bounded by its slices. A request whose client has gone is cancelled: its slices not yet started are
dropped. Seeds do not depend on the batch, so slicing never changes a result.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from concurrent.futures import Future
from typing import Any

from resampling._backend import Completion, GenerationJob
from resampling._serve._requests import _HTTPError

_SHUTTING_DOWN = "the server is shutting down"


class _Work:
    """One request's rollouts: the slices not yet decoded, the completions so far, and the future of the answer."""

    _ids = itertools.count()

    def __init__(self, jobs: list[GenerationJob], slice_tokens: int) -> None:
        self.jobs = jobs
        self.future: Future = Future()
        self.seq = next(self._ids)
        max_tokens = max((int(j.params.max_new_tokens or 1) for j in jobs), default=1)
        self.slice_rows = max(1, slice_tokens // max_tokens)
        """Rows of this request decoded in one round."""
        self.cursor = [0] * len(jobs)
        """Per job: samples handed to a round so far."""
        self.done: list[list[Completion]] = [[] for _ in jobs]
        self.left = self.rollouts
        """Rollouts not yet decoded."""
        self.served = 0
        """Rollouts handed to rounds so far (the least-served request goes first)."""
        self.cancelled = False

    @property
    def rollouts(self) -> int:
        return sum(len(j.samples) for j in self.jobs)

    @property
    def unscheduled(self) -> int:
        return sum(len(j.samples) - c for j, c in zip(self.jobs, self.cursor, strict=True))

    def take(self, rows: int) -> list[tuple[GenerationJob, int]]:
        """Up to ``rows`` rollouts not yet handed out, as (slice, job index) pairs."""
        out = []
        for i, job in enumerate(self.jobs):
            if rows <= 0:
                break
            start = self.cursor[i]
            end = min(len(job.samples), start + rows)
            if end > start:
                part = dataclasses.replace(
                    job,
                    key=f"{job.key}#{start}",
                    samples=job.samples[start:end],
                    seeds=job.seeds[start:end],
                )
                out.append((part, i))
                self.cursor[i] = end
                rows -= end - start
                self.served += end - start
        return out


class _Batcher:
    """One worker thread runs the rounds (the model is never used concurrently); see the module docstring."""

    def __init__(self, backend: Any, window_s: float, max_rollouts: int, slice_tokens: int = 2**14) -> None:
        self.backend = backend
        self.window_s = window_s
        self.max_rollouts = max_rollouts
        self.slice_tokens = int(slice_tokens)
        self.batches = 0
        """``generate`` calls (rounds) run."""
        self.dropped_rollouts = 0
        """Rollouts never decoded because their request was cancelled (its client went away)."""
        self._cond = threading.Condition()
        self._active: list[_Work] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="cotscope-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[GenerationJob]) -> _Work:
        work = _Work(jobs, self.slice_tokens)
        with self._cond:
            if self._stopping:
                raise _HTTPError(503, _SHUTTING_DOWN, kind="server_error")
            self._active.append(work)
            self._cond.notify()
        return work

    def cancel(self, work: _Work) -> None:
        """Drop the request's slices that no round has started; a round under way still finishes."""
        with self._cond:
            if work.cancelled or work.future.done():
                return
            work.cancelled = True
            self.dropped_rollouts += work.unscheduled
            if work in self._active:
                self._active.remove(work)
            work.future.cancel()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._active and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    for work in self._active:
                        _fail(work, _HTTPError(503, _SHUTTING_DOWN, kind="server_error"))
                    self._active.clear()
                    return
            if self.window_s > 0:
                time.sleep(self.window_s)  # let requests sent together arrive, so they are decoded together
            with self._cond:
                round_: list[tuple[GenerationJob, _Work, int]] = []
                budget = self.max_rollouts
                for work in sorted(self._active, key=lambda w: (w.served, w.seq)):
                    if budget <= 0:
                        break
                    rows = min(work.slice_rows, budget, work.unscheduled)
                    round_ += [(part, work, i) for part, i in work.take(rows)]
                    budget -= rows
                    if not work.unscheduled:
                        self._active.remove(work)  # all handed out: answered when the round ends
            self._run(round_)

    def _run(self, round_: list[tuple[GenerationJob, _Work, int]]) -> None:
        if not round_:
            return
        # The shortest generations first: the backend decodes (and we answer) one kind of sampling after another.
        round_ = sorted(round_, key=lambda s: int(s[0].params.max_new_tokens or 0))
        owner = {part.key: (work, i) for part, work, i in round_}
        waiting = dict.fromkeys(part.key for part, _, _ in round_)
        self.batches += 1
        try:
            for part, comps in self.backend.generate([part for part, _, _ in round_]):
                waiting.pop(part.key, None)
                work, i = owner[part.key]
                self._deliver(work, i, comps)
        except Exception as exc:
            rest = [s for s in round_ if s[0].key in waiting]
            works = {id(w): w for _, w, _ in rest}
            if len(works) > 1:  # find the request that failed; the others still get their answers
                for work in works.values():
                    self._run([s for s in rest if s[1] is work])
                return
            for work in works.values():
                with self._cond:
                    if work in self._active:
                        self._active.remove(work)
                    _fail(
                        work,
                        _HTTPError(
                            500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error"
                        ),
                    )

    def _deliver(self, work: _Work, i: int, comps: list[Completion]) -> None:
        with self._cond:
            if work.cancelled or work.future.done():
                return
            work.done[i].extend(comps)
            work.left -= len(comps)
            if work.left <= 0:  # under the lock, so a cancel cannot come between the check and the answer
                work.future.set_result([sorted(d, key=lambda c: c.sample) for d in work.done])


def _fail(work: _Work, exc: Exception) -> None:
    """Answer the request with an error (the caller holds the worker's lock)."""
    if not work.future.done():
        work.future.set_exception(exc)

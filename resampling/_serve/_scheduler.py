"""The worker of ``cotscope serve``: one thread that owns the model and decodes pending requests together."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from resampling._backend import GenerationJob
from resampling._serve._requests import _HTTPError


@dataclass
class _Work:
    jobs: list[GenerationJob]
    future: Future = field(default_factory=Future)

    @property
    def rollouts(self) -> int:
        return sum(len(j.samples) for j in self.jobs)


class _Batcher:
    """One worker thread: runs everything pending as one ``generate`` call (the model is never used concurrently)."""

    def __init__(self, backend: Any, window_s: float, max_rollouts: int) -> None:
        self.backend = backend
        self.window_s = window_s
        self.max_rollouts = max_rollouts
        self.batches = 0
        self._cond = threading.Condition()
        self._pending: list[_Work] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="cotscope-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[GenerationJob]) -> Future:
        work = _Work(jobs)
        with self._cond:
            if self._stopping:
                raise _HTTPError(503, "the server is shutting down", kind="server_error")
            self._pending.append(work)
            self._cond.notify()
        return work.future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    for work in self._pending:
                        work.future.set_exception(
                            _HTTPError(503, "the server is shutting down", kind="server_error")
                        )
                    self._pending.clear()
                    return
            if self.window_s > 0:
                time.sleep(self.window_s)  # let requests sent together arrive, so they are decoded together
            with self._cond:
                batch, total = [], 0
                while self._pending and (not batch or total + self._pending[0].rollouts <= self.max_rollouts):
                    work = self._pending.pop(0)
                    batch.append(work)
                    total += work.rollouts
            self._run(batch)

    def _run(self, batch: list[_Work]) -> None:
        jobs = [job for work in batch for job in work.jobs]
        self.batches += 1
        try:
            out = {job.key: comps for job, comps in self.backend.generate(jobs)}
        except Exception as exc:
            if len(batch) > 1:  # find the request that failed; the others still get their answers
                for work in batch:
                    self._run([work])
                return
            batch[0].future.set_exception(
                _HTTPError(500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error")
            )
            return
        for work in batch:
            work.future.set_result([out[job.key] for job in work.jobs])

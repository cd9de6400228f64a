"""A content-addressed, resumable store of rollouts: Parquet shards written atomically, merged at the end.

A run directory is named by a hash of the backend identity (model weights, tokenizer and chat template, backend and
its output-changing settings) and the traces; inside it, each row is keyed by its request id (prefix, sampling
parameters, seed) and sample number. Batch size, concurrency, retries and sample counts change neither. Finished
rows are flushed as small Parquet shards (temp file, then rename), so a run killed at any moment loses at most the
rows not yet flushed, and a rerun computes only what is missing.

Two writers: a process claims a run directory (an exclusive ``flock`` on ``.lock``) when it reads which rows are
done, and releases it when it reads the final rows (or exits, even by SIGKILL); a second process on the same
directory waits for the claim, then finds those rows done and computes only what is still missing. Where rows of
one (request, sample) were stored more than once (a copied shard, an older version), the one kept follows a stable
rule: an ``ok`` row over an error, then the smallest (text, error), so every reader keeps the same row.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import polars as pl

from cot import atomic_write

__all__ = ["ROLLOUT_SCHEMA", "RunStore", "atomic_write_parquet", "run_key"]

ROLLOUT_SCHEMA: dict[str, Any] = {
    "trace_id": pl.Utf8,
    "request_id": pl.Utf8,
    "kind": pl.Utf8,
    "position": pl.Int64,
    "sample": pl.Int64,
    "seed": pl.Int64,
    "edit": pl.Utf8,
    "prefix_hash": pl.Utf8,
    "prefix_tokens": pl.Int64,
    "text": pl.Utf8,
    "n_tokens": pl.Int64,
    "first_sentence": pl.Utf8,
    "answer": pl.Utf8,
    "answer_norm": pl.Utf8,
    "correct": pl.Boolean,
    "finish_reason": pl.Utf8,
    "status": pl.Utf8,
    "error": pl.Utf8,
}
"""One row per continuation. ``status`` is ``ok`` or ``error``; error rows carry ``error`` and are never data."""

SORT_KEY = ["trace_id", "kind", "edit", "position", "seed", "sample"]

_CLAIMS: dict[Path, Any] = {}
"""Run directories this process has claimed: their open ``.lock`` files."""


def _claim(run_dir: Path) -> None:
    """Hold the run directory against other processes (waiting for one that holds it); a no-op without fcntl."""
    path = (run_dir / ".lock").resolve()
    if path in _CLAIMS:
        return  # this process holds it already (an earlier run here that stopped before the end)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no claim
        return
    handle = open(path, "a")  # noqa: SIM115 - held open for as long as the claim lasts
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(
            f"waiting for another process that is writing {run_dir} (it holds {path.name})", file=sys.stderr
        )
        fcntl.flock(handle, fcntl.LOCK_EX)
    _CLAIMS[path] = handle


def _release(run_dir: Path) -> None:
    handle = _CLAIMS.pop((run_dir / ".lock").resolve(), None)
    if handle is not None:
        handle.close()  # closing the file drops the flock


def run_key(identity: dict[str, Any], trace_ids: list[str]) -> str:
    """The run directory of a backend identity and a set of traces. Rows inside are keyed by request id (prefix,
    parameters, seed) and sample, so plans that differ in sample counts, positions or probes share one directory
    and reuse each other's rows."""
    payload = json.dumps({"identity": identity, "traces": sorted(set(trace_ids))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def atomic_write_parquet(df: pl.DataFrame, path: Path) -> Path:
    """Write ``df`` to ``path`` as Parquet with :func:`cot.atomic_write` (all or nothing)."""
    return atomic_write(path, df.write_parquet)


def _as_rollouts(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(list(ROLLOUT_SCHEMA)).cast(ROLLOUT_SCHEMA)


class RunStore:
    """Shards of one run under ``root/<key>/``."""

    def __init__(self, root: Path, key: str) -> None:
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = key
        self._read: pl.DataFrame | None = None
        """The rows :meth:`done_keys` read, while this store has written nothing since: :meth:`final` needs no
        second read (the claim keeps other processes out in between)."""

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet"))

    def load(self) -> pl.DataFrame:
        """Every stored row; where a (request, sample) has several, an ``ok`` row wins over errors."""
        shards = self.shards()
        try:  # all shards in one read (one shard per flush: a large run has thousands)
            frames = [_as_rollouts(pl.read_parquet(shards))] if shards else []
        except Exception:  # a shard is damaged or of another layout: read them one by one to find it
            frames = self._read_each(self.shards())
        if not frames:
            return pl.DataFrame(schema=ROLLOUT_SCHEMA)
        df = pl.concat(frames)
        return (
            df.with_columns((pl.col("status") != "ok").alias("_bad"))
            .sort(["request_id", "sample", "_bad", "text", "error"], nulls_last=True, maintain_order=True)
            .unique(["request_id", "sample"], keep="first", maintain_order=True)
            .drop("_bad")
        )

    @staticmethod
    def _read_each(shards: list[Path]) -> list[pl.DataFrame]:
        frames = []
        for shard in shards:
            try:
                frames.append(_as_rollouts(pl.read_parquet(shard)))
            except Exception as exc:
                # A shard is renamed into place only once complete, so an unreadable one, or one of another
                # layout, is outside damage: set it aside rather than delete anything, and recompute its rows.
                aside = shard.with_suffix(".unreadable")
                shard.rename(aside)
                warnings.warn(
                    f"cache shard {shard.name} could not be read as rollouts ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:120]}); set aside as {aside} and its rows are recomputed",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return frames

    def done_keys(self) -> set[tuple[str, int]]:
        """The (request, sample) pairs stored ``ok``; claims the run directory first (see the module docstring)."""
        _claim(self.dir)
        self._read = self.load()
        df = self._read.filter(pl.col("status") == "ok")
        return set(zip(df["request_id"].to_list(), df["sample"].to_list(), strict=True))

    def append(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._read = None
            df = pl.DataFrame(rows, schema=ROLLOUT_SCHEMA)
            atomic_write_parquet(df, self.dir / f"part-{uuid.uuid4().hex}.parquet")

    def final(self) -> pl.DataFrame:
        """Every row in plan order; ends this process's claim on the run directory."""
        try:
            rows = self._read if self._read is not None else self.load()
            return rows.sort(SORT_KEY, maintain_order=True)
        finally:
            self._read = None
            _release(self.dir)

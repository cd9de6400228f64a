"""Adaptive sampling of ``cotscope importance --adaptive``: rollouts are drawn in rounds, and after each round
(a *look*) the positions whose sentences' significance verdicts are settled stop; the next round goes where they
are not.

Validity under optional stopping: the looks are fixed in advance (:func:`look_schedule`, at most ``L`` of them), and
a metric is flagged significant at a look only when its permutation p-value is below ``significance_level / L``
(Bonferroni alpha spending over the looks). Whatever the stopping rule, P(any look flags a null sentence) <= sum
over looks of ``significance_level / L`` = ``significance_level`` (union bound), so looking after every round cannot
raise the flag's false-positive rate above its level. Stopping for futility (p above ``futility``) only removes
chances to flag, so it keeps that bound.

Same seeds, same rollouts: rollout k of position i is the draw of seed ``request_seed(seed, i, kind) + k``
(:meth:`resampling.TracePrefixes.plan`) whichever round asks for it, so an adaptive run's rows equal a fixed run's
for every sample both drew, and the rollout cache resumes a run cut between rounds.

One trace's state is a :class:`TraceRounds`; :func:`run_rounds` drives one trace (``importance --trace``) or a whole
dataset (``importance --traces``, one engine pass per round over every trace) with the same code. Sparse positions
(``AdaptiveOptions.stride``, ``--sparse K``): a grid first, then bisection of the intervals whose ends differ
(:meth:`TraceRounds._screen`); sentences of the other intervals are not measured (NaN, :func:`with_outcome`)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "RANK_RULES",
    "AdaptiveOptions",
    "AdaptiveOutcome",
    "TraceRounds",
    "counts_plan",
    "look_schedule",
    "run_rounds",
    "settle",
    "sparse_grid",
    "with_outcome",
]


RANK_RULES = ("separated", "final")
"""How :class:`AdaptiveOptions` settles the rank of the top sentences (see ``AdaptiveOptions.rank``)."""


@dataclass(frozen=True)
class AdaptiveOptions:
    """Settings of adaptive sampling. ``first``: rollouts per position in the first round; ``growth``: each look's
    sample size is the previous one times this (rounded up), until ``--samples``; ``futility``: a metric whose p-value
    is at least this at a look is settled as not significant; ``budget``: cap on the run's total rollouts
    (rollouts and forced-answer probes together), None for none."""

    first: int = 10
    growth: float = 1.5
    futility: float = 0.5
    budget: int | None = None
    top_k: int = 1
    """A sentence among the current ``top_k`` of any significance metric's value (accuracy metrics by magnitude)
    is not settled while its rank is open (``rank``): its rank is what a reader takes from the run."""
    rank: str = "separated"
    """When the rank of a top-``top_k`` sentence is settled. ``separated``: once its interval (``<metric>_lo``,
    ``_hi``, the table's bootstrap interval) overlaps no other defined sentence's interval at a look. ``final``:
    never before ``--samples`` (the top sentences get every rollout). Without intervals (``n_bootstrap=0``)
    ``separated`` acts as ``final``."""
    stride: int = 1
    """Sparse positions (``--sparse K``): the first round samples every ``stride``-th position (and the last)
    only; an interval between two sampled neighbours is bisected while its ends differ (:meth:`TraceRounds._screen`),
    and the sentences of an interval whose ends do not differ are not measured. 1: every position."""

    def __post_init__(self) -> None:
        if self.first < 2:
            raise ValueError(f"first round must draw at least 2 rollouts a position, got {self.first}")
        if self.growth <= 1.0:
            raise ValueError(f"growth must be above 1, got {self.growth}")
        if not 0.0 < self.futility <= 1.0:
            raise ValueError(f"futility must be in (0, 1], got {self.futility}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.rank not in RANK_RULES:
            raise ValueError(f"rank must be one of {', '.join(RANK_RULES)}, got {self.rank!r}")
        if self.stride < 1:
            raise ValueError(f"stride (--sparse) must be at least 1 position, got {self.stride}")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget must be at least 1 rollout, got {self.budget}")


def look_schedule(first: int, most: int, growth: float = 1.5) -> list[int]:
    """Sample sizes per position at each look: ``first``, then times ``growth`` (rounded up), ending at ``most``."""
    if most < 1:
        raise ValueError(f"most must be at least 1, got {most}")
    sizes = [min(first, most)]
    while sizes[-1] < most:
        sizes.append(min(most, max(sizes[-1] + 1, math.ceil(sizes[-1] * growth))))
    return sizes


def settle(
    table: pl.DataFrame,
    metrics: tuple[str, ...],
    alpha_look: float,
    futility: float,
    flagged: np.ndarray,
    nan_settles: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One look: update ``flagged`` (sentences x metrics, True once a metric's p fell below ``alpha_look``) and return
    it with each sentence's ``settled`` mask. A metric is settled when flagged, or when its p is at least
    ``futility``; a NaN p (metric undefined at this sample size) is settled only when ``nan_settles`` (from the second
    look on: still undefined after a round more)."""
    p = np.column_stack([table[f"{m}_p"].cast(pl.Float64).fill_null(math.nan).to_numpy() for m in metrics])
    flagged = flagged | (np.isfinite(p) & (p < alpha_look))
    done = flagged | (np.isfinite(p) & (p >= futility)) | (nan_settles & ~np.isfinite(p))
    return flagged, done.all(axis=1)


def _magnitude(table: pl.DataFrame, name: str, absolute: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A metric's values and interval (``_lo``, ``_hi``; NaN where missing), as magnitudes when ``absolute``."""

    def column(c: str) -> np.ndarray:
        if c not in table.columns:
            return np.full(table.height, math.nan)
        return table[c].cast(pl.Float64).fill_null(math.nan).to_numpy()

    v, lo, hi = column(name), column(f"{name}_lo"), column(f"{name}_hi")
    if absolute:
        # |x| over [lo, hi]: the interval's magnitudes, from 0 where it straddles 0
        lo, hi = (
            np.where(lo > 0, lo, np.where(hi < 0, -hi, 0.0)),
            np.maximum(np.abs(lo), np.abs(hi)),
        )
        v = np.abs(v)
    return v, lo, hi


def top_sentences(table: pl.DataFrame, metrics: tuple[str, ...], k: int, rank: str = "final") -> np.ndarray:
    """Mask of the sentences whose rank is still open: the ``k`` largest values of any of ``metrics`` (accuracy
    ones by magnitude), and with ``rank="separated"`` only while such a sentence's interval overlaps another
    defined sentence's (a top sentence whose interval is apart from every other one has a settled rank). A top
    sentence without an interval stays open. Only the top sentences are held open: a sentence overlapping one keeps
    sampling only while its own verdict is open."""
    mask = np.zeros(table.height, dtype=bool)
    if k == 0:
        return mask
    for m in metrics:
        v, lo, hi = _magnitude(table, m, "accuracy" in m)
        defined = np.isfinite(v)
        if not defined.any():
            continue
        kth = np.sort(v[defined])[::-1][min(k, int(defined.sum())) - 1]
        top = defined & (v >= kth)
        if rank == "final":
            mask |= top
            continue
        has_ci = np.isfinite(lo) & np.isfinite(hi)
        for a in np.flatnonzero(top):
            if not has_ci[a]:
                mask[a] = True
                continue
            apart = has_ci & ((hi < lo[a]) | (lo > hi[a]))
            overlap = defined & ~apart
            overlap[a] = False
            mask[a] |= bool(overlap.any())
    return mask


@dataclass
class AdaptiveOutcome:
    """What the rounds of one trace settled: the per-sentence columns (``stop_reason``, ``<metric>_significant``),
    the stats, and each position's rollouts (``counts``, what the final plan asks for)."""

    columns: pl.DataFrame
    stats: dict[str, Any]
    counts: list[int]
    skipped: list[bool]
    """Per sentence: not measured (sparse: an interval whose ends did not differ); its metrics are NaN."""


def sparse_grid(n_pos: int, stride: int) -> np.ndarray:
    """Mask of the positions the first round samples: every ``stride``-th one, and the last."""
    grid = np.zeros(n_pos, dtype=bool)
    grid[::stride] = True
    grid[-1] = True
    return grid


class TraceRounds:
    """One trace's adaptive state across the rounds: rollouts per position so far (``n``), which positions are
    stopped, which sentences are flagged, and (sparse) which positions are sampled at all.

    A round asks :meth:`extra` of every trace, draws the rollouts (one trace, or many in one engine pass), then
    gives each trace its rollouts in :meth:`look`. The rounds end once :attr:`finished`; :meth:`outcome` says what
    they settled. Single-trace and dataset runs share this code, so a trace's rows are the same in both."""

    def __init__(
        self,
        prefixes: Any,
        *,
        samples: int,
        seed: int,
        params: Any,
        forced_params: Any,
        forced_answer: bool,
        score: Any,
        metrics: tuple[str, ...],
        level: float,
        adaptive: AdaptiveOptions,
        options: Any = None,
    ) -> None:
        self.prefixes, self.seed, self.params, self.forced_params = prefixes, seed, params, forced_params
        self.forced_answer, self.score, self.metrics, self.adaptive = forced_answer, score, metrics, adaptive
        self.options, self.samples = options, samples
        self.sizes = look_schedule(adaptive.first, samples, adaptive.growth)
        self.alpha_look = level / len(self.sizes)
        n_pos, n_sent = prefixes.n_positions, len(prefixes.sentences)
        self.n = np.zeros(n_pos, dtype=np.int64)
        self.stopped = np.zeros(n_pos, dtype=bool)
        self.open = sparse_grid(n_pos, adaptive.stride) if adaptive.stride > 1 else np.ones(n_pos, dtype=bool)
        self.screens: dict[tuple[int, int], str] = {}
        self.screen_tests = 0
        self.reason = np.array(["sampling"] * n_sent, dtype=object)
        self.flagged = np.zeros((n_sent, len(metrics)), dtype=bool)
        self.ever = np.zeros((n_sent, len(metrics)), dtype=bool)
        self.table: pl.DataFrame | None = None
        self.looks = 0
        self.finished = False

    def extra(self, target: int) -> np.ndarray:
        """Rollouts each position would draw to reach ``target`` (none for a stopped or unsampled one)."""
        return np.where(self.open & ~self.stopped, np.maximum(self.n, target) - self.n, 0)

    def grant(self, extra: np.ndarray, given: np.ndarray) -> bool:
        """Take the ``given`` part of ``extra`` (the budget may cut it); positions given nothing stop. False when
        this round draws nothing for the trace (its rounds are over)."""
        self.stopped |= (extra > 0) & (given == 0)
        if not given.any():
            self.finished = True
            return False
        self.n = self.n + given
        return True

    def plan(self) -> Any:
        """The plan of each position's rollouts so far (and its forced-answer probes)."""
        return counts_plan(
            self.prefixes, self.n, self.seed, self.params, self.forced_answer, self.forced_params
        )

    def look(self, rollouts: pl.DataFrame, target: int) -> None:
        """Score the rollouts so far, settle what is settled, and stop the positions nobody reads any more."""
        table = self.score(rollouts)
        self.table = table
        self.looks += 1
        n_sent = len(self.reason)
        drawn = self.open & (self.n > 0)  # a midpoint opened at the last look has no rollouts yet
        measured = drawn[:-1] & drawn[1:]
        flagged, done = settle(
            table,
            self.metrics,
            self.alpha_look,
            self.adaptive.futility,
            self.flagged,
            nan_settles=self.looks >= 2,
        )
        self.flagged = flagged & measured[:, None]
        done &= measured
        self.ever |= self.flagged
        if target < self.sizes[-1]:
            done = done & ~top_sentences(table, self.metrics, self.adaptive.top_k, self.adaptive.rank)
        busy = self._screen(rollouts) if self.adaptive.stride > 1 else set()
        # a position stops when every sentence that reads it (sentence i-1 and sentence i) is settled, and (sparse)
        # no interval it ends is still being tested
        for i in np.flatnonzero(drawn):
            readers = [j for j in (i - 1, i) if 0 <= j < n_sent and measured[j]]
            if all(done[j] for j in readers) and i not in busy:
                self.stopped[i] = True
        for j in range(n_sent):
            if self.reason[j] == "sampling" and done[j]:
                self.reason[j] = "significant" if self.flagged[j].any() else "not significant"
        if (self.stopped | ~self.open).all():
            self.finished = True

    def _screen(self, rollouts: pl.DataFrame) -> set[int]:
        """Sparse positions: test each interval between two sampled neighbours i < j (j > i + 1) with the
        sentences' own permutation test at the per-look level; where the ends differ, open the midpoint (and reopen
        the ends: they now have a sentence to measure). Returns the positions that end an interval still under
        test."""
        from anchors._significance import position_pair_pvalues

        sampled = [int(i) for i in np.flatnonzero(self.open & (self.n > 0))]
        busy: set[int] = set()
        for i, j in itertools.pairwise(sampled):
            if j - i < 2 or self.screens.get((i, j)) in ("same", "differs"):
                continue
            ps = np.array(
                list(position_pair_pvalues(rollouts, self.prefixes.trace.id, i, j, self.options).values())
            )
            self.screen_tests += 1
            if (np.isfinite(ps) & (ps < self.alpha_look)).any():
                self.screens[(i, j)] = "differs"
                m = (i + j) // 2
                self.open[m] = True
                self.stopped[[i, j]] = False
                busy |= {i, j}
            elif (~np.isfinite(ps) | (ps >= self.adaptive.futility)).all() and (
                self.looks >= 2 or np.isfinite(ps).all()
            ):
                self.screens[(i, j)] = "same"
            else:
                busy |= {i, j}
        return busy

    def _settled_gap(self, j: int) -> bool:
        """Whether sentence ``j`` lies in an interval whose ends were found not to differ."""
        return any(a <= j < b and state == "same" for (a, b), state in self.screens.items())

    def outcome(self) -> AdaptiveOutcome:
        """The per-sentence verdicts and stop reasons, and the stats, once the rounds are over."""
        if self.table is None:
            raise ValueError(
                f"trace {self.prefixes.trace.id}: the budget ran out before it got a rollout; raise --budget"
            )
        n, samples, n_sent = self.n, self.samples, len(self.reason)
        drawn = self.open & (n > 0)
        measured = drawn[:-1] & drawn[1:]
        at_max = n >= samples
        reason = self.reason.copy()
        for j in range(n_sent):
            if not measured[j]:
                # in an interval whose ends did not differ, or (looks over) one still being bisected
                reason[j] = "skipped (sparse)" if self._settled_gap(j) else "skipped (sparse, looks over)"
            elif reason[j] == "sampling":
                reason[j] = "max samples" if all(at_max[i] for i in (j, j + 1) if i < len(n)) else "budget"
        p_final = {m: self.table[f"{m}_p"].cast(pl.Float64).to_numpy() for m in self.metrics}
        columns: dict[str, Any] = {"stop_reason": pl.Series("stop_reason", list(reason), dtype=pl.String)}
        for k, m in enumerate(self.metrics):
            columns[f"{m}_significant"] = pl.Series(
                f"{m}_significant",
                [
                    bool(self.ever[j, k])
                    if measured[j] and (self.ever[j, k] or np.isfinite(p_final[m][j]))
                    else None
                    for j in range(n_sent)
                ],
                dtype=pl.Boolean,
            )
        per_rollout = 2 if self.forced_answer else 1
        stats = {
            "adaptive": True,
            "adaptive_looks": self.looks,
            "adaptive_schedule": self.sizes,
            "adaptive_alpha_per_look": self.alpha_look,
            "adaptive_rank_rule": self.adaptive.rank,
            "adaptive_rollouts": int(n.sum()) * per_rollout,
            "adaptive_fixed_rollouts": len(n) * samples * per_rollout,
            "adaptive_positions_rollouts": [int(x) for x in n],
        }
        if self.adaptive.stride > 1:
            stats.update(
                adaptive_sparse_stride=self.adaptive.stride,
                adaptive_positions_sampled=int(drawn.sum()),
                adaptive_sentences_skipped=int((~measured).sum()),
                adaptive_interval_tests=self.screen_tests,
            )
        return AdaptiveOutcome(pl.DataFrame(columns), stats, [int(x) for x in n], [not m for m in measured])


def counts_plan(
    prefixes: Any, counts: Any, seed: int, params: Any, forced_answer: bool, forced_params: Any
) -> Any:
    """The plan of ``counts[i]`` rollouts (and probes) at each position ``i`` (none where 0)."""
    from resampling import Plan

    counts = [int(c) for c in counts]
    reqs = []
    for size in sorted({c for c in counts if c > 0}):
        positions = [i for i, c in enumerate(counts) if c == size]
        reqs += prefixes.plan(
            size, seed, params, positions=positions, forced_answer=forced_answer, forced_params=forced_params
        ).requests
    return Plan(reqs, prefixes.plan(1, seed, params, positions=[0]).meta)


def _spread(extra: np.ndarray, left: int) -> np.ndarray:
    """``left`` rollouts spread over the positions that want ``extra``: one a position at a time, in order."""
    given = np.zeros_like(extra)
    while left > 0 and (given < extra).any():
        for i in np.flatnonzero(given < extra):
            if left == 0:
                break
            given[i] += 1
            left -= 1
    return given


def run_rounds(rounds: list[TraceRounds], draw: Any, budget: int | None = None) -> None:
    """The rounds of one or many traces: each round asks every open trace for its rollouts, ``draw(traces)``
    samples them all (one engine pass) and returns each trace's rollouts so far, and each trace looks at its own.
    ``budget`` caps the total over all traces (rollouts and probes); what is left is spread one rollout a position
    at a time."""
    if not rounds:
        return
    sizes = rounds[0].sizes
    per_rollout = 2 if rounds[0].forced_answer else 1
    for target in sizes:
        active = [r for r in rounds if not r.finished]
        if not active:
            break
        extras = [r.extra(target) for r in active]
        given = extras
        if budget is not None:
            left = (budget - sum(int(r.n.sum()) for r in rounds) * per_rollout) // per_rollout
            flat = np.concatenate(extras)
            if int(flat.sum()) > left:
                cut = np.split(_spread(flat, left), np.cumsum([len(e) for e in extras])[:-1])
                given = list(cut)
        go = [r for r, e, g in zip(active, extras, given, strict=True) if r.grant(e, g)]
        if not go:
            break
        for r, rollouts in zip(go, draw(go), strict=True):
            r.look(rollouts, target)


def with_outcome(table: pl.DataFrame, outcome: AdaptiveOutcome) -> pl.DataFrame:
    """The importance table with the rounds' columns, and every metric of a sentence that was not measured (sparse)
    set to NaN: its positions were not both sampled, so there is no difference to report."""
    from anchors._formulas import METRICS

    table = table.with_columns(outcome.columns.get_columns())
    if not any(outcome.skipped):
        return table
    skipped = pl.Series(outcome.skipped)
    names = [c for c in table.columns if any(c == m or c.startswith(f"{m}_") for m in METRICS)]
    names = [
        c for c in names if table[c].dtype in (pl.Float64, pl.Float32) and c not in outcome.columns.columns
    ]
    return table.with_columns(
        [pl.when(skipped).then(float("nan")).otherwise(pl.col(c)).alias(c) for c in names]
    )


def adaptive_split_half(
    rollouts: pl.DataFrame,
    trace_id: str,
    sizes: list[int],
    level: float,
    futility: float,
    options: Any = None,
) -> pl.DataFrame:
    """The A/A check of :func:`anchors.split_half_pvalues` run as the adaptive rounds run it: at each look of
    ``sizes``, each (kind, position)'s first ``n`` rollouts are split into even and odd samples and tested; a pair is
    flagged when its p is below ``level / len(sizes)`` at any look, and stops at its first flag or once p reaches
    ``futility``. One row per (kind, position, statistic): ``flagged`` and ``looks``. The halves cannot differ, so the
    flagged share estimates the sequential test's false-positive rate (at most ``level`` when it is valid)."""
    from anchors._significance import split_half_pvalues

    alpha_look = level / len(sizes)
    state: dict[tuple[str, int, str], list[Any]] = {}
    for n in sizes:
        part = rollouts.filter(pl.col("sample") < n)
        if part.height == 0:
            continue
        table = split_half_pvalues(part, trace_id, options)
        for row in table.iter_rows(named=True):
            if row["n_a"] + row["n_b"] < min(n, 4):
                continue
            for what in ("kl", "accuracy"):
                key = (row["kind"], int(row["position"]), what)
                flagged, looks, stopped, last_n = state.get(key, [False, 0, False, 0])
                size = row["n_a"] + row["n_b"]
                if stopped or size <= last_n:
                    continue
                p = row[f"{what}_p"]
                looks += 1
                if p is not None and math.isfinite(p):
                    if p < alpha_look:
                        flagged, stopped = True, True
                    elif p >= futility:
                        stopped = True
                state[key] = [flagged, looks, stopped, size]
    rows = [(k, p, w, bool(v[0]), int(v[1])) for (k, p, w), v in sorted(state.items())]
    return pl.DataFrame(
        rows,
        schema={
            "kind": pl.String,
            "position": pl.Int64,
            "statistic": pl.String,
            "flagged": pl.Boolean,
            "looks": pl.Int64,
        },
        orient="row",
    )

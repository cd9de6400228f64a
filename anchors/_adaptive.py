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
for every sample both drew, and the rollout cache resumes a run cut between rounds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

__all__ = ["AdaptiveOptions", "look_schedule", "settle"]


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
    is never settled before ``--samples``: its rank is what a reader takes from the run, so it gets every rollout."""

    def __post_init__(self) -> None:
        if self.first < 2:
            raise ValueError(f"first round must draw at least 2 rollouts a position, got {self.first}")
        if self.growth <= 1.0:
            raise ValueError(f"growth must be above 1, got {self.growth}")
        if not 0.0 < self.futility <= 1.0:
            raise ValueError(f"futility must be in (0, 1], got {self.futility}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
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


def top_sentences(table: pl.DataFrame, metrics: tuple[str, ...], k: int) -> np.ndarray:
    """Mask of the sentences among the ``k`` largest values of any of ``metrics`` (accuracy ones by magnitude)."""
    mask = np.zeros(table.height, dtype=bool)
    if k == 0:
        return mask
    for m in metrics:
        v = table[m].cast(pl.Float64).fill_null(math.nan).to_numpy()
        v = np.abs(v) if "accuracy" in m else v
        v = np.where(np.isfinite(v), v, -np.inf)
        if np.isfinite(v).any():
            kth = np.sort(v)[::-1][min(k, v.size) - 1]
            mask |= np.isfinite(v) & (v >= kth)
    return mask


def run_adaptive(
    engine: Any,
    prefixes: Any,
    *,
    samples: int,
    seed: int,
    params: Any,
    forced_params: Any,
    forced_answer: bool,
    truths: dict[str, Any],
    score: Any,
    metrics: tuple[str, ...],
    level: float,
    adaptive: AdaptiveOptions,
) -> tuple[Any, pl.DataFrame, dict[str, Any]]:
    """Rounds of sampling until every sentence is settled, ``samples`` is reached everywhere or the budget is
    spent. ``score(rollouts)`` is the importance table of the rollouts so far. Returns the last engine result,
    the per-sentence adaptive columns (``stop_reason``, ``<metric>_significant``) and stats; the table's own
    ``n_rollouts`` and ``n_forced`` say how many rollouts each position got."""
    from resampling import Plan

    sizes = look_schedule(adaptive.first, samples, adaptive.growth)
    alpha_look = level / len(sizes)
    n_pos = prefixes.n_positions
    n_sent = len(prefixes.sentences)
    per_rollout = 2 if forced_answer else 1
    n = np.zeros(n_pos, dtype=np.int64)
    stopped = np.zeros(n_pos, dtype=bool)
    reason = np.array(["sampling"] * n_sent, dtype=object)
    flagged = np.zeros((n_sent, len(metrics)), dtype=bool)
    ever = np.zeros((n_sent, len(metrics)), dtype=bool)
    result, table, looks = None, None, 0
    for target in sizes:
        want = np.where(stopped, n, np.maximum(n, target))
        extra = want - n
        if adaptive.budget is not None:
            left = (adaptive.budget - int(n.sum()) * per_rollout) // per_rollout
            if int(extra.sum()) > left:  # spread what is left evenly: one rollout a position at a time
                given = np.zeros_like(extra)
                while left > 0 and (given < extra).any():
                    for i in np.flatnonzero(given < extra):
                        if left == 0:
                            break
                        given[i] += 1
                        left -= 1
                stopped |= (extra > 0) & (given == 0)
                extra = given
            want = n + extra
        if looks and not extra.any():
            break
        n = want
        reqs = []
        for size in sorted(set(n.tolist())):
            if size == 0:
                continue
            positions = [int(i) for i in np.flatnonzero(n == size)]
            reqs += prefixes.plan(
                int(size),
                seed,
                params,
                positions=positions,
                forced_answer=forced_answer,
                forced_params=forced_params,
            ).requests
        plan = Plan(reqs, prefixes.plan(1, seed, params, positions=[0]).meta)
        result = engine.run(plan, truths=truths)
        table = score(result.rollouts)
        looks += 1
        flagged, done = settle(table, metrics, alpha_look, adaptive.futility, flagged, nan_settles=looks >= 2)
        ever |= flagged
        if target < sizes[-1]:
            done = done & ~top_sentences(table, metrics, adaptive.top_k)
        # a position stops when every sentence that reads it (sentence i-1 and sentence i) is settled
        for i in range(n_pos):
            readers = [j for j in (i - 1, i) if 0 <= j < n_sent]
            if readers and all(done[j] for j in readers):
                stopped[i] = True
        for j in range(n_sent):
            if reason[j] == "sampling" and done[j]:
                reason[j] = "significant" if flagged[j].any() else "not significant"
        if stopped.all():
            break
    at_max = n >= samples
    for j in range(n_sent):
        if reason[j] == "sampling":
            reads = [i for i in (j, j + 1) if i < n_pos]
            reason[j] = "max samples" if all(at_max[i] for i in reads) else "budget"
    p_final = {m: table[f"{m}_p"].cast(pl.Float64).to_numpy() for m in metrics}
    columns: dict[str, Any] = {
        "stop_reason": pl.Series("stop_reason", list(reason), dtype=pl.String),
    }
    for k, m in enumerate(metrics):
        columns[f"{m}_significant"] = pl.Series(
            f"{m}_significant",
            [bool(ever[j, k]) if (ever[j, k] or np.isfinite(p_final[m][j])) else None for j in range(n_sent)],
            dtype=pl.Boolean,
        )
    stats = {
        "adaptive": True,
        "adaptive_looks": looks,
        "adaptive_schedule": sizes,
        "adaptive_alpha_per_look": alpha_look,
        "adaptive_rollouts": int(n.sum()) * per_rollout,
        "adaptive_fixed_rollouts": n_pos * samples * per_rollout,
        "adaptive_positions_rollouts": [int(x) for x in n],
    }
    return result, pl.DataFrame(columns), stats


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

"""The two conventions of :func:`anchors.importance_table`: which positions a position is compared with, which
definitions apply, and what an undefined value becomes. ``cotscope`` is this toolkit's (``anchors._formulas``);
``thought_anchors`` reproduces the reference code (docs/anchors.md lists every rule)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from anchors._formulas import Comparisons, Metrics, _cotscope_metrics, _safe_div, _Sets
from anchors._options import ImportanceOptions

_NO_REFERENCE = frozenset(
    {"resilience", "counterfactual_pp_importance_accuracy", "counterfactual_pp_importance_kl"}
)
"""Metrics the reference code lacks: their undefined values stay NaN in its convention too."""


def _join(a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    if a is None or b is None:
        return a if b is None else b
    return {key: np.concatenate([a[key], b[key]]) for key in a}


def _reference_metrics(
    ps: _Sets,
    m: Metrics,
    sets: Comparisons,
    *,
    i: int,
    known: Any,
    next_forced: int | None,
    last: bool,
) -> None:
    """The reference code's definitions (``convention="thought_anchors"``; docs/anchors.md lists every rule):
    accuracy 0.0 for a known chunk with nothing graded, resampling accuracy against exactly chunk i+1, the opposite
    sign and another reference set for counterfactual importance, and 0.0 trajectory metrics for the last chunk.
    ``known(kind, p)`` says whether the reference has chunk p."""
    cur, nxt, fcur, fnxt = ps.cur, ps.nxt, ps.fcur, ps.fnxt
    # position i+1 counts only as a chunk: the rollouts after the last sentence (position K) are none, so the last
    # chunk's resampling accuracy is the reference's 0.0, not acc(R_K) - acc(R_{K-1})
    nxt1 = ps.nxt1 if known(0, i + 1) else None

    def ref_acc(kind: int, p: int | None, s: dict[str, Any] | None) -> np.ndarray:
        value = ps.get(s, "acc")
        return np.nan_to_num(value, nan=0.0) if known(kind, p) else value

    m["accuracy"] = (ref_acc(0, i, cur), ps.n_of(cur, "graded"))
    m["resampling_importance_accuracy"] = (
        ref_acc(0, i + 1, nxt1) - ref_acc(0, i, cur),
        min(ps.n_of(cur, "graded"), ps.n_of(nxt1, "graded")),
    )
    sets["resampling_importance_accuracy"] = (ps.rows(cur), ps.rows(nxt1))
    # 0.0 (via NaN) when D_i or the next chunk's answered rollouts are empty; otherwise ungraded -> 0.0
    cf_acc = np.nan_to_num(ps.get(cur, "acc_d"), nan=0.0) - np.nan_to_num(ps.get(nxt, "acc"), nan=0.0)
    if nxt is None or ps.n_of(cur, "n_d") == 0:
        cf_acc = ps.nan
    m["counterfactual_importance_accuracy"] = (cf_acc, min(ps.n_of(cur, "graded_d"), ps.n_of(nxt, "graded")))
    same = cur["counts_same"] if cur is not None and "counts_same" in cur else None
    m["counterfactual_importance_kl"] = (
        ps.kl(cur, "counts_d", nxt, extra=same) if same is not None else ps.nan,
        ps.kl_n(cur, "counts_d", nxt),
    )
    sets["counterfactual_importance_kl"] = (ps.rows(cur, "d"), _join(ps.rows(nxt), ps.rows(cur, "same")))
    m["forced_importance_accuracy"] = (
        ref_acc(1, next_forced, fnxt) - ref_acc(1, i, fcur),
        min(ps.n_of(fcur, "graded"), ps.n_of(fnxt, "graded")),
    )
    dtf = _safe_div(ps.get(cur, "n_d"), ps.get(cur, "n"))
    od = m["overdeterminedness"][0]
    if last:  # the reference returns 0.0 for both when no later chunk exists
        dtf, od = np.zeros_like(dtf), np.zeros_like(od)
    m["different_trajectories_fraction"] = (dtf, ps.n_of(cur, "n"))
    m["overdeterminedness"] = (od, ps.n_of(cur, "n_first"))


class _CotscopeRules:
    """This toolkit's convention inside :func:`importance_table`: position i is compared with position i + 1 and
    the metrics are those of :func:`_cotscope_metrics`; an undefined value stays NaN."""

    def __init__(self, opts: ImportanceOptions, k: int, present: set[int], any_forced: bool) -> None:
        self.opts = opts

    def next_position(self, kind: int, i: int) -> int | None:
        return i + 1

    def metrics(self, ps: _Sets, m: Metrics, sets: Comparisons, i: int) -> str:
        return _cotscope_metrics(ps, m, sets, self.opts)

    def point(self, name: str, value: float) -> float:
        return value


class _ReferenceRules(_CotscopeRules):
    """The thought-anchors convention: the next chunk is the next one that has rollouts, the metrics are those of
    :func:`_reference_metrics`, and an undefined value is 0.0, a negative KL (rounding) 0.0 too."""

    def __init__(self, opts: ImportanceOptions, k: int, present: set[int], any_forced: bool) -> None:
        super().__init__(opts, k, present, any_forced)
        self.k, self.present, self.any_forced = k, present, any_forced

    def next_position(self, kind: int, i: int) -> int | None:
        if kind == 1:
            return i + 1 if self.any_forced and i + 1 < self.k else None
        later = [p for p in self.present if p > i]
        return min(later) if later else None

    def known(self, kind: int, p: int | None) -> bool:
        """A chunk the reference has (see ``present``): one without graded rollouts has accuracy 0.0."""
        return p is not None and p < self.k and (p in self.present if kind == 0 else self.any_forced)

    def metrics(self, ps: _Sets, m: Metrics, sets: Comparisons, i: int) -> str:
        _reference_metrics(
            ps,
            m,
            sets,
            i=i,
            known=self.known,
            next_forced=self.next_position(1, i),
            last=self.next_position(0, i) is None,
        )
        return "counterfactual"

    def point(self, name: str, value: float) -> float:
        if name in _NO_REFERENCE:
            return value
        if not math.isfinite(value):
            return 0.0
        return max(value, 0.0) if name.endswith("_kl") else value

"""Study aggregates: importance by sentence role across many traces, raw and with position removed.

A study is one importance table holding the sentences of many traces (a ``trace_id`` column). Sentences of one trace
are not independent (they share a problem, a base solution and the rollouts of neighbouring positions), so every
interval here comes from a **cluster bootstrap over traces**: each replicate draws traces with replacement and
keeps all sentences of each trace drawn.

For every metric, role and split (``all``; ``correct`` / ``incorrect`` base solution where ``base_correct`` is
known), :func:`aggregate` gives

- ``mean``: mean over sentences; ``trace_mean``: mean over traces of each trace's mean (each trace weighs the same,
  as Thought Anchors' category figures do);
- ``debiased``: the role's mean residual after regressing the metric on a polynomial of relative position
  (``position / (K - 1)`` in a trace of K sentences) over all sentences of the split, as Thought Anchors'
  ``plot_debiased_tag_effects`` does. The polynomial is refitted in every bootstrap replicate, so its uncertainty
  is part of the interval;
- ``share_significant``: share of the role's sentences whose ``<metric>_significant`` flag is true (NaN when the
  table has no such flag); ``n_sentences`` and ``n_traces``.

Undefined values (null or NaN) are left out, metric by metric.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "AGGREGATE_VERSION",
    "DEBIAS_DEGREE",
    "aggregate",
    "aggregate_metrics",
    "position_fit",
    "relative_position",
]

AGGREGATE_VERSION = 1
"""Format version of ``aggregate.parquet`` (stored in its metadata)."""

DEBIAS_DEGREE = 10
"""Degree of the position polynomial: Thought Anchors' (``plots.py``, degree 10 on normalised position), so that the
debiased role effects are comparable with the published figure (2,929 sentences there). It is lowered where the
data cannot carry it: to one less than the number of distinct relative positions, and to at most
``n // SENTENCES_PER_COEFFICIENT - 1`` for n sentences with a value, so that each coefficient rests on about ten
sentences (a degree-10 fit to a few dozen sentences follows their noise and absorbs the role effects it is meant to
leave). The fit uses a Legendre basis on [-1, 1], which is well conditioned at degree 10 where raw powers of a
number in [0, 1] are not; the fitted curve is the same polynomial."""

SENTENCES_PER_COEFFICIENT = 10
"""Sentences per polynomial coefficient below which :data:`DEBIAS_DEGREE` is lowered (about ten observations per
parameter, the usual rule of thumb for a regression that should not follow noise)."""

SPLITS = ("all", "correct", "incorrect")

_SCHEMA: dict[str, Any] = {
    "metric": pl.String,
    "split": pl.String,
    "role": pl.String,
    "n_sentences": pl.Int64,
    "n_traces": pl.Int64,
    "mean": pl.Float64,
    "mean_lo": pl.Float64,
    "mean_hi": pl.Float64,
    "trace_mean": pl.Float64,
    "trace_mean_lo": pl.Float64,
    "trace_mean_hi": pl.Float64,
    "debiased": pl.Float64,
    "debiased_lo": pl.Float64,
    "debiased_hi": pl.Float64,
    "share_significant": pl.Float64,
    "degree": pl.Int64,
}


def relative_position(table: pl.DataFrame) -> np.ndarray:
    """``position / (K - 1)`` per row, K the number of sentences of the row's trace (0 for a one-sentence trace)."""
    if table.height == 0:
        return np.zeros(0)
    rank = table.select(
        (pl.col("position").rank("ordinal").over("trace_id") - 1).alias("r"),
        pl.len().over("trace_id").alias("k"),
    )
    k = rank["k"].to_numpy().astype(float)
    r = rank["r"].to_numpy().astype(float)
    return np.where(k > 1, r / np.maximum(k - 1, 1), 0.0)


def aggregate_metrics(table: pl.DataFrame) -> list[str]:
    """The metric columns of ``table`` worth aggregating: the importance metrics, matrix and white-box scores, and
    published values, that hold at least one finite number."""
    from anchors._formulas import METRICS
    from anchors._ta_format import TA_METRICS

    known = [
        *METRICS,
        "outgoing_importance",
        "incoming_importance",
        "receiver_score",
        "suppression_outgoing",
        *(f"published_{m}" for m in TA_METRICS),
    ]
    out = []
    for name in known:
        if name in table.columns and table[name].dtype.is_numeric():
            values = table[name].cast(pl.Float64).to_numpy()
            if np.isfinite(values).any():
                out.append(name)
    return out


def _legendre(x: np.ndarray, degree: int) -> np.ndarray:
    return np.polynomial.legendre.legvander(2.0 * x - 1.0, degree)


def _degree(x: np.ndarray, degree: int) -> int:
    """``degree``, lowered to what ``len(x)`` sentences at their distinct positions carry (:data:`DEBIAS_DEGREE`)."""
    return int(max(min(degree, len(np.unique(x)) - 1, len(x) // SENTENCES_PER_COEFFICIENT - 1), 0))


def position_fit(x: np.ndarray, y: np.ndarray, degree: int = DEBIAS_DEGREE) -> tuple[Any, int]:
    """The least-squares polynomial of relative position ``x`` fitted to ``y`` (as a callable) and its degree."""
    deg = _degree(np.asarray(x, dtype=float), degree)
    coef = np.linalg.lstsq(
        _legendre(np.asarray(x, dtype=float), deg), np.asarray(y, dtype=float), rcond=None
    )[0]
    return (lambda z: _legendre(np.asarray(z, dtype=float), deg) @ coef), deg


def _weighted_fit(xtx: np.ndarray, xty: np.ndarray) -> np.ndarray:
    """Least-squares coefficients from stacked normal equations ``(B, d, d)``, ``(B, d)``; minimum norm when
    singular (a replicate that drew few distinct positions)."""
    return np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(xtx, xty, strict=True)])


def _interval(reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column of ``reps`` (replicates x roles), ignoring undefined replicates."""
    tail = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanquantile(reps, tail, axis=0)
        hi = np.nanquantile(reps, 1.0 - tail, axis=0)
    return lo, hi


def _one_metric(
    frame: pl.DataFrame,
    metric: str,
    split: str,
    weights: np.ndarray,
    level: float,
    degree: int,
) -> list[dict[str, Any]]:
    """Rows of :func:`aggregate` for one metric and split; ``weights`` (replicates x the split's traces, in sorted
    order) are the bootstrap draws, shared by every metric of the split."""
    trace_index = {t: k for k, t in enumerate(sorted(set(frame["trace_id"].to_list())))}
    y = frame[metric].cast(pl.Float64).to_numpy()
    keep = np.isfinite(y)
    if not keep.any():
        return []
    frame, y = frame.filter(pl.Series(keep)), y[keep]
    x = relative_position(frame) if "relative_position" not in frame.columns else frame["relative_position"]
    x = np.asarray(x, dtype=float)
    roles = frame["role"].fill_null("unknown").to_list()
    role_names = sorted(set(roles))
    r_idx = np.array([role_names.index(r) for r in roles])
    t_idx = np.array([trace_index[t] for t in frame["trace_id"].to_list()])
    n_t, n_r = len(trace_index), len(role_names)
    deg = _degree(x, degree)
    design = _legendre(x, deg)
    d = design.shape[1]

    # per (trace, role) sums: everything a replicate needs is a weighted sum of these over traces
    sums = np.zeros((n_t, n_r))
    counts = np.zeros((n_t, n_r))
    design_sums = np.zeros((n_t, n_r, d))
    np.add.at(sums, (t_idx, r_idx), y)
    np.add.at(counts, (t_idx, r_idx), 1.0)
    np.add.at(design_sums, (t_idx, r_idx), design)
    xtx = np.zeros((n_t, d, d))
    xty = np.zeros((n_t, d))
    np.add.at(xtx, t_idx, design[:, :, None] * design[:, None, :])
    np.add.at(xty, t_idx, design * y[:, None])

    flags = None
    flag_name = f"{metric}_significant"
    if flag_name in frame.columns:
        flags = frame[flag_name].cast(pl.Float64).to_numpy()

    def stats(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, trace_mean, debiased) per role for trace weights ``w`` (B x traces)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = w @ counts
            mean = (w @ sums) / n
            present = counts > 0
            per_trace = np.where(present, sums / np.where(present, counts, 1.0), 0.0)
            trace_mean = (w @ per_trace) / (w @ present.astype(float))
            beta = _weighted_fit(np.einsum("bt,tij->bij", w, xtx), w @ xty)
            fitted = np.einsum("bt,trd,bd->br", w, design_sums, beta)
            debiased = (w @ sums - fitted) / n
        return mean, trace_mean, debiased

    # the point estimate weighs every trace once; a replicate weighs each by how often it was drawn
    mean, trace_mean, debiased = (s[0] for s in stats(np.ones((1, n_t))))
    reps = stats(weights)
    bounds = [_interval(r, level) for r in reps]
    n_traces = (counts > 0).sum(axis=0)
    rows = []
    for k, role in enumerate(role_names):
        in_role = r_idx == k
        share = math.nan
        if flags is not None:
            f = flags[in_role]
            f = f[np.isfinite(f)]
            share = float(f.mean()) if f.size else math.nan
        rows.append(
            {
                "metric": metric,
                "split": split,
                "role": role,
                "n_sentences": int(in_role.sum()),
                "n_traces": int(n_traces[k]),
                "mean": float(mean[k]),
                "mean_lo": float(bounds[0][0][k]),
                "mean_hi": float(bounds[0][1][k]),
                "trace_mean": float(trace_mean[k]),
                "trace_mean_lo": float(bounds[1][0][k]),
                "trace_mean_hi": float(bounds[1][1][k]),
                "debiased": float(debiased[k]),
                "debiased_lo": float(bounds[2][0][k]),
                "debiased_hi": float(bounds[2][1][k]),
                "share_significant": share,
                "degree": deg,
            }
        )
    return rows


def aggregate(
    table: pl.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    degree: int = DEBIAS_DEGREE,
) -> pl.DataFrame:
    """Per metric, split and role: means, debiased effects, cluster-bootstrap intervals (module docstring).

    ``table`` needs ``trace_id``, ``position`` and ``role``; ``base_correct`` (true, false or null) adds the
    ``correct`` and ``incorrect`` splits. ``metrics``: default :func:`aggregate_metrics`. Intervals are percentile
    intervals of ``n_bootstrap`` replicates at ``level``; the same draws of traces (``seed``) serve every metric.
    """
    missing = [c for c in ("trace_id", "position", "role") if c not in table.columns]
    if missing:
        raise ValueError(
            f"the table has no {', '.join(missing)} column; aggregate a study table (importance.parquet of "
            "cotscope importance --traces, or of cotscope import thought-anchors DATASET_DIR)"
        )
    if metrics is None:
        metrics = aggregate_metrics(table)
    bad = [m for m in metrics if m not in table.columns]
    if bad:
        raise ValueError(
            f"no column {bad[0]!r} in the table; choose among {', '.join(aggregate_metrics(table)[:5])}"
        )
    table = table.with_columns(pl.Series("relative_position", relative_position(table)))
    splits: list[tuple[str, pl.DataFrame]] = [("all", table)]
    if "base_correct" in table.columns:
        for name, flag in (("correct", True), ("incorrect", False)):
            part = table.filter(pl.col("base_correct") == flag)
            if part.height:
                splits.append((name, part))
    rows: list[dict[str, Any]] = []
    for split, frame in splits:
        # traces are drawn within the split (a stratified bootstrap): each replicate has the split's trace count
        n = frame["trace_id"].n_unique()
        weights = (
            np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap).astype(float)
        )
        for metric in metrics:
            rows.extend(_one_metric(frame, metric, split, weights, level, degree))
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")

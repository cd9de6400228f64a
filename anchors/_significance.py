"""Uncertainty of the importance metrics: bootstrap weights and BCa intervals, permutation p-values, and the A/A
check of the permutation test (:func:`split_half_pvalues`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from anchors._formulas import METRICS, kl_divergence
from anchors._options import NO_ANSWER, ImportanceOptions, _check_rollouts

SIGNIFICANCE_METRICS: tuple[str, ...] = tuple(name for name in METRICS if "_importance_" in name)
"""The metrics that compare two sets of rollouts; each has ``<metric>_p`` (permutation p-value, NaN where the metric
is undefined or ``n_permutations`` is 0) and ``<metric>_significant`` (``p < significance_level``; null where p is
NaN) columns.

Null hypothesis: both sets' rollouts come from one distribution (the sentence changes nothing). The rollouts of the
two sets are pooled and split at random into sets of the original sizes, ``n_permutations`` times; ``p = (1 + #{null
statistic >= observed}) / (1 + n_permutations)`` (Phipson & Smyth 2010), where the statistic is the KL itself for KL
metrics (one-sided: KL is never negative) and the absolute accuracy difference for accuracy metrics (two-sided;
only graded rollouts are relabelled). This is the exact test of "no change" for these statistics, whatever their
bias: two samples of one 3-answer distribution give an add-one KL of about 0.05 at 30 rollouts a side, and the
null distribution holds the same bias."""


def _weights(n: int, n_boot: int, seed: int, kind: int, position: int) -> np.ndarray:
    """Row 0: every rollout once (the point estimate); rows 1..B: multinomial bootstrap counts."""
    w = np.ones((n_boot + 1, n), dtype=np.float64)
    if n_boot and n:
        rng = np.random.default_rng([seed, kind, position])
        draws = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
        w[1:] = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)
    return w


def _replicate_weights(n: int, n_boot: int, seed: int, kind: int, position: int) -> np.ndarray:
    """:func:`_weights`, then (when there is a bootstrap) ``n`` jackknife rows that each leave one rollout out."""
    w = _weights(n, n_boot, seed, kind, position)
    if not n_boot or not n:
        return w
    return np.vstack([w, 1.0 - np.eye(n)])


def _row_sets(
    frame: pl.DataFrame,
    answer_codes: dict[str, int],
    no_answer_code: int,
    differs: np.ndarray | None,
    reappears: np.ndarray | None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-rollout arrays of one position for the permutation tests: every rollout (``all``), D_i (``d``), its
    complement among rollouts with a first sentence (``same``) and D_i⁻ (``gone``), as in :func:`_position_stats`.
    ``code`` is the answer code, ``no_answer_code`` for no answer (-1: left out of KL)."""
    answer = frame["answer_norm"].to_list()
    correct = frame["correct"].to_list()
    every = {
        "code": np.array(
            [answer_codes[a] if a is not None else no_answer_code for a in answer], dtype=np.int64
        ),
        "graded": np.array(
            [a is not None and c is not None for a, c in zip(answer, correct, strict=True)], float
        ),
        "right": np.array([bool(c) and a is not None for a, c in zip(answer, correct, strict=True)], float),
    }
    out = {"all": every}
    if differs is None:
        return out

    def subset(mask: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value[mask] for key, value in every.items()}

    has_first = np.array([f is not None for f in frame["first_sentence"].to_list()])
    d = (np.nan_to_num(differs, nan=0.0) > 0) & has_first
    out["d"] = subset(d)
    out["same"] = subset(has_first & ~d)
    if reappears is not None:
        out["gone"] = subset(d & (reappears == 0))
    return out


def _ci(values: np.ndarray, level: float, n_boot: int, segments: Sequence[int] = ()) -> tuple[float, float]:
    """BCa interval (Efron & Tibshirani 1993, eq. 14.10-14.15) from ``values``: the estimate, ``n_boot`` bootstrap
    replicates, then jackknife values in ``segments`` (one per set of rollouts the statistic reads, each leaving
    one rollout of that set out). Replicates that are NaN (below a floor) are left out. The interval is widened to
    the estimate where BCa's adjusted levels leave it outside (see ``ImportanceOptions.ci_level``)."""
    from scipy.special import ndtr, ndtri

    point = values[0]
    boot = values[1 : 1 + n_boot]
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(point) or boot.size == 0:
        return math.nan, math.nan
    # z0: the share of replicates below the estimate (ties count half, as scipy does), kept off 0 and 1
    share = (np.sum(boot < point) + 0.5 * np.sum(boot == point)) / boot.size
    share = min(max(share, 0.5 / boot.size), 1.0 - 0.5 / boot.size)
    z0 = float(ndtri(share))
    # acceleration from the multi-sample jackknife (scipy.stats.bootstrap's formula)
    num = den = 0.0
    start = 1 + n_boot
    for n in segments:
        jack = values[start : start + n]
        start += n
        jack = jack[np.isfinite(jack)]
        if jack.size < 2:
            continue
        u = (jack.size - 1) * (jack.mean() - jack)
        num += float(np.sum(u**3)) / jack.size**3
        den += float(np.sum(u**2)) / jack.size**2
    accel = num / (6.0 * den**1.5) if den > 0 else 0.0
    z = float(ndtri((1.0 - level) / 2))
    levels = []
    for zz in (z, -z):
        t = z0 + zz
        levels.append(
            float(ndtr(z0 + t / (1.0 - accel * t))) if 1.0 - accel * t > 0 else (0.0 if zz < 0 else 1.0)
        )
    lo, hi = np.quantile(boot, levels)
    return float(min(lo, point)), float(max(hi, point))


def _perm_p(
    a: dict[str, np.ndarray] | None,
    b: dict[str, np.ndarray] | None,
    what: str,
    observed: float,
    n_perm: int,
    rng: np.random.Generator,
    alpha: float,
    n_codes: int,
) -> float:
    """Permutation p-value of "sets a and b come from one distribution" (see :data:`SIGNIFICANCE_METRICS`).

    ``a`` and ``b`` hold per-rollout arrays: ``code`` (answer code, -1 when left out of KL), ``graded`` and ``right``.
    ``what`` is ``accuracy`` (|acc(b) - acc(a)|, graded rollouts relabelled) or ``kl`` (KL(a || b))."""
    if a is None or b is None or n_perm == 0 or not math.isfinite(observed):
        return math.nan
    if what == "accuracy":
        xa, xb = a["right"][a["graded"] > 0], b["right"][b["graded"] > 0]
    else:
        xa, xb = a["code"][a["code"] >= 0], b["code"][b["code"] >= 0]
    na, nb = xa.size, xb.size
    if na == 0 or nb == 0:
        return math.nan
    pool = np.concatenate([xa, xb])
    in_a = _first_of_each_row(rng.random((n_perm, na + nb)), na)
    if what == "accuracy":
        right_a = in_a @ pool
        null = np.abs((pool.sum() - right_a) / nb - right_a / na)
        stat = abs(observed)
    else:
        onehot = np.zeros((na + nb, n_codes))
        onehot[np.arange(na + nb), pool.astype(int)] = 1.0
        counts_a = in_a @ onehot
        null = kl_divergence(counts_a, onehot.sum(0)[None, :] - counts_a, alpha)
        stat = observed
    return float((1 + np.sum(null >= stat - 1e-12)) / (1 + n_perm))


def _first_of_each_row(draws: np.ndarray, n: int) -> np.ndarray:
    """1.0 where an entry is among the ``n`` first of its row in ``np.argsort`` order (the ``n`` smallest), else 0.0:
    a random split of each row's indices. Found with a partition (about 4x faster than sorting 20 entries a row);
    a row with a tie at the cut, which 53-bit uniform draws practically never have, takes the argsort itself."""
    cut = np.partition(draws, n - 1, axis=1)[:, n - 1 : n]
    out = (draws <= cut).astype(np.float64)
    tied = np.flatnonzero(out.sum(axis=1) != n)
    if tied.size:
        rows = np.zeros((tied.size, draws.shape[1]))
        np.put_along_axis(rows, np.argsort(draws[tied], axis=1)[:, :n], 1.0, axis=1)
        out[tied] = rows
    return out


def _two_sets(
    a: dict[str, np.ndarray],
    b: dict[str, np.ndarray],
    what: str,
    n_codes: int,
    keep: slice,
    opts: Any,
    rng: Any,
) -> tuple[float, float]:
    """The statistic of :data:`SIGNIFICANCE_METRICS` between two sets of rollouts (``kl``: KL(a || b), smoothed as
    the importance KL; ``accuracy``: acc(b) - acc(a)) and its permutation p-value."""
    if what == "kl":
        counts = [
            np.bincount(x["code"][x["code"] >= 0], minlength=n_codes)[None, :].astype(float) for x in (a, b)
        ]
        value = float(kl_divergence(counts[0][:, keep], counts[1][:, keep], opts.alpha)[0])
    else:
        graded = [x["graded"] > 0 for x in (a, b)]
        accs = [x["right"][g].mean() if g.any() else math.nan for x, g in zip((a, b), graded, strict=True)]
        value = accs[1] - accs[0]
    return value, _perm_p(a, b, what, value, opts.n_permutations, rng, opts.alpha, n_codes)


def _answer_codes(rows: pl.DataFrame, opts: Any) -> tuple[dict[str, int], int, slice]:
    """Answer codes of a trace's rollouts, the no-answer code (-1: left out of KL) and the KL's columns."""
    answers = sorted({a for a in rows["answer_norm"].to_list() if a})
    codes = {a: c for c, a in enumerate(answers)}
    codes[NO_ANSWER] = len(codes)
    no_answer_code = codes[NO_ANSWER] if opts.bucket_no_answer else -1
    return codes, no_answer_code, slice(None) if no_answer_code >= 0 else slice(0, len(answers))


def position_pair_pvalues(
    rollouts: pl.DataFrame, trace_id: str, i: int, j: int, options: ImportanceOptions | None = None
) -> dict[str, float]:
    """Permutation p-values of "positions ``i`` and ``j`` have one answer distribution": for each kind of
    rollout (``resample``, ``forced_answer``) and each statistic (``kl``, ``accuracy``), the test of
    :data:`SIGNIFICANCE_METRICS` between the two positions' rollouts (as if the sentences ``i .. j-1`` were one
    sentence). NaN where a position has no rollouts of that kind."""
    opts = options or ImportanceOptions()
    rows = _check_rollouts(rollouts, trace_id, int(rollouts["position"].max() or 0))
    codes, no_answer_code, keep = _answer_codes(rows, opts)
    out = {}
    for t, kind in enumerate(("resample", "forced_answer")):
        sets = [
            _row_sets(
                rows.filter((pl.col("kind") == kind) & (pl.col("position") == p)),
                codes,
                no_answer_code,
                None,
                None,
            )["all"]
            for p in (i, j)
        ]
        for k, what in enumerate(("kl", "accuracy")):
            rng = np.random.default_rng([opts.seed, 13, i, j, k, t])
            _, p = _two_sets(sets[0], sets[1], what, len(codes), keep, opts, rng)
            out[f"{kind}_{what}"] = p if sets[0]["code"].size and sets[1]["code"].size else math.nan
    return out


def split_half_pvalues(
    rollouts: pl.DataFrame, trace_id: str, options: ImportanceOptions | None = None
) -> pl.DataFrame:
    """An A/A check of the permutation test on real rollouts: each position's rollouts of one kind, split into two
    halves by sample index (even and odd), compared with the statistics and test of :data:`SIGNIFICANCE_METRICS`.

    The two halves come from one distribution by construction (the same prefix, independent seeds), so "no change"
    is true for every row, and a calibrated test gives ``p < significance_level`` in about that share of rows (a
    discrete statistic makes the share lower, never higher, up to sampling noise). One row per (``kind``,
    ``position``) with at least two rollouts a half: ``n_a``, ``n_b``, ``distinct`` (answer codes seen in either
    half; with one, no split can differ and p is 1), ``kl`` (KL(even || odd), smoothed as the
    importance KL), ``kl_p``, ``accuracy`` (acc(odd) - acc(even)) and ``accuracy_p``.
    """
    opts = options or ImportanceOptions()
    if not isinstance(rollouts, pl.DataFrame) or "sample" not in rollouts.columns:
        raise ValueError("rollouts must be the engine's table, with a 'sample' column; pass rollouts.parquet")
    rows = _check_rollouts(rollouts, trace_id, int(rollouts["position"].max() or 0))
    codes, no_answer_code, keep = _answer_codes(rows, opts)
    records = []
    for (kind, position), frame in sorted(rows.partition_by("kind", "position", as_dict=True).items()):
        frame = frame.sort("sample")
        even = _row_sets(frame.filter(pl.col("sample") % 2 == 0), codes, no_answer_code, None, None)["all"]
        odd = _row_sets(frame.filter(pl.col("sample") % 2 == 1), codes, no_answer_code, None, None)["all"]
        if min(even["code"].size, odd["code"].size) < 2:
            continue
        rec: dict[str, Any] = {
            "kind": kind,
            "position": position,
            "n_a": even["code"].size,
            "n_b": odd["code"].size,
            "distinct": len({*even["code"].tolist(), *odd["code"].tolist()}),
        }
        for k, what in enumerate(("kl", "accuracy")):
            rng = np.random.default_rng([opts.seed, 11, position, k, 0 if kind == "resample" else 1])
            rec[what], rec[f"{what}_p"] = _two_sets(even, odd, what, len(codes), keep, opts, rng)
        records.append(rec)
    schema = {
        "kind": pl.String,
        "position": pl.Int64,
        "n_a": pl.Int64,
        "n_b": pl.Int64,
        "distinct": pl.Int64,
        "kl": pl.Float64,
        "kl_p": pl.Float64,
        "accuracy": pl.Float64,
        "accuracy_p": pl.Float64,
    }
    return pl.DataFrame(records, schema=schema, orient="row") if records else pl.DataFrame(schema=schema)

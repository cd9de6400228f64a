"""The formulas of black-box thought-anchor importance (Bogdan et al. 2025, arXiv 2506.19143).

Notation. ``S_i`` is sentence ``i`` of the CoT (``K`` sentences). ``R_p`` is the set of ``resample`` rollouts at
position ``p``: the prefix holds the sentences ``< p`` and the model writes the rest, starting with a regenerated
sentence at ``p``. ``R_{i+1}`` therefore keeps ``S_i`` and ``R_i`` resamples it. ``F_p`` is the same for
``forced_answer`` rollouts (answer right after the prefix). ``D_i`` is the subset of ``R_i`` whose regenerated first
sentence differs in meaning from ``S_i``: embedding cosine below ``similarity_threshold``.

Sign convention (one for every metric here): **positive means that keeping sentence i raises accuracy, or moves the
answer distribution**. Accuracy metrics are "kept minus removed"; KL metrics are ``KL(removed || kept)`` and are
never negative. Undefined values are NaN, never 0, and every value has its sample size (``_n``) and a BCa
bootstrap interval (``_lo``, ``_hi``; Efron 1987, Efron & Tibshirani 1993 ch. 14) beside it. Every comparison of
two rollout sets (the importance metrics) also has a permutation p-value (``_p``) and a significance flag
(``_significant``): how often relabelling the two sets' rollouts at random gives a value at least as far from "no
change" as the observed one. Smoothed KL is never negative, so its interval never holds 0; the p-value says whether
a value is distinguishable from sampling noise.

``convention="thought_anchors"`` reproduces the reference code instead (see :class:`ImportanceOptions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from anchors._options import NO_ANSWER, ImportanceOptions

METRICS: tuple[str, ...] = (
    "accuracy",
    "resampling_importance_accuracy",
    "resampling_importance_kl",
    "counterfactual_importance_accuracy",
    "counterfactual_importance_kl",
    "forced_importance_accuracy",
    "forced_importance_kl",
    "different_trajectories_fraction",
    "overdeterminedness",
    "resilience",
    "counterfactual_pp_importance_accuracy",
    "counterfactual_pp_importance_kl",
)
"""Per-sentence metrics of :func:`importance_table`, each with ``_lo``, ``_hi`` and ``_n`` columns.

- ``accuracy`` = acc(R_i): fraction correct among graded rollouts (answer present, ``correct`` not null).
- ``resampling_importance_accuracy`` = acc(R_{i+1}) - acc(R_i).
- ``resampling_importance_kl`` = KL(P(R_i) || P(R_{i+1})) over ``answer_norm``.
- ``counterfactual_importance_accuracy`` = acc(R_{i+1}) - acc(D_i) (the reference code has the opposite sign).
- ``counterfactual_importance_kl`` = KL(P(D_i) || P(R_{i+1})) (the reference compares with R_{i+1} ∪ (R_i ∖ D_i)).
- ``forced_importance_accuracy`` = acc(F_{i+1}) - acc(F_i); ``forced_importance_kl`` = KL(P(F_i) || P(F_{i+1})).
- ``different_trajectories_fraction`` = |D_i| / |R_i| (rollouts with a first sentence).
- ``overdeterminedness`` = 1 - #unique(first sentences of R_i) / #(first sentences of R_i), exact strings (no
  bootstrap interval: resampling with replacement biases a distinct count).
- ``resilience`` = fraction of D_i whose continuation still holds a sentence matching S_i (cosine >= threshold):
  how often content that was resampled away comes back (one step of Thought Branches' resilience).
- ``counterfactual_pp_importance_accuracy`` = acc(R_{i+1}) - acc(D_i⁻) and ``..._kl`` = KL(P(D_i⁻) || P(R_{i+1})),
  where D_i⁻ ⊆ D_i are the rollouts whose continuation never brings S_i's content back.

The counterfactual metrics (plain and ++) are defined only when the set they read (D_i, or D_i⁻) holds at least
``ImportanceOptions.min_different`` rollouts and the different-trajectories fraction exceeds
``ImportanceOptions.min_dtf``; otherwise they are NaN, or resampling importance with
``counterfactual_fallback="resampling"`` (Thought Branches' rule). The ``counterfactual_source`` column says which.
"""


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """KL(P || Q) in nats from answer counts, with additive smoothing ``alpha`` over the union of observed answers.

    ``p(a) = (c_P(a) + alpha) / (N_P + alpha * V)`` where ``V`` is the number of answers with a nonzero count in
    either set. Works row-wise on 2-D count arrays (one row per bootstrap replicate). NaN when either set is empty.
    """
    p_counts = np.atleast_2d(np.asarray(p_counts, dtype=np.float64))
    q_counts = np.atleast_2d(np.asarray(q_counts, dtype=np.float64))
    n_p = p_counts.sum(1)
    n_q = q_counts.sum(1)
    support = (p_counts > 0) | (q_counts > 0)
    v = support.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (p_counts + alpha) / (n_p + alpha * v)[:, None]
        q = (q_counts + alpha) / (n_q + alpha * v)[:, None]
        terms = np.where(support & (p > 0), p * np.log(p / q), 0.0)
    kl = terms.sum(1)
    kl[(n_p <= 0) | (n_q <= 0)] = np.nan
    return kl


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _position_stats(
    frame: pl.DataFrame,
    answer_codes: dict[str, int],
    w: np.ndarray,
    differs: np.ndarray | None = None,
    reappears: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Weighted counts for one position: accuracy, answer counts, and the D_i / D_i⁻ subsets."""
    n = frame.height
    answer = frame["answer_norm"].to_list()
    correct = frame["correct"].to_list()
    graded = np.array([a is not None and c is not None for a, c in zip(answer, correct, strict=True)], float)
    right = np.array([bool(c) for c in correct], float) * graded
    onehot = np.zeros((n, len(answer_codes)), float)
    for r, a in enumerate(answer):
        onehot[r, answer_codes[a if a is not None else NO_ANSWER]] = 1.0
    out: dict[str, np.ndarray] = {
        "n": w.sum(1),
        "graded": w @ graded,
        "acc": _safe_div(w @ right, w @ graded),
        "counts": w @ onehot,
    }
    if differs is None:
        return out
    first = frame["first_sentence"].to_list()
    has_first = np.array([f is not None for f in first], float)
    d = np.nan_to_num(differs, nan=0.0) * has_first
    firsts = sorted({f for f in first if f is not None})
    code = {f: k for k, f in enumerate(firsts)}
    first_onehot = np.zeros((n, len(firsts)), float)
    for r, f in enumerate(first):
        if f is not None:
            first_onehot[r, code[f]] = 1.0
    n_first = w @ has_first
    n_d = w @ d
    out.update(
        n_first=n_first,
        n_d=n_d,
        dtf=_safe_div(n_d, n_first),
        od=1.0 - _safe_div((w @ first_onehot > 0).sum(1).astype(float), n_first),
        acc_d=_safe_div(w @ (right * d), w @ (graded * d)),
        graded_d=w @ (graded * d),
        counts_d=w @ (onehot * d[:, None]),
        counts_same=w @ (onehot * (has_first - d)[:, None]),
    )
    if reappears is not None:
        back = d * reappears
        gone = d * (1.0 - reappears)
        out.update(
            resilience=_safe_div(w @ back, n_d),
            n_gone=w @ gone,
            acc_gone=_safe_div(w @ (right * gone), w @ (graded * gone)),
            graded_gone=w @ (graded * gone),
            counts_gone=w @ (onehot * gone[:, None]),
        )
    return out


@dataclass
class _Sets:
    """The rollout sets position i's metrics read, each a dict of statistics with one entry per replicate (the data,
    the bootstrap replicates, the jackknife values; see :func:`importance_table`), or None when there are none:
    R_i (``cur``), the next position's R (``nxt``; the next chunk with rollouts in the reference convention),
    R_{i+1} (``nxt1``), F_i (``fcur``) and the next F (``fnxt``)."""

    cur: dict[str, Any] | None
    nxt: dict[str, Any] | None
    nxt1: dict[str, Any] | None
    fcur: dict[str, Any] | None
    fnxt: dict[str, Any] | None
    nan: np.ndarray
    keep: slice
    alpha: float

    def get(self, s: dict[str, Any] | None, key: str) -> np.ndarray:
        """A statistic for every replicate; NaN when the set is missing."""
        return s[key] if s is not None and key in s else self.nan

    @staticmethod
    def n_of(s: dict[str, Any] | None, key: str) -> float:
        """A count on the data itself (replicate 0)."""
        return float(s[key][0]) if s is not None and key in s else 0.0

    def kl(self, p_stats, p_key: str, q_stats, extra: np.ndarray | None = None) -> np.ndarray:
        """KL(P || Q) per replicate, P = answer counts ``p_key`` of ``p_stats``, Q = all answers of ``q_stats``."""
        if p_stats is None or q_stats is None or p_key not in p_stats:
            return self.nan
        q = q_stats["counts"] if extra is None else q_stats["counts"] + extra
        return kl_divergence(p_stats[p_key][:, self.keep], q[:, self.keep], self.alpha)

    def kl_n(self, p_stats, p_key: str, q_stats) -> float:
        if p_stats is None or q_stats is None or p_key not in p_stats:
            return 0.0
        return float(min(p_stats[p_key][0, self.keep].sum(), q_stats["counts"][0, self.keep].sum()))

    @staticmethod
    def rows(s: dict[str, Any] | None, which: str = "all") -> dict[str, np.ndarray] | None:
        """The per-rollout arrays of a set (or of its subset ``d``, ``same``, ``gone``) for the permutation test."""
        return None if s is None else s["_rows"].get(which)


Metrics = dict[str, tuple[np.ndarray, float]]
"""metric -> (value per replicate, sample size)."""
Comparisons = dict[str, tuple[Any, Any]]
"""metric -> the two sets of rollouts it compares (per-rollout arrays), for its permutation test."""


def _shared_metrics(ps: _Sets) -> tuple[Metrics, Comparisons]:
    """The metrics both conventions define the same way, and every comparison's two sets as cotscope reads them."""
    cur, nxt, fcur, fnxt = ps.cur, ps.nxt, ps.fcur, ps.fnxt
    m: Metrics = {
        "accuracy": (ps.get(cur, "acc"), ps.n_of(cur, "graded")),
        "resampling_importance_kl": (ps.kl(cur, "counts", nxt), ps.kl_n(cur, "counts", nxt)),
        "forced_importance_kl": (ps.kl(fcur, "counts", fnxt), ps.kl_n(fcur, "counts", fnxt)),
        "overdeterminedness": (ps.get(cur, "od"), ps.n_of(cur, "n_first")),
        "resilience": (ps.get(cur, "resilience"), ps.n_of(cur, "n_d")),
        "counterfactual_pp_importance_accuracy": (
            ps.get(nxt, "acc") - ps.get(cur, "acc_gone"),
            min(ps.n_of(cur, "graded_gone"), ps.n_of(nxt, "graded")),
        ),
        "counterfactual_pp_importance_kl": (ps.kl(cur, "counts_gone", nxt), ps.kl_n(cur, "counts_gone", nxt)),
    }
    rows = ps.rows
    sets: Comparisons = {
        "resampling_importance_accuracy": (rows(cur), rows(nxt)),
        "resampling_importance_kl": (rows(cur), rows(nxt)),
        "counterfactual_importance_accuracy": (rows(cur, "d"), rows(nxt)),
        "counterfactual_importance_kl": (rows(cur, "d"), rows(nxt)),
        "forced_importance_accuracy": (rows(fcur), rows(fnxt)),
        "forced_importance_kl": (rows(fcur), rows(fnxt)),
        "counterfactual_pp_importance_accuracy": (rows(cur, "gone"), rows(nxt)),
        "counterfactual_pp_importance_kl": (rows(cur, "gone"), rows(nxt)),
    }
    return m, sets


def _cotscope_metrics(ps: _Sets, m: Metrics, sets: Comparisons, opts: ImportanceOptions) -> str:
    """This toolkit's definitions (one sign, NaN when undefined, the counterfactual floors); returns what the floors
    decided for counterfactual importance (``counterfactual``, ``resampling`` or ``undefined``)."""
    cur, nxt, fcur, fnxt = ps.cur, ps.nxt, ps.fcur, ps.fnxt
    m["resampling_importance_accuracy"] = (
        ps.get(nxt, "acc") - ps.get(cur, "acc"),
        min(ps.n_of(cur, "graded"), ps.n_of(nxt, "graded")),
    )
    m["counterfactual_importance_accuracy"] = (
        ps.get(nxt, "acc") - ps.get(cur, "acc_d"),
        min(ps.n_of(cur, "graded_d"), ps.n_of(nxt, "graded")),
    )
    m["counterfactual_importance_kl"] = (ps.kl(cur, "counts_d", nxt), ps.kl_n(cur, "counts_d", nxt))
    m["forced_importance_accuracy"] = (
        ps.get(fnxt, "acc") - ps.get(fcur, "acc"),
        min(ps.n_of(fcur, "graded"), ps.n_of(fnxt, "graded")),
    )
    dtf = ps.get(cur, "dtf")
    m["different_trajectories_fraction"] = (dtf, ps.n_of(cur, "n_first"))
    source = "counterfactual"
    # the floors hold per bootstrap replicate too, so the interval is of the same statistic as the value
    for prefix, n_key in (("counterfactual", "n_d"), ("counterfactual_pp", "n_gone")):
        with np.errstate(invalid="ignore"):
            ok = (ps.get(cur, n_key) >= opts.min_different) & (dtf > opts.min_dtf)
        for what in ("accuracy", "kl"):
            name = f"{prefix}_importance_{what}"
            values, n = m[name]
            if ok[0]:  # replicates below the floors are skipped, never mixed with another statistic
                m[name] = (np.where(ok, values, np.nan), n)
            elif opts.counterfactual_fallback == "resampling":
                m[name] = m[f"resampling_importance_{what}"]
                sets[name] = sets[f"resampling_importance_{what}"]
            else:
                m[name] = (np.full_like(values, np.nan), n)
        if prefix == "counterfactual" and not ok[0]:
            source = "resampling" if opts.counterfactual_fallback == "resampling" else "undefined"
    return source

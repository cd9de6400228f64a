"""Black-box thought-anchor importance from resampled rollouts (Bogdan et al. 2025, arXiv 2506.19143).

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

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import polars as pl

from anchors._embedding import EmbedFn, TextEmbeddings, as_text_embeddings

__all__ = [
    "METRICS",
    "NO_ANSWER",
    "ROLLOUT_COLUMNS",
    "SIGNIFICANCE_METRICS",
    "ImportanceOptions",
    "add_matrix_scores",
    "continuation_sentences",
    "different_trajectories_fraction",
    "importance_table",
    "kl_divergence",
    "overdeterminedness",
    "sentence_matrix",
]

NO_ANSWER = "<no answer>"
"""The answer bucket of rollouts without an answer (``answer_norm`` null) when ``no_answer="bucket"``."""

ROLLOUT_COLUMNS: dict[str, type] = {
    "trace_id": str,
    "kind": str,
    "position": int,
    "first_sentence": str,
    "text": str,
    "answer_norm": str,
    "correct": bool,
    "status": str,
}
"""The columns of the engine's rollouts table that the metrics read."""

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

SIGNIFICANCE_METRICS: tuple[str, ...] = (
    "resampling_importance_accuracy",
    "resampling_importance_kl",
    "counterfactual_importance_accuracy",
    "counterfactual_importance_kl",
    "forced_importance_accuracy",
    "forced_importance_kl",
    "counterfactual_pp_importance_accuracy",
    "counterfactual_pp_importance_kl",
)
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


@dataclass(frozen=True)
class ImportanceOptions:
    """Choices behind every importance value; recorded beside the results."""

    similarity_threshold: float = 0.8
    """Cosine (all-MiniLM-L6-v2) below which a regenerated sentence "differs in meaning"; at or above it two
    sentences "match"."""
    kl_alpha: float = 1.0
    """Additive (Laplace) smoothing for KL: ``p(a) = (c(a) + alpha) / (N + alpha * V)`` over the ``V`` answers seen in
    either of the two compared sets. 1.0 is add-one smoothing: with 100 rollouts a side, one stray answer adds 0.004
    nats (0.20 with the reference's 1e-9), and disjoint answer sets score 4.5 nats (25 with 1e-9). 0 gives the
    unsmoothed KL (inf when an answer of P is absent from Q)."""
    no_answer: Literal["bucket", "exclude"] = "bucket"
    """Rollouts without an answer: ``bucket`` counts them as one more answer (:data:`NO_ANSWER`) in KL;
    ``exclude`` leaves them out. Accuracy always excludes them (and reports how many there were)."""
    n_bootstrap: int = 1000
    """Bootstrap replicates for the intervals (rollouts resampled with replacement within each position); 0 = none."""
    ci_level: float = 0.95
    """Coverage of the BCa bootstrap interval (bias-corrected and accelerated, Efron 1987): the percentiles of the
    replicates at levels moved by the bias ``z0`` (how many replicates fall below the estimate) and the acceleration
    ``a`` (the skew of the multi-sample jackknife, as ``scipy.stats.bootstrap`` computes it). A plain percentile
    interval is wrong for biased statistics such as smoothed KL, whose replicates sit above the estimate (a value of
    0.058 had the interval [0.061, 0.433]); BCa corrects for that bias. BCa cannot reach past the replicates, so
    where its adjusted levels put both ends on one side of the estimate, that end is moved to the estimate: every
    interval contains its point estimate."""
    seed: int = 0
    """Seed of the bootstrap and of the permutations; the same seed gives the same intervals and p-values."""
    n_permutations: int = 1000
    """Random relabellings for the permutation p-values of :data:`SIGNIFICANCE_METRICS`; 0 = none."""
    significance_level: float = 0.05
    """``<metric>_significant`` is ``p < significance_level`` (one test per sentence and metric, not corrected for
    multiple comparisons: about this share of sentences that change nothing are flagged)."""
    min_chars: int = 10
    """Sentences shorter than this are merged into the next one (as ``split_sentences(min_chars=...)``), on both
    sides of every comparison: the regenerated first sentence and the continuation sentences are split the way the
    trace was (thought-anchors merges at 10 on both sides). Must equal the ``min_chars`` the plan was built with."""
    convention: Literal["cotscope", "thought_anchors"] = "cotscope"
    """``thought_anchors`` reproduces the reference ``analyze_rollouts.py`` / ``step_attribution.py`` for side-by-side
    comparison: alpha=1e-9 and unanswered rollouts dropped from the metrics (``kl_alpha`` and ``no_answer`` are then
    ignored); chunks are sentences 0..K-1, the next chunk is the next one with rollouts (answered or not; a chunk
    with none graded has accuracy 0.0), resampling accuracy uses exactly i+1 and forced metrics exactly chunk i+1;
    the last chunk's different-trajectories fraction and overdeterminedness are 0.0; counterfactual accuracy is
    acc(D_i) - acc(R_next); counterfactual KL compares D_i with R_next ∪ (R_i ∖ D_i); different-trajectories
    fraction divides by all answered rollouts; 0.0 wherever a value is undefined. docs/anchors.md lists every rule."""
    numbers_differ: bool = True
    """Number-aware meaning: a regenerated sentence also differs in meaning from ``S_i`` when the numbers it states
    (in order) differ from ``S_i``'s, and a continuation sentence matches ``S_j`` only when their numbers agree.
    Sentence embeddings barely see numbers (all-MiniLM-L6-v2 gives "adds 5 to 7, giving 2." and "..., giving 3."
    a cosine of 0.97), so without this a changed intermediate result never counts as a different trajectory. Off
    in the ``thought_anchors`` convention."""
    continuation_metrics: bool = True
    """Compute resilience and counterfactual++; they embed every sentence of every continuation (slow on CPU)."""
    min_different: int = 5
    """Fewest rollouts in D_i (D_i⁻ for counterfactual++) for counterfactual importance to be defined. A sentence
    the model almost always rewrites with the same meaning has no counterfactual to measure: with one differing
    rollout out of 20, add-one KL against a unanimous R_{i+1} is 1.44 nats whatever the sentence does, as large as
    the real anchors of the ``arith`` organism. 5 is Thought Branches' 5% floor at its 100 rollouts a position.
    Ignored in the ``thought_anchors`` convention."""
    min_dtf: float = 0.05
    """Counterfactual importance also needs a different-trajectories fraction above this (Thought Branches falls back
    to resampling importance at or below 0.05). Ignored in the ``thought_anchors`` convention."""
    counterfactual_fallback: Literal["nan", "resampling"] = "nan"
    """What an undefined counterfactual metric becomes: NaN, or the matching resampling importance (Thought
    Branches). The ``counterfactual_source`` column records ``counterfactual``, ``resampling`` or ``undefined``."""

    def __post_init__(self) -> None:
        if not 0.0 < self.similarity_threshold <= 1.0:
            raise ValueError(f"similarity_threshold must be in (0, 1], got {self.similarity_threshold}")
        if self.kl_alpha < 0:
            raise ValueError(f"kl_alpha must be >= 0, got {self.kl_alpha}")
        if self.no_answer not in ("bucket", "exclude"):
            raise ValueError(f"unknown no_answer {self.no_answer!r}; choose one of: bucket, exclude")
        if self.convention not in ("cotscope", "thought_anchors"):
            raise ValueError(
                f"unknown convention {self.convention!r}; choose one of: cotscope, thought_anchors"
            )
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0, got {self.n_bootstrap}")
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")
        if self.n_permutations < 0:
            raise ValueError(f"n_permutations must be >= 0, got {self.n_permutations}")
        if not 0.0 < self.significance_level < 1.0:
            raise ValueError(f"significance_level must be in (0, 1), got {self.significance_level}")
        if self.min_chars < 0:
            raise ValueError(f"min_chars must be >= 0, got {self.min_chars}")
        if self.min_different < 1:
            raise ValueError(f"min_different must be >= 1, got {self.min_different}")
        if not 0.0 <= self.min_dtf < 1.0:
            raise ValueError(f"min_dtf must be in [0, 1), got {self.min_dtf}")
        if self.counterfactual_fallback not in ("nan", "resampling"):
            raise ValueError(
                f"unknown counterfactual_fallback {self.counterfactual_fallback!r}; choose one of: nan, resampling"
            )

    @classmethod
    def thought_anchors(cls, **overrides: Any) -> ImportanceOptions:
        """The reference code's conventions (alpha=1e-9, unanswered dropped, its signs and reference sets)."""
        return cls(**{"kl_alpha": 1e-9, "no_answer": "exclude", "convention": "thought_anchors", **overrides})

    @property
    def compat(self) -> bool:
        return self.convention == "thought_anchors"

    @property
    def alpha(self) -> float:
        return 1e-9 if self.compat else self.kl_alpha

    @property
    def bucket_no_answer(self) -> bool:
        """Unanswered rollouts stay, in their own answer bucket (the reference drops them before anything)."""
        return self.no_answer == "bucket" and not self.compat

    @property
    def compare_numbers(self) -> bool:
        """Changed numbers make a sentence differ in meaning (the reference reads the cosine alone)."""
        return self.numbers_differ and not self.compat

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# -- KL -------------------------------------------------------------------------------------------------------------


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


# -- per-position data -------------------------------------------------------------------------------------------


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


def _join(a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    if a is None or b is None:
        return a if b is None else b
    return {key: np.concatenate([a[key], b[key]]) for key in a}


# -- the metrics of one position ------------------------------------------------------------------------------


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
    cur, nxt, nxt1, fcur, fnxt = ps.cur, ps.nxt, ps.nxt1, ps.fcur, ps.fnxt

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


# -- input checks --------------------------------------------------------------------------------------------------


def _check_rollouts(rollouts: pl.DataFrame, trace_id: str, n_sentences: int) -> pl.DataFrame:
    if not isinstance(rollouts, pl.DataFrame):
        raise TypeError(f"rollouts must be a polars DataFrame, got {type(rollouts).__name__}")
    missing = [c for c in ROLLOUT_COLUMNS if c not in rollouts.columns]
    if missing:
        raise ValueError(
            f"rollouts table lacks column(s) {', '.join(missing)}; pass the engine's rollouts.parquet "
            "(see resampling/) or build the columns listed in anchors.ROLLOUT_COLUMNS"
        )
    ids = rollouts["trace_id"].unique().to_list()
    rows = rollouts.filter((pl.col("trace_id") == trace_id) & (pl.col("status") == "ok"))
    if rows.height == 0:
        shown = ", ".join(map(str, ids[:5]))
        raise ValueError(
            f"no ok rollouts for trace {trace_id!r}; trace ids in the table: {shown or '(none)'}; "
            "pass the trace the rollouts were sampled from"
        )
    bad = rows.filter((pl.col("position") < 0) | (pl.col("position") > n_sentences))
    if bad.height:
        p = bad["position"].max()
        raise ValueError(
            f"rollout position {p} is outside 0..{n_sentences} for {n_sentences} sentences; split the CoT the way "
            "the resampling plan did (same min_chars)"
        )
    # an empty answer is no answer
    return rows.with_columns(
        pl.col("position").cast(pl.Int64),
        pl.when(pl.col("answer_norm") == "").then(None).otherwise(pl.col("answer_norm")).alias("answer_norm"),
    )


def _check_split(trace: Any, texts: Sequence[str], min_chars: int) -> None:
    """The sentences must be the trace's CoT split as the plan split it: else position i of the rollouts would be
    scored against another sentence, and every label would be off."""
    from cot import split_sentences

    cot = getattr(trace, "cot", "")
    if not isinstance(cot, str) or not cot:
        return  # no CoT to compare with (sentences given on their own)
    expected = [s.text for s in split_sentences(cot, min_chars=min_chars)]
    if list(texts) == expected:
        return
    other = [
        m
        for m in (0, 10)
        if m != min_chars and [s.text for s in split_sentences(cot, min_chars=m)] == list(texts)
    ]
    hint = f" (they match min_chars={other[0]})" if other else ""
    raise ValueError(
        f"the {len(texts)} sentences given are not the trace's CoT split with min_chars={min_chars} "
        f"({len(expected)} sentences){hint}; pass the sentences the resampling plan used "
        "(TracePrefixes.sentences) and ImportanceOptions(min_chars=...) equal to the plan's"
    )


def continuation_sentences(text: str | None, min_chars: int = 0) -> list[str]:
    """The sentences of a continuation's reasoning: the text before ``</think>`` (all of it when there is none),
    split with ``min_chars`` as the trace was (short sentences merged into the next one)."""
    if not text:
        return []
    from cot import split_sentences

    cut = text.find("</think>")
    return [s.text for s in split_sentences(text if cut < 0 else text[:cut], min_chars=min_chars)]


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def number_key(text: str | None) -> tuple[str, ...]:
    """The numbers a sentence states, in order (digits only: "seven" is left to the embedding)."""
    return tuple(_NUMBER.findall(text or ""))


def _numbers_changed(frame: pl.DataFrame, texts: Sequence[str]) -> np.ndarray:
    """1.0 where a row's first sentence states other numbers than the original sentence at its position."""
    keys = [number_key(t) for t in texts]
    out = np.zeros(frame.height)
    for r, (first, pos) in enumerate(
        zip(frame["first_sentence"].to_list(), frame["position"].to_list(), strict=True)
    ):
        if first is not None and pos < len(keys):
            out[r] = float(number_key(first) != keys[pos])
    return out


def _continuation_matches(
    texts: Sequence[str | None],
    targets: np.ndarray,
    emb: TextEmbeddings,
    threshold: float,
    target_texts: Sequence[str] | None = None,
    min_chars: int = 0,
) -> np.ndarray:
    """``out[r, j]``: some sentence of continuation ``r`` has cosine >= threshold with target ``j`` (and, when
    ``target_texts`` is given, states the same numbers)."""
    per_row = [emb.continuation_sentences(t, min_chars) for t in texts]
    flat = [s for row in per_row for s in row]
    out = np.zeros((len(texts), targets.shape[0]), dtype=bool)
    if not flat or targets.shape[0] == 0:
        return out
    ids = emb.ids(flat)
    uniq, inverse = np.unique(ids, return_inverse=True)
    hits_u = np.zeros((len(uniq), targets.shape[0]), dtype=bool)
    for start in range(0, len(uniq), 16384):
        block = emb.matrix[uniq[start : start + 16384]]
        hits_u[start : start + 16384] = block @ targets.T >= threshold
    if target_texts is not None:
        text_of = {i: t for t, i in zip(flat, ids.tolist(), strict=True)}
        target_keys = [number_key(t) for t in target_texts]
        for u, row_id in enumerate(uniq.tolist()):
            key = number_key(text_of[row_id])
            for j in np.flatnonzero(hits_u[u]):
                if key != target_keys[j]:
                    hits_u[u, j] = False
    lengths = np.array([len(r) for r in per_row])
    nonempty = np.flatnonzero(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[nonempty]
    out[nonempty] = np.logical_or.reduceat(hits_u[inverse], starts, axis=0)
    return out


def _first_sentence_similarity(
    frame: pl.DataFrame, sentence_vectors: np.ndarray, emb: TextEmbeddings
) -> np.ndarray:
    """Cosine between each row's first sentence and the original sentence at its position (NaN if undefined)."""
    sims = np.full(frame.height, np.nan)
    first = frame["first_sentence"].to_list()
    pos = frame["position"].to_numpy()
    rows = [r for r, f in enumerate(first) if f is not None and pos[r] < sentence_vectors.shape[0]]
    if rows:
        vecs = emb([first[r] for r in rows])
        sims[rows] = np.einsum("ij,ij->i", vecs, sentence_vectors[pos[rows]])
    return sims


# -- the table -----------------------------------------------------------------------------------------------------


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
    order = np.argsort(rng.random((n_perm, na + nb)), axis=1)
    in_a = np.zeros((n_perm, na + nb))
    np.put_along_axis(in_a, order[:, :na], 1.0, axis=1)
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


def importance_table(
    rollouts: pl.DataFrame,
    trace: Any,
    sentences: Sequence[Any],
    *,
    roles: Sequence[str] | None = None,
    options: ImportanceOptions | None = None,
    embed: TextEmbeddings | EmbedFn | None = None,
    matrix: np.ndarray | None = None,
) -> pl.DataFrame:
    """One row per sentence: position, text, role, sample sizes and every metric of :data:`METRICS`.

    ``rollouts`` is the engine's table (only ``status == "ok"`` rows of ``trace.id`` are read); ``sentences`` the
    split the rollouts were planned on (``cot.Sentence`` records or plain strings); ``roles`` default to
    ``cot.label_sentences``. ``embed`` is a :class:`TextEmbeddings` cache (share one with :func:`sentence_matrix`) or
    a function of texts, default ``cot.embed_sentences``. When ``matrix`` (from :func:`sentence_matrix`) is given,
    ``outgoing_importance`` (mean of row i over j > i) and ``incoming_importance`` (mean of column j over i < j) are
    added.
    """
    opts = options or ImportanceOptions()
    texts = [getattr(s, "text", s) for s in sentences]
    k = len(texts)
    _check_split(trace, texts, opts.min_chars)
    rows = _check_rollouts(rollouts, trace.id, k)
    if roles is None:
        from cot import label_sentences

        roles = label_sentences(list(sentences))
    if len(roles) != k:
        raise ValueError(f"got {len(roles)} roles for {k} sentences; pass one role per sentence")
    emb = as_text_embeddings(embed)
    resample = rows.filter(pl.col("kind") == "resample")
    forced = rows.filter(pl.col("kind") == "forced_answer")
    if opts.min_chars:
        # the regenerated first sentence, split the way the trace was (short sentences merged into the next)
        firsts = [
            (emb.continuation_sentences(t, opts.min_chars) or [None])[0] if t is not None else f
            for t, f in zip(resample["text"].to_list(), resample["first_sentence"].to_list(), strict=True)
        ]
        resample = resample.with_columns(pl.Series("first_sentence", firsts, dtype=pl.String))
    # rollouts cut at max_new_tokens before an answer: in the no-answer bucket, and counted apart
    truncated_at: dict[int, int] = {}
    if "finish_reason" in resample.columns:
        cut = resample.filter((pl.col("finish_reason") == "length") & pl.col("answer_norm").is_null())
        truncated_at = dict(cut.group_by("position").len().iter_rows())
    # The reference's chunk set: positions 0..K-1 that have rollouts, answered or not (a position whose rollouts
    # all lack an answer is still the "next" one, with accuracy 0.0); forced probes exist for every such chunk once
    # any exist (a missing one counts as accuracy 0.0 and an empty answer distribution).
    present = {p for p in resample["position"].to_list() if p < k}
    rules = (_ReferenceRules if opts.compat else _CotscopeRules)(opts, k, present, forced.height > 0)
    if opts.compat:  # the reference drops unanswered rollouts before anything
        resample = resample.filter(pl.col("answer_norm").is_not_null())
        forced = forced.filter(pl.col("answer_norm").is_not_null())

    answers = sorted({a for a in pl.concat([resample["answer_norm"], forced["answer_norm"]]).to_list() if a})
    codes = {a: c for c, a in enumerate(answers)}
    codes[NO_ANSWER] = len(codes)
    keep = slice(None) if opts.bucket_no_answer else slice(0, len(answers))

    sentence_vectors = emb(texts) if k else np.zeros((0, 1), np.float32)
    sims = _first_sentence_similarity(resample, sentence_vectors, emb)
    differs = np.where(np.isnan(sims), np.nan, (sims < opts.similarity_threshold).astype(float))
    if opts.compare_numbers:
        differs = np.where(np.isnan(differs), np.nan, np.maximum(differs, _numbers_changed(resample, texts)))
    reappears = None
    if opts.continuation_metrics:
        reappears = np.zeros(resample.height)
        matches = _continuation_matches(
            resample["text"].to_list(),
            sentence_vectors,
            emb,
            opts.similarity_threshold,
            target_texts=texts if opts.compare_numbers else None,
            min_chars=opts.min_chars,
        )
        pos = resample["position"].to_numpy()
        inside = np.flatnonzero(pos < k)
        reappears[inside] = matches[inside, pos[inside]]

    resample = resample.with_row_index("_row")
    by_pos = {p[0]: f for p, f in resample.partition_by("position", as_dict=True).items()}
    forced_by_pos = {p[0]: f for p, f in forced.partition_by("position", as_dict=True).items()}
    n_boot = opts.n_bootstrap
    base_cache: dict[tuple[int, int], dict[str, Any] | None] = {}
    no_answer_code = codes[NO_ANSWER] if opts.bucket_no_answer else -1

    def base(kind: int, p: int | None) -> dict[str, Any] | None:
        """Statistics of one set for: the data, each bootstrap replicate, then each jackknife leave-one-out."""
        if p is None:
            return None
        if (kind, p) not in base_cache:
            frame = (by_pos if kind == 0 else forced_by_pos).get(p)
            if frame is None:
                base_cache[(kind, p)] = None
            else:
                w = _replicate_weights(frame.height, n_boot, opts.seed, kind, p)
                idx = frame["_row"].to_numpy() if kind == 0 else None
                d = differs[idx] if idx is not None and p < k else None
                back = reappears[idx] if idx is not None and reappears is not None and p < k else None
                out: dict[str, Any] = _position_stats(frame, codes, w, d, back)
                out["_rows"] = _row_sets(frame, codes, no_answer_code, d, back)
                out["_jack"] = w.shape[0] - 1 - n_boot if n_boot else 0
                base_cache[(kind, p)] = out
        return base_cache[(kind, p)]

    next_pos = rules.next_position

    records: list[dict[str, Any]] = []
    for i in range(k):
        for key in [key for key in base_cache if key[1] < i]:  # earlier positions are not needed again
            del base_cache[key]
        # Every statistic of position i reads up to five sets. Their arrays share one layout: the data, the
        # bootstrap replicates (drawn independently per set), then one jackknife segment per set, in which only
        # that set leaves a rollout out and the others stay whole. Any formula of the sets, applied elementwise,
        # then gives its own multi-sample jackknife for the BCa acceleration.
        keys = list(dict.fromkeys([(0, i), (0, next_pos(0, i)), (0, i + 1), (1, i), (1, next_pos(1, i))]))
        bases = {key: base(*key) for key in keys if key[1] is not None}
        present_keys = [key for key, b in bases.items() if b is not None]
        segments = [bases[key]["_jack"] for key in present_keys]
        length = 1 + n_boot + sum(segments)

        def view(key: tuple[int, int | None], bases=bases, present_keys=present_keys, segments=segments):
            b = bases.get(key) if key[1] is not None else None
            if b is None:
                return None
            out = {}
            for name, arr in b.items():
                if name.startswith("_"):
                    out[name] = arr
                    continue
                parts = [arr[: 1 + n_boot]]
                for other, n in zip(present_keys, segments, strict=True):
                    if n:
                        parts.append(arr[1 + n_boot :] if other == key else np.repeat(arr[:1], n, axis=0))
                out[name] = np.concatenate(parts)
            return out

        ps = _Sets(
            cur=view((0, i)),
            nxt=view((0, next_pos(0, i))),
            nxt1=view((0, i + 1)),
            fcur=view((1, i)),
            fnxt=view((1, next_pos(1, i))),
            nan=np.full(length, np.nan),
            keep=keep,
            alpha=opts.alpha,
        )
        m, sets = _shared_metrics(ps)
        source = rules.metrics(ps, m, sets, i)
        cur, fcur = ps.cur, ps.fcur
        n_of = ps.n_of

        sentence = sentences[i]
        rec: dict[str, Any] = {
            "trace_id": trace.id,
            "sentence_id": f"{trace.id}:{i}",
            "position": i,
            "start": getattr(sentence, "start", None),
            "end": getattr(sentence, "end", None),
            "text": texts[i],
            "role": roles[i],
            "n_rollouts": int(n_of(cur, "n")),
            "n_answered": 0 if cur is None else int(cur["n"][0] - cur["counts"][0, codes[NO_ANSWER]]),
            "n_forced": int(n_of(fcur, "n")),
            "n_different": int(n_of(cur, "n_d")),
            "counterfactual_source": source,
        }
        rec["n_no_answer"] = rec["n_rollouts"] - rec["n_answered"]
        rec["n_truncated"] = truncated_at.get(i, 0)
        for name in METRICS:
            values, n = m[name]
            point = float(values[0])
            # resampling with replacement duplicates first sentences, so a bootstrap of a distinct count is biased
            # (all-distinct data gives replicates near 0.37): no interval for overdeterminedness
            lo, hi = (
                (math.nan, math.nan)
                if name == "overdeterminedness"
                else _ci(values, opts.ci_level, n_boot, segments)
            )
            point = rules.point(name, point)
            rec[name], rec[f"{name}_lo"], rec[f"{name}_hi"], rec[f"{name}_n"] = point, lo, hi, int(n)
            if name in SIGNIFICANCE_METRICS:
                a, b = sets[name]
                what = "accuracy" if name.endswith("_accuracy") else "kl"
                observed = float(values[0])  # as computed: the reference's 0.0 for undefined is not tested
                rng = np.random.default_rng([opts.seed, 7, i, SIGNIFICANCE_METRICS.index(name)])
                pval = _perm_p(a, b, what, observed, opts.n_permutations, rng, opts.alpha, len(codes))
                rec[f"{name}_p"] = pval
                rec[f"{name}_significant"] = (
                    None if math.isnan(pval) else bool(pval < opts.significance_level)
                )
        records.append(rec)

    table = (
        pl.DataFrame(records, schema=_schema(), orient="row") if records else pl.DataFrame(schema=_schema())
    )
    table = table.with_columns(pl.lit(opts.convention).alias("convention"))
    if matrix is not None:
        table = add_matrix_scores(table, matrix, reference=opts.compat)
    return table


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
    answers = sorted({a for a in rows["answer_norm"].to_list() if a})
    codes = {a: c for c, a in enumerate(answers)}
    codes[NO_ANSWER] = len(codes)
    no_answer_code = codes[NO_ANSWER] if opts.bucket_no_answer else -1
    keep = slice(None) if no_answer_code >= 0 else slice(0, len(answers))
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
            if what == "kl":
                counts = [
                    np.bincount(x["code"][x["code"] >= 0], minlength=len(codes))[None, :].astype(float)
                    for x in (even, odd)
                ]
                value = float(kl_divergence(counts[0][:, keep], counts[1][:, keep], opts.alpha)[0])
            else:
                graded = [x["graded"] > 0 for x in (even, odd)]
                accs = [
                    x["right"][g].mean() if g.any() else math.nan
                    for x, g in zip((even, odd), graded, strict=True)
                ]
                value = accs[1] - accs[0]
            rng = np.random.default_rng([opts.seed, 11, position, k, 0 if kind == "resample" else 1])
            rec[what] = value
            rec[f"{what}_p"] = _perm_p(
                even, odd, what, value, opts.n_permutations, rng, opts.alpha, len(codes)
            )
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


_NO_REFERENCE = frozenset(
    {"resilience", "counterfactual_pp_importance_accuracy", "counterfactual_pp_importance_kl"}
)


def _schema() -> dict[str, pl.DataType]:
    schema: dict[str, Any] = {
        "trace_id": pl.String,
        "sentence_id": pl.String,
        "position": pl.Int64,
        "start": pl.Int64,
        "end": pl.Int64,
        "text": pl.String,
        "role": pl.String,
        "n_rollouts": pl.Int64,
        "n_answered": pl.Int64,
        "n_forced": pl.Int64,
        "n_different": pl.Int64,
        "counterfactual_source": pl.String,
        "n_no_answer": pl.Int64,
        "n_truncated": pl.Int64,
    }
    for name in METRICS:
        schema.update(
            {name: pl.Float64, f"{name}_lo": pl.Float64, f"{name}_hi": pl.Float64, f"{name}_n": pl.Int64}
        )
        if name in SIGNIFICANCE_METRICS:
            schema.update({f"{name}_p": pl.Float64, f"{name}_significant": pl.Boolean})
    return schema


def add_matrix_scores(table: pl.DataFrame, matrix: np.ndarray, *, reference: bool = False) -> pl.DataFrame:
    """Add ``outgoing_importance`` (nanmean of row i) and ``incoming_importance`` (nanmean of column i).

    ``reference=True`` (the ``thought_anchors`` convention) counts undefined cells as 0 and gives 0.0 where a row or
    column has no cell at all, as the reference code does."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (table.height, table.height):
        raise ValueError(f"matrix has shape {matrix.shape}, expected {(table.height, table.height)} (K x K)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if reference:
            upper = np.triu(np.ones(matrix.shape, dtype=bool), 1)
            matrix = np.where(upper, np.nan_to_num(matrix, nan=0.0), np.nan)
        out = np.nanmean(matrix, axis=1) if table.height else np.zeros(0)
        inc = np.nanmean(matrix, axis=0) if table.height else np.zeros(0)
        if reference:
            out, inc = np.nan_to_num(out, nan=0.0), np.nan_to_num(inc, nan=0.0)
    return table.with_columns(
        pl.Series("outgoing_importance", out, dtype=pl.Float64),
        pl.Series("incoming_importance", inc, dtype=pl.Float64),
    )


# -- the sentence-to-sentence matrix ---------------------------------------------------------------------------


def sentence_matrix(
    rollouts: pl.DataFrame,
    trace: Any,
    sentences: Sequence[Any],
    *,
    options: ImportanceOptions | None = None,
    embed: TextEmbeddings | EmbedFn | None = None,
) -> np.ndarray:
    """``M[i, j] = match_rate(R_{i+1}, S_j) - match_rate(R_i, S_j)`` for ``j > i``; NaN elsewhere and where undefined.

    ``match_rate(R, S_j)`` is the fraction of rollouts in R whose continuation (the reasoning before ``</think>``)
    holds a sentence with cosine >= ``similarity_threshold`` to ``S_j``. Positive: keeping sentence i makes sentence
    j's content more likely to appear later. Every distinct text is embedded once.
    """
    opts = options or ImportanceOptions()
    texts = [getattr(s, "text", s) for s in sentences]
    k = len(texts)
    rows = _check_rollouts(rollouts, trace.id, k).filter(pl.col("kind") == "resample")
    if opts.compat:  # the reference keeps every rollout that wrote something, answered or not
        rows = rows.filter(pl.col("text").is_not_null() & (pl.col("text") != ""))
    emb = as_text_embeddings(embed)
    out = np.full((k, k), np.nan)
    if k == 0:
        return out
    targets = emb(texts)
    matches = _continuation_matches(
        rows["text"].to_list(),
        targets,
        emb,
        opts.similarity_threshold,
        target_texts=texts if opts.numbers_differ and not opts.compat else None,
        min_chars=opts.min_chars,
    )
    pos = rows["position"].to_numpy()
    rate = np.full((k + 1, k), np.nan)
    for p in range(k + 1):
        sel = pos == p
        if sel.any():
            rate[p] = matches[sel].mean(0)
    upper = np.triu(np.ones((k, k), dtype=bool), 1)
    diff = rate[1:] - rate[:-1]
    out[upper] = np.nan_to_num(diff[upper], nan=0.0) if opts.compat else diff[upper]
    return out


# -- standalone first-sentence metrics (used on published data) ------------------------------------------------


def different_trajectories_fraction(
    first_sentences: Sequence[str],
    original: str,
    *,
    threshold: float = 0.8,
    embed: TextEmbeddings | EmbedFn | None = None,
) -> float:
    """|D| / |R|: the fraction of regenerated first sentences with cosine < ``threshold`` to ``original``."""
    if not first_sentences:
        return math.nan
    emb = as_text_embeddings(embed)
    vecs = emb([original, *first_sentences])
    return float(np.mean(vecs[1:] @ vecs[0] < threshold))


def overdeterminedness(first_sentences: Sequence[str]) -> float:
    """1 - #unique / #total over the regenerated first sentences (exact strings); NaN for none."""
    if not first_sentences:
        return math.nan
    return 1.0 - len(set(first_sentences)) / len(first_sentences)

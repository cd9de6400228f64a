"""What goes into the importance metrics: the rollout columns they read, the options behind every value (the two
conventions among them), and the checks that the rollouts and sentences belong together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import polars as pl

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
    ignored); chunks are sentences 0..K-1, the next chunk is the next one with rollouts (answered or not, failed or
    not; a chunk with none graded has accuracy 0.0), resampling accuracy uses exactly chunk i+1 (0.0 for the last
    chunk: position K is not a chunk) and forced metrics exactly chunk i+1;
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

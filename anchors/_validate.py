"""The fair fight: do importance methods find the sentence the ``arith`` organism's ground truth says drives the answer?

On traces the organism writes itself (on-policy), ``task.analyze`` says which sentences compute what and whether a
stated result is wrong. A trace is kept when it holds exactly one wrong computation and nothing else that sets the
answer (see :func:`planted_sentences`). The organism's training data plants two random decisions around such an
error: whether a computation is wrong (``error_rate``), and, in the sentence right after a wrong one, whether it is
corrected (``correction_rate``). Both decisions of a kept trace
are load-bearing: the wrong computation, and the sentence right after it (the correction, or the sentence written
where a correction was skipped, which is what leaves the answer wrong). Every method and every baseline scores
every sentence; we report how often the top sentence is a planted one (``top1``, ties broken at random in
expectation) and the Spearman correlation between the scores and the ground-truth indicator (mean over traces).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BASELINES",
    "CONTROLS",
    "METHODS",
    "SIGNIFICANCE_METHODS",
    "TEMPERATURE",
    "ValidationResult",
    "planted_sentences",
    "validate_anchors",
]

METHODS: dict[str, tuple[str, bool]] = {
    "counterfactual_importance_kl": ("counterfactual_importance_kl", False),
    "counterfactual_importance_accuracy": ("counterfactual_importance_accuracy", True),
    "resampling_importance_kl": ("resampling_importance_kl", False),
    "resampling_importance_accuracy": ("resampling_importance_accuracy", True),
    "forced_importance_kl": ("forced_importance_kl", False),
    "outgoing_importance": ("outgoing_importance", True),
    "receiver_score": ("receiver_score", False),
    "suppression_outgoing": ("suppression_outgoing", False),
    "different_trajectories_fraction": ("different_trajectories_fraction", False),
}
"""method -> (table column, rank by absolute value). Accuracy-signed metrics are ranked by magnitude: the planted
sentence moves accuracy down (an uncorrected error) or up (a correction)."""

SIGNIFICANCE_METHODS = (
    "resampling_importance_kl",
    "resampling_importance_accuracy",
    "counterfactual_importance_kl",
    "counterfactual_importance_accuracy",
    "forced_importance_kl",
)
"""Methods whose ``<metric>_significant`` flag is checked against the truth: the share of planted load-bearing
sentences flagged (power; target >= 0.9) and the share of filler sentences flagged (false positives; filler is role
``unknown`` in the organism's truth and changes nothing; target <= 0.1, about the test's level)."""

CONTROLS = ("different_trajectories_fraction",)
"""Scored like the methods but not importance: how often the model rewrites a sentence with another meaning. A
counterfactual method that only found the sentences the model rewrites would score no better than this."""

BASELINES = ("random", "position", "sentence_length", "contains_number")

LADDER = (10, 20, 30, 50, 100)
"""Sample counts per position at which the significance shares are also reported (those below ``samples``)."""

TEMPERATURE = 0.6
"""Sampling temperature of the traces and of their rollouts: Thought Anchors', and every command's default
(``anchors._pipeline.DEFAULT_TEMPERATURE``). Its nucleus (top_p 0.95) is left out:
it cuts the organism's wrong digits to 0.2% of computations (5 of 640 traces hold an error), so top_p stays 1.0. At
temperature 1.0 the organism also rewrites 16% of its correct computations wrongly, which makes late computations
counterfactually load-bearing as well (docs/anchors.md, "Validation against planted ground truth")."""


def planted_sentences(
    truth: list[Any], *, n_steps: int | None = None, answer: str | None = None
) -> tuple[list[int], str] | None:
    """Indices (in ``truth``) of the planted load-bearing sentences and the case (``corrected`` or ``uncorrected``),
    or None when the trace's ground truth is not one clean planted error.

    Clean means:

    - exactly one wrong computation ``e``, and the computations take the steps in order, one each (all
      ``n_steps`` of them when given);
    - every sentence matches a template of the task (an unparsed sentence has no known meaning);
    - a correction right after ``e`` gives ``e``'s correct result (one that restates the error or gives another
      wrong digit is not a correction of it);
    - nothing else changes the running digit or states a wrong result: no wrong check, correction, consolidation
      or emitted digit elsewhere (a check right after ``e`` may restate its result);
    - the final answer, when given, is the last running digit.

    Other traces have a second sentence that sets the answer, or one whose meaning is unknown, so "the planted
    sentence" is not defined for them.
    """
    computes = [i for i, s in enumerate(truth) if getattr(s, "kind", "") == "compute"]
    errors = [i for i in computes if truth[i].planted_error]
    if len(errors) != 1:
        return None
    steps = [getattr(truth[i], "step", None) for i in computes]
    if any(st is not None for st in steps) and steps != list(range(len(computes))):
        return None
    if n_steps is not None and len(computes) != n_steps:
        return None
    e = errors[0]
    after = truth[e + 1] if e + 1 < len(truth) else None
    corrected = False
    if (
        after is not None
        and getattr(after, "kind", "") == "correction"
        and getattr(after, "corrects", None) == e
    ):
        if after.planted_error or getattr(after, "value", None) != getattr(truth[e], "expected", None):
            return None
        corrected = True
    running = None
    for i, s in enumerate(truth):
        kind = getattr(s, "kind", "")
        value = getattr(s, "value", None)
        if kind == "unparsed":
            return None
        if i != e and not (corrected and i == e + 1):
            # a check right after the error may restate it: it changes nothing
            restates = kind == "check" and i == e + 1 and value == running
            if (s.planted_error and not restates) or getattr(s, "load_bearing", False):
                return None
            if (
                kind in ("check", "correction", "consolidate", "emit")
                and running is not None
                and value is not None
                and value != running
            ):
                return None
        if kind in ("compute", "check", "correction", "consolidate") and value is not None:
            running = value
    if answer is not None and (running is None or str(answer).strip() != str(running)):
        return None
    planted = [e] + ([e + 1] if after is not None else [])
    return planted, "corrected" if corrected else "uncorrected"


def _merged_index(cot: str, plain_index: int, merged: list[Any]) -> int:
    from cot import split_sentences

    start = split_sentences(cot)[plain_index].start
    for i, s in enumerate(merged):
        if s.start <= start < max(s.end, s.start + 1):
            return i
    raise ValueError(f"sentence starting at {start} is in no merged sentence")


def _merged_truth_roles(cot: str, truth: list[Any], merged: list[Any]) -> list[set[str]]:
    """The truth roles of the plain sentences inside each merged sentence."""
    from cot import split_sentences

    plain = split_sentences(cot)
    roles: list[set[str]] = [set() for _ in merged]
    if len(plain) != len(truth):
        return roles
    for s, t in zip(plain, truth, strict=True):
        for i, m in enumerate(merged):
            if m.start <= s.start < max(m.end, m.start + 1):
                roles[i].add(getattr(t, "role", "unknown"))
                break
    return roles


def _top1(scores: np.ndarray, targets: list[int]) -> float:
    s = np.where(np.isfinite(scores), scores, -np.inf)
    if not np.isfinite(s).any():
        return 0.0
    best = np.flatnonzero(s == s.max())
    return sum(float(b in targets) for b in best) / len(best)


def _spearman(scores: np.ndarray, targets: list[int]) -> float:
    from scipy.stats import spearmanr

    truth = np.zeros(len(scores))
    truth[targets] = 1.0
    s = np.where(
        np.isfinite(scores),
        scores,
        np.nanmin(scores[np.isfinite(scores)]) - 1 if np.isfinite(scores).any() else 0,
    )
    if np.all(s == s[0]):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(s, truth).statistic)


def baseline_scores(texts: list[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(texts)
    return {
        "random": rng.random(n),
        "position": np.arange(n, dtype=float),
        "sentence_length": np.array([len(t) for t in texts], dtype=float),
        "contains_number": np.array([float(any(c.isdigit() for c in t)) for t in texts]),
    }


@dataclass
class ValidationResult:
    n_traces: int
    methods: dict[str, dict[str, float]]
    traces: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    significance: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per method: share of planted load-bearing sentences flagged significant (``planted_flagged``, over
    ``planted_n`` defined values), of the wrong computations alone (``error_flagged`` over ``error_n``) and of filler
    sentences (``filler_flagged`` over ``filler_n``)."""
    significance_by_samples: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    """:attr:`significance` at each sample count of the ladder (the first ``n`` samples of every position: what a
    run with ``samples=n`` draws, since more samples extend the same seeded sequence), same traces."""
    dataset: dict[str, Any] = field(default_factory=dict)
    """The dataset-level check (:func:`dataset_check`): per metric, each truth role's position-debiased effect with
    its cluster-bootstrap interval over traces, and whether every planted role's interval lies above every filler
    interval."""
    null_check: dict[str, dict[str, float]] = field(default_factory=dict)
    """The A/A check (:func:`anchors.split_half_pvalues`): per rollout kind, the share of split-half comparisons of
    one position's rollouts (no change by construction) flagged at the significance level, for the KL and the
    accuracy statistic (``kl_flagged``, ``accuracy_flagged`` over ``n``), and the same over the ``n_varied``
    comparisons whose halves hold more than one answer between them (``*_flagged_varied``; with a single answer
    nothing can be flagged)."""

    def to_json(self) -> dict[str, Any]:
        """Everything as plain JSON values; undefined numbers (NaN) become null."""
        return _strict(
            {
                "n_traces": self.n_traces,
                "methods": self.methods,
                "settings": self.settings,
                "significance": self.significance,
                "significance_by_samples": {str(n): v for n, v in self.significance_by_samples.items()},
                "null_check": self.null_check,
                "dataset": self.dataset,
                "traces": self.traces,
            }
        )


def _strict(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def organism_setup(model_id: str, temperature: float) -> tuple[Any, Any, Any, Any]:
    """The hf backend of an ``organism:NAME``, its task, and the rollout and forced-answer sampling parameters at
    ``temperature`` (top-p 1, the task's token budgets): the setting of every planted-truth check."""
    import organisms
    from anchors._pipeline import sampling_defaults
    from resampling import SamplingParams, make_backend

    backend = make_backend("hf", model_id=model_id)
    task = organisms.get_task(model_id.split(":", 1)[1])
    params = SamplingParams(
        temperature=temperature, top_p=1.0, max_new_tokens=getattr(task, "max_new_tokens", 256)
    )
    forced = SamplingParams(
        temperature=temperature,
        top_p=1.0,
        max_new_tokens=sampling_defaults(model_id)[0]["forced_max_new_tokens"],
    )
    return backend, task, params, forced


def clean_traces(
    backend: Any, task: Any, params: Any, n_traces: int, seed: int, max_candidates: int
) -> tuple[list[tuple[Any, Any, Any]], int]:
    """The first ``n_traces`` untruncated on-policy traces of ``task`` (problems ``seed`` on, sampled 64 at a time)
    whose planted sentences the generator's analysis finds (:func:`planted_sentences`): (example, trace, planted)
    triples, and how many problems were sampled. ``RuntimeError`` when ``max_candidates`` problems do not give
    that many."""
    from resampling import sample_traces

    chosen: list[tuple[Any, Any, Any]] = []
    next_seed, batch = seed, 64
    while len(chosen) < n_traces and next_seed - seed < max_candidates:
        seeds = list(range(next_seed, next_seed + batch))
        next_seed += batch
        examples = [task.sample(s) for s in seeds]
        traces = sample_traces(
            backend,
            backend.tokenizer,
            [e.messages for e in examples],
            seeds,
            params,
            metadata=[{"gt_answer": e.answer} for e in examples],
        )
        for ex, tr in zip(examples, traces, strict=True):
            if tr.truncated or len(chosen) >= n_traces:
                continue
            planted = planted_sentences(
                task.analyze(ex, tr.cot),
                n_steps=sum(s.kind == "compute" for s in ex.sentences),
                answer=tr.answer,
            )
            if planted is not None:
                chosen.append((ex, tr, planted))
    if len(chosen) < n_traces:
        raise RuntimeError(
            f"found only {len(chosen)} clean traces in {next_seed - seed} samples; raise max_candidates"
        )
    return chosen, next_seed - seed


def validate_anchors(
    *,
    model_id: str = "organism:arith",
    n_traces: int = 50,
    samples: int = 20,
    seed: int = 1000,
    ladder: Sequence[int] | None = None,
    temperature: float = TEMPERATURE,
    max_candidates: int = 4000,
    whitebox: bool = True,
    cache_dir: str | os.PathLike = ".cotscope-cache/validate",
    progress: Any = None,
    options: dict[str, Any] | None = None,
) -> ValidationResult:
    """Sample on-policy traces until ``n_traces`` clean ones are found, score them all, compare with ground truth.

    ``options`` are passed to :class:`~anchors.ImportanceOptions` (e.g. ``min_different``); bootstrap intervals and
    the continuation metrics are off here, since only the point estimates rank sentences. The permutation tests are
    on: :attr:`ValidationResult.significance` says how often planted and filler sentences are flagged, at
    ``samples`` and at every smaller sample count of ``ladder`` (default: those of :data:`LADDER` below ``samples``;
    each from the cache, no new sampling), and :attr:`ValidationResult.null_check` how often the test flags two halves
    of one position's rollouts. ``progress(done, total)`` is called with 0 once the traces are sampled, then after
    each trace is scored.
    """
    from anchors._blackbox import ImportanceOptions, split_half_pvalues
    from anchors._embedding import TextEmbeddings
    from anchors._pipeline import compute_importance

    backend, task, params, forced_params = organism_setup(model_id, temperature)
    chosen, candidates_sampled = clean_traces(backend, task, params, n_traces, seed, max_candidates)

    if progress is not None:  # the traces are sampled; scoring the first also loads the embedding model
        progress(0, len(chosen))
    rng = np.random.default_rng(seed)
    cases = [c for _, _, (_, c) in chosen]
    per_method: dict[str, list[tuple[float, float, int]]] = {m: [] for m in [*METHODS, *BASELINES]}
    steps = sorted({n for n in (LADDER if ladder is None else ladder) if 0 < n < samples} | {samples})
    # per sample count: per significance method, the flags of the planted sentences, of the wrong computations
    # alone and of the filler sentences (None: undefined)
    flags: dict[int, dict[str, tuple[list[Any], list[Any], list[Any]]]] = {
        n: {m: ([], [], []) for m in SIGNIFICANCE_METHODS} for n in steps
    }
    halves: list[Any] = []
    records = []
    truth_tables = []
    emb = TextEmbeddings()
    options = ImportanceOptions(**{**(options or {}), "n_bootstrap": 0, "continuation_metrics": False})
    for k, (ex, tr, (planted_plain, case)) in enumerate(chosen):
        score = functools.partial(
            compute_importance,
            backend,
            tr,
            seed=seed + k,
            params=params,
            forced_params=forced_params,
            options=options,
            cache_dir=cache_dir,
            embed=emb,
        )
        run = score(samples=samples, whitebox=whitebox)
        targets = sorted({_merged_index(tr.cot, i, run.sentences) for i in planted_plain})
        error = _merged_index(tr.cot, planted_plain[0], run.sentences)
        texts = [s.text for s in run.sentences]
        roles = _merged_truth_roles(tr.cot, task.analyze(ex, tr.cot), run.sentences)
        filler = [i for i, r in enumerate(roles) if r == {"unknown"} and i not in targets]
        for n in steps:
            table = run.table
            if n != samples:  # the first n samples of every position, all in the cache
                table = score(samples=n, whitebox=False).table
            for name, (planted_flags, error_flags, filler_flags) in flags[n].items():
                column = f"{name}_significant"
                if column in table.columns:
                    values = table[column].to_list()
                    planted_flags += [values[i] for i in targets]
                    error_flags.append(values[error])
                    filler_flags += [values[i] for i in filler]
        halves.append(split_half_pvalues(run.rollouts, tr.id, options))
        truth_tables.append(_truth_roles_table(run.table, tr.id, error, targets, roles))
        scores = {
            name: (np.abs(col) if absolute else col)
            for name, (column, absolute) in METHODS.items()
            if column in run.table.columns
            for col in [run.table[column].cast(float).fill_null(float("nan")).to_numpy()]
        }
        scores.update(baseline_scores(texts, rng))
        rec = {
            "trace_id": tr.id,
            "case": case,
            "planted": targets,
            "planted_text": [texts[t] for t in targets],
            "n_sentences": len(texts),
        }
        for name, s in scores.items():
            t1, rho = _top1(s, targets), _spearman(s, targets)
            per_method[name].append((t1, rho, int(np.isfinite(s).sum())))
            rec[name] = (
                int(np.nanargmax(np.where(np.isfinite(s), s, -np.inf))) if np.isfinite(s).any() else None
            )
        records.append(rec)
        if progress is not None:
            progress(k + 1, len(chosen))
    methods = {}
    for name, vals in per_method.items():
        if not vals:
            continue
        top1 = float(np.mean([v[0] for v in vals]))
        rhos = [v[1] for v in vals if not math.isnan(v[1])]
        methods[name] = {
            "top1": top1,
            "spearman": float(np.mean(rhos)) if rhos else float("nan"),
            "n": len(vals),
            "defined_per_trace": float(np.mean([v[2] for v in vals])),
            "kind": "baseline"
            if name in BASELINES
            else "control"
            if name in CONTROLS
            else ("white-box" if name in ("receiver_score", "suppression_outgoing") else "black-box"),
        }
    by_samples = {n: {name: _shares(*f) for name, f in per.items()} for n, per in flags.items()}
    null_check = _null_shares(halves, options.significance_level)
    settings = {
        "model": model_id,
        "samples": samples,
        "seed": seed,
        "temperature": temperature,
        "candidates_sampled": candidates_sampled,
        "options": options.to_dict(),
        "sentences_per_trace": float(np.mean([r["n_sentences"] for r in records]))
        if records
        else float("nan"),
        "corrected": cases.count("corrected"),
        "uncorrected": cases.count("uncorrected"),
    }
    import polars as pl

    dataset = dataset_check(pl.concat(truth_tables, how="diagonal_relaxed")) if truth_tables else {}
    return ValidationResult(
        len(chosen), methods, records, settings, by_samples[samples], by_samples, dataset, null_check
    )


DATASET_METRICS = ("counterfactual_importance_kl", "resampling_importance_kl", "forced_importance_kl")
"""Metrics of the dataset-level check."""

PLANTED_ROLES = ("planted_error", "planted_next")
"""Truth roles of the load-bearing sentences: the wrong computation, and the sentence right after it (the
correction, or the sentence written where a correction was skipped)."""


def _truth_roles_table(
    table: Any, trace_id: str, error: int, targets: list[int], roles: list[set[str]]
) -> Any:
    """The importance table with ``role`` replaced by the generator's truth: the planted roles, ``filler`` (role
    unknown in the truth), or the truth roles joined (``compute``, ``check`` ...)."""
    import polars as pl

    truth = []
    for i in range(table.height):
        if i == error:
            truth.append("planted_error")
        elif i in targets:
            truth.append("planted_next")
        elif roles[i] == {"unknown"}:
            truth.append("filler")
        else:
            truth.append("+".join(sorted(roles[i])) or "unparsed")
    keep = ["position", *[m for m in DATASET_METRICS if m in table.columns]]
    return table.select(keep).with_columns(pl.lit(trace_id).alias("trace_id"), pl.Series("role", truth))


def dataset_check(
    table: Any, metrics: Sequence[str] = DATASET_METRICS, n_bootstrap: int = 1000
) -> dict[str, Any]:
    """Per metric: the debiased aggregate by truth role (:func:`anchors._study.aggregate`) and ``passed``: every
    planted role's interval lies wholly above every filler role's (``filler`` here)."""
    from anchors._study import aggregate

    present = [m for m in metrics if m in table.columns]
    agg = aggregate(table, present, n_bootstrap=n_bootstrap) if present else None
    out: dict[str, Any] = {}
    for metric in present:
        rows = {
            r["role"]: r
            for r in agg.filter((agg["metric"] == metric) & (agg["split"] == "all")).iter_rows(named=True)
        }
        roles = {
            role: {
                k: r[k]
                for k in (
                    "debiased",
                    "debiased_lo",
                    "debiased_hi",
                    "mean",
                    "n_sentences",
                    "n_traces",
                    "degree",
                )
            }
            for role, r in rows.items()
        }
        planted = [rows[r] for r in PLANTED_ROLES if r in rows]
        filler = rows.get("filler")
        gaps = [p["debiased_lo"] - filler["debiased_hi"] for p in planted] if filler and planted else []
        out[metric] = {
            "roles": roles,
            "passed": bool(gaps) and len(planted) == len(PLANTED_ROLES) and min(gaps) > 0,
            "smallest_gap": min(gaps) if gaps else float("nan"),
        }
    return out


def _shares(planted: list[Any], error: list[Any], filler: list[Any]) -> dict[str, float]:
    """Shares of the planted, wrong-computation and filler sentences flagged (undefined flags left out)."""

    def share(flags: list[Any]) -> tuple[float, int]:
        known = [bool(f) for f in flags if f is not None]
        return (float(np.mean(known)) if known else float("nan")), len(known)

    (p, p_n), (e, e_n), (f, f_n) = share(planted), share(error), share(filler)
    return {
        "planted_flagged": p,
        "error_flagged": e,
        "error_n": e_n,
        "planted_n": p_n,
        "planted_undefined": len(planted) - p_n,
        "filler_flagged": f,
        "filler_n": f_n,
        "filler_undefined": len(filler) - f_n,
    }


def _null_shares(halves: list[Any], level: float) -> dict[str, dict[str, float]]:
    """Per rollout kind, the share of split-half comparisons with p below ``level`` (NaN p-values left out)."""
    import polars as pl

    if not halves:
        return {}
    frame = pl.concat(halves)
    out = {}
    for (kind,), part in sorted(frame.partition_by("kind", as_dict=True).items()):
        rec: dict[str, float] = {"n": part.height, "mean_per_half": float(part["n_a"].mean())}
        varied = part.filter(pl.col("distinct") > 1)
        rec["n_varied"] = varied.height
        for what in ("kl", "accuracy"):
            for suffix, rows in (("", part), ("_varied", varied)):
                p = rows[f"{what}_p"].drop_nans().drop_nulls()
                rec[f"{what}_flagged{suffix}"] = float((p < level).mean()) if p.len() else float("nan")
            rec[f"{what}_n"] = part[f"{what}_p"].drop_nans().drop_nulls().len()
        out[kind] = rec
    return out

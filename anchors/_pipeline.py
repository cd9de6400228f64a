"""The main job: resample a trace through the engine, compute every importance metric, write the outputs."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cotscope._progress import step

__all__ = [
    "DEFAULT_TEMPERATURE",
    "ImportanceRun",
    "adaptive_rounds",
    "compute_importance",
    "onpolicy_trace",
    "pick_receiver_heads",
    "read_receiver_heads",
    "sampling_defaults",
    "sampling_params",
    "whitebox_columns",
]

DEFAULT_TEMPERATURE = 0.6
"""The one default sampling temperature of every command (``importance``, ``resample``, ``validate anchors``):
Thought Anchors' (Bogdan et al. 2025), at which R1-distill models are meant to be sampled. ``--temperature``
changes it."""

REAL_MODEL_SAMPLING: dict[str, Any] = {
    "temperature": DEFAULT_TEMPERATURE,
    "top_p": 0.95,
    "max_new_tokens": 8192,
    "forced_max_new_tokens": 64,
}
"""Defaults of ``cotscope importance`` for a real reasoning model: Thought Anchors' temperature and nucleus; rollouts
of up to 8192 new tokens (an R1-distill CoT is about 2,800 tokens; the reference allows 16,384); forced-answer
probes of up to 64 tokens after ``\\boxed{``. A rollout that hits its budget before answering is counted in
``n_truncated`` and has no answer."""


def sampling_defaults(model_id: str) -> tuple[dict[str, Any], str]:
    """The sampling defaults for ``model_id`` and where they come from.

    A real model gets :data:`REAL_MODEL_SAMPLING`. An organism (``organism:NAME``) gets its own settings: its task's
    ``max_new_tokens``, forced probes of 16 tokens, and top_p 1.0, since a 0.95 nucleus cuts the ``arith``
    organism's planted wrong digits to 0.2% of computations (``anchors._validate.TEMPERATURE``)."""
    if model_id.startswith("organism:"):
        import organisms

        task = organisms.get_task(model_id.split(":", 1)[1])
        return (
            {
                "temperature": DEFAULT_TEMPERATURE,
                "top_p": 1.0,
                "max_new_tokens": int(getattr(task, "max_new_tokens", 256)),
                "forced_max_new_tokens": 16,
            },
            f"organism {task.name}",
        )
    return dict(REAL_MODEL_SAMPLING), "real reasoning model"


def sampling_params(sampling: dict[str, Any]) -> tuple[Any, Any]:
    """The rollouts' and the forced-answer probes' :class:`resampling.SamplingParams` from a sampling dict
    (:func:`sampling_defaults`, with any flags applied): the same temperature and nucleus, their own budgets."""
    from resampling import SamplingParams

    def params(budget: str) -> Any:
        return SamplingParams(
            temperature=sampling["temperature"], top_p=sampling["top_p"], max_new_tokens=sampling[budget]
        )

    return params("max_new_tokens"), params("forced_max_new_tokens")


DEFAULT_TRACE_SEED = 366
"""Problem (and sampling) seed of the on-policy trace ``cotscope importance`` draws when no ``--trace`` is given: on
the shipped ``arith`` organism, sampled at the default temperature 0.6 (top_p 1.0), it holds one wrong computation
that the model corrects in the next sentence; a test checks that it still holds exactly one planted error. (At
temperature 0.6 errors are rare; 366 was chosen on earlier weights of the organism, and the
retrained ones write the same error and correction on it.)"""


@dataclass
class ImportanceRun:
    """Everything one ``importance`` run computed."""

    trace: Any
    sentences: list[Any]
    rollouts: pl.DataFrame
    table: pl.DataFrame
    matrix: np.ndarray | None
    suppression: np.ndarray | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    options: Any = None
    written: dict[str, Path] = field(default_factory=dict)
    """Files the run itself wrote into ``out`` (the engine's ``run.json``), listed with the outputs."""


def onpolicy_trace(
    backend: Any,
    model_id: str,
    seed: int,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    max_new_tokens: int = 256,
    top_p: float = 1.0,
):
    """A trace the organism writes itself for its task's problem number ``seed`` (its true answer recorded)."""
    import organisms
    from resampling import EngineInputError, SamplingParams, sample_traces

    if not model_id.startswith("organism:"):
        raise EngineInputError(
            f"model '{model_id}' has no task to draw a problem from; give a trace with --trace FILE"
        )
    task = organisms.get_task(model_id.split(":", 1)[1])
    example = task.sample(seed)
    params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    (trace,) = sample_traces(
        backend,
        backend.tokenizer,
        [example.messages],
        [seed],
        params,
        metadata=[{"gt_answer": example.answer, "task": task.name, "problem_seed": seed}],
    )
    return trace, example


def _trace_attention(model: Any, prefixes: Any) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Sentence-block attention ``(L, H, S, S)`` of one trace (template included) and the sentences' token spans."""
    from anchors._whitebox import sentence_attention, spans_from_offsets

    tok = prefixes.tokenizer
    enc = tok(prefixes.trace.cot, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    shift = len(prefixes.template_ids)
    spans = [(a + shift, b + shift) for a, b in spans_from_offsets(offsets, prefixes.sentences)]
    return sentence_attention(model, prefixes.full_ids, spans), spans


def pick_receiver_heads(
    model: Any, tokenizer: Any, traces: list[Any], *, top_k: int = 20, min_chars: int = 10
) -> dict[str, Any]:
    """Receiver heads chosen over many traces (Bogdan et al. 2025): the ``top_k`` heads with the highest mean
    kurtosis of vertical attention scores over ``traces`` (:func:`anchors._whitebox.receiver_head_scores`).

    Score traces with heads chosen on other traces: heads picked on the trace they score are circular (a head is
    picked because it attends to that trace's sentences). Returns the JSON that ``--receiver-heads FILE`` reads."""
    from anchors._whitebox import receiver_head_reliability, receiver_head_scores, receiver_heads
    from resampling import TracePrefixes

    if not traces:
        raise ValueError("no traces to choose receiver heads on; give at least one --trace")
    attentions = [
        _trace_attention(model, TracePrefixes.build(t, tokenizer, min_chars=min_chars))[0] for t in traces
    ]
    scores = receiver_head_scores(attentions)
    heads = receiver_heads(scores, top_k=top_k)
    out: dict[str, Any] = {
        "heads": [list(h) for h in heads],
        "top_k": top_k,
        "traces": [t.id for t in traces],
        "method": "top-k mean Fisher kurtosis of vertical scores over the traces (layer 0 excluded)",
    }
    if len(traces) >= 2:
        out["split_half_reliability"] = float(receiver_head_reliability(attentions))
    return out


def read_receiver_heads(path: str | os.PathLike) -> dict[str, Any]:
    """A receiver-heads file written by ``cotscope receiver-heads``; a clear error when it is not one."""
    import json

    try:
        data = json.loads(Path(path).read_text())
        heads = [(int(layer), int(head)) for layer, head in data["heads"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path} is not a receiver-heads file ({exc}); write one with: cotscope receiver-heads --model M "
            "--trace A --trace B ... --out FILE"
        ) from None
    if not heads:
        raise ValueError(f"{path} lists no heads; choose them again with cotscope receiver-heads")
    return {**data, "heads": heads, "path": str(path)}


def whitebox_columns(
    model: Any,
    prefixes: Any,
    *,
    top_k_heads: int = 20,
    suppression: bool = True,
    heads: list[tuple[int, int]] | None = None,
):
    """Receiver-head scores and attention-suppression outgoing effect per sentence.

    ``receiver_score[j]`` = mean vertical attention score of sentence j over the receiver heads: ``heads`` (chosen
    on other traces, :func:`pick_receiver_heads`), or, when None, the top heads of this trace itself (circular:
    the heads are picked for attending to the very sentences they then score). ``suppression_outgoing[i]`` = mean
    over later sentences j of KL(base || sentence i hidden), from :func:`anchors._whitebox.suppression_matrix`.
    """
    from anchors._whitebox import (
        receiver_head_scores,
        receiver_heads,
        sentence_receiver_scores,
        suppression_matrix,
    )

    attention, spans = _trace_attention(model, prefixes)
    ids = prefixes.full_ids
    if heads is None:
        scores = receiver_head_scores(attention)
        n_valid = int(np.isfinite(scores).sum())
        heads = receiver_heads(scores, top_k=min(top_k_heads, max(1, n_valid // 4)))
    else:
        n_layers, n_heads = attention.shape[:2]
        bad = [h for h in heads if not (0 <= h[0] < n_layers and 0 <= h[1] < n_heads)]
        if bad:
            raise ValueError(
                f"receiver head {bad[0]} is not in this model ({n_layers} layers x {n_heads} heads); choose heads "
                "with cotscope receiver-heads on this model"
            )
    receiver = sentence_receiver_scores(attention, heads) if heads else np.full(len(spans), np.nan)
    columns = {"receiver_score": receiver}
    supp = None
    if suppression:
        supp = suppression_matrix(model, ids, spans)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                columns["suppression_outgoing"] = np.nanmean(
                    supp, axis=0
                )  # M[j, i]: column i = effect of hiding i
    return columns, supp, heads


def compute_importance(
    backend: Any,
    trace: Any,
    *,
    samples: int = 30,
    seed: int = 0,
    params: Any = None,
    forced_params: Any = None,
    forced_answer: bool = True,
    min_chars: int = 10,
    gt_answer: str | None = None,
    receiver_heads: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike = ".cotscope-cache",
    options: Any = None,
    whitebox: bool = True,
    quiet: bool = True,
    embed: Any = None,
    out: str | os.PathLike | None = None,
    header: dict[str, Any] | None = None,
    roles: Any = "learned",
    adaptive: Any = None,
    prefixes: Any = None,
    staged: bool = False,
) -> ImportanceRun | StagedImportance:
    """Resample every position of ``trace`` (cached, resumable), then compute the importance table and matrices.

    Accuracy is graded against ``gt_answer``, else the trace's recorded ``gt_answer``, else the trace's own final
    answer (``stats["graded_against"]`` says which; with none at all, accuracy is NaN). White-box columns
    (receiver heads, suppression) are added when the backend holds a transformers model; ``receiver_heads`` (from
    :func:`read_receiver_heads`) are heads chosen on other traces, else they are chosen on this one. ``roles``
    is the labeller of the ``role`` column (``cot.label_sentences``: ``learned``, the default, ``rules``, or a
    labeller object such as a judge from :func:`anchors._labeller.role_labeller`).

    ``adaptive`` (an :class:`anchors._adaptive.AdaptiveOptions`, or the :class:`anchors._adaptive.AdaptiveOutcome`
    of rounds a dataset run already drew) samples in rounds and stops each position once its
    sentences' significance verdicts are settled (``samples`` is then the most a position gets); the table gains
    ``stop_reason`` (its ``n_rollouts`` and ``n_forced`` say how many rollouts each position got), and
    ``<metric>_significant`` is the sequential verdict (:mod:`anchors._adaptive`).

    ``prefixes``: the trace's :class:`resampling.TracePrefixes`, built already with this backend's tokenizer and
    ``min_chars`` (a dataset run builds each trace's once); built here when not given.

    ``staged``: return a :class:`StagedImportance` once the rollouts are read, with the scoring still to do, so a
    dataset run can embed the new sentences of several traces in one call before scoring them.
    """
    from anchors._blackbox import ImportanceOptions, importance_table, sentence_matrix
    from resampling import Engine, SamplingParams, TracePrefixes, run_health

    params = params or SamplingParams(
        temperature=REAL_MODEL_SAMPLING["temperature"],
        top_p=REAL_MODEL_SAMPLING["top_p"],
        max_new_tokens=REAL_MODEL_SAMPLING["max_new_tokens"],
    )
    forced_params = forced_params or SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=REAL_MODEL_SAMPLING["forced_max_new_tokens"],
    )
    if prefixes is None:
        prefixes = TracePrefixes.build(trace, backend.tokenizer, min_chars=min_chars)
    plan = prefixes.plan(samples, seed, params, forced_answer=forced_answer, forced_params=forced_params)
    truth, graded_against = _truth(trace, gt_answer)
    opts = replace(options or ImportanceOptions(), min_chars=min_chars)
    emb = _run_embeddings(embed, cache_dir, quiet, trace.id)
    from cot import label_sentences

    labels = label_sentences(prefixes.sentences, roles)
    engine = Engine(backend, cache_dir, quiet=quiet)
    outcome = None
    if adaptive is not None:
        from anchors._adaptive import AdaptiveOutcome, counts_plan, run_rounds

        outcome = adaptive
        if not isinstance(adaptive, AdaptiveOutcome):
            rounds = adaptive_rounds(
                prefixes, trace, samples=samples, seed=seed, params=params, forced_params=forced_params,
                forced_answer=forced_answer, options=opts, embed=emb, roles=labels, adaptive=adaptive,
            )  # fmt: skip
            run_rounds(
                [rounds],
                lambda go: [engine.run(go[0].plan(), truths={trace.id: truth}).rollouts],
                adaptive.budget,
            )
            outcome = rounds.outcome()
        plan = counts_plan(prefixes, outcome.counts, seed, params, forced_answer, forced_params)
    # with ``out``, the engine writes OUT/rollouts.parquet and OUT/run.json (model identity, sampling, seeds,
    # versions, and ``header``) as ``cotscope resample`` does
    result = engine.run(
        plan, truths={trace.id: truth}, out=out, header={**(header or {}), "graded_against": graded_against}
    )
    if outcome is not None:
        result.stats.update(outcome.stats)
    # a run whose rollouts (mostly) failed has nothing to score: one line with the cause, the rows stay cached
    run_health(result.rollouts).check()
    result.stats["graded_against"] = graded_against
    result.stats["truth"] = truth

    def score() -> ImportanceRun:
        if not quiet:
            step(f"scoring {len(prefixes.sentences)} sentences: importance, intervals and p-values")
        matrix = sentence_matrix(result.rollouts, trace, prefixes.sentences, options=opts, embed=emb)
        table = importance_table(
            result.rollouts,
            trace,
            prefixes.sentences,
            options=opts,
            embed=emb,
            matrix=matrix,
            roles=labels,
        )
        if outcome is not None:
            from anchors._adaptive import with_outcome

            table = with_outcome(table, outcome)
        emb.save()
        written = {} if out is None else {"run.json": Path(out) / "run.json"}
        run = ImportanceRun(
            trace, prefixes.sentences, result.rollouts, table, matrix, None, result.stats, opts, written
        )
        if whitebox:
            run = add_whitebox(run, backend, prefixes, receiver_heads, quiet)
        return run

    if staged:
        return StagedImportance(trace, prefixes.sentences, result.rollouts, emb, opts, score)
    return score()


@dataclass
class StagedImportance:
    """A trace's rollouts, read, with the scoring still to do (``compute_importance(..., staged=True)``)."""

    trace: Any
    sentences: list[Any]
    rollouts: pl.DataFrame
    embeddings: Any
    """The trace's :class:`anchors._embedding.TextEmbeddings`, which the scoring will ask."""
    options: Any
    score: Any
    """No arguments; returns the :class:`ImportanceRun`."""

    def to_embed(self) -> list[str]:
        """The texts the scoring may embed that the trace's embeddings lack (:func:`anchors._meaning.scoring_texts`)."""
        from anchors._meaning import scoring_texts

        texts = [getattr(s, "text", s) for s in self.sentences]
        wanted = scoring_texts(self.rollouts, self.trace.id, texts, self.options, self.embeddings)
        return self.embeddings.missing(wanted)


def add_whitebox(
    run: ImportanceRun,
    backend: Any,
    prefixes: Any,
    receiver_heads: dict[str, Any] | None = None,
    quiet: bool = True,
) -> ImportanceRun:
    """``run`` with the white-box columns (receiver heads, attention suppression) when the backend holds a
    transformers model; unchanged otherwise. It runs the model (switching its attention implementation for the
    call), so nothing may sample on that model meanwhile."""
    if getattr(backend, "model", None) is None:
        return run
    if not quiet:
        step("white-box: receiver heads and attention suppression")
    given = None if receiver_heads is None else [tuple(h) for h in receiver_heads["heads"]]
    cols, supp, heads = whitebox_columns(backend.model, prefixes, heads=given)
    table = run.table.with_columns(
        [pl.Series(name, values, dtype=pl.Float64) for name, values in cols.items()]
    )
    stats = dict(run.stats)
    stats["receiver_heads"] = [list(h) for h in heads]
    stats["receiver_heads_source"] = (
        f"chosen on {len(receiver_heads.get('traces', []))} other traces ({receiver_heads.get('path', '')})"
        if receiver_heads is not None
        else "chosen on this trace itself (circular; pass --receiver-heads FILE from cotscope receiver-heads)"
    )
    return replace(run, table=table, suppression=supp, stats=stats)


def adaptive_rounds(
    prefixes: Any,
    trace: Any,
    *,
    samples: int,
    seed: int,
    params: Any,
    forced_params: Any,
    forced_answer: bool,
    options: Any,
    embed: Any,
    roles: Any,
    adaptive: Any,
) -> Any:
    """The :class:`anchors._adaptive.TraceRounds` of one trace, scored as :func:`compute_importance` scores it
    (single-trace and dataset runs both start here, so their rows are the same)."""
    from anchors._adaptive import TraceRounds
    from anchors._blackbox import importance_table
    from anchors._significance import SIGNIFICANCE_METRICS

    def score(rollouts: pl.DataFrame) -> pl.DataFrame:
        return importance_table(
            rollouts, trace, prefixes.sentences, options=options, embed=embed, roles=roles
        )

    return TraceRounds(
        prefixes,
        samples=samples,
        seed=seed,
        params=params,
        forced_params=forced_params,
        forced_answer=forced_answer,
        score=score,
        metrics=SIGNIFICANCE_METRICS,
        level=options.significance_level,
        adaptive=adaptive,
        options=options,
    )


def _run_embeddings(
    embed: Any, cache_dir: str | os.PathLike, quiet: bool, trace_id: str | None = None
) -> Any:
    """The run's sentence embeddings: kept in the run cache when they come from the bundled model, so a rerun
    embeds only new sentences; a progress bar unless ``quiet``.

    With ``trace_id`` the file is that trace's own (``embeddings.<model>/<hash of the id>.npz``), shared by every
    run on the trace (importance, a study, resilience). One file for all traces made a study of T traces read and
    rewrite every earlier trace's embeddings at each trace: quadratic in T, and all of them in memory at once. A
    dataset run passes its :class:`anchors._embedding.DatasetEmbeddings`: each trace keeps its own file, and the
    texts it lacks are embedded through the memory the dataset's traces share."""
    from functools import partial

    from anchors._embedding import DatasetEmbeddings, TextEmbeddings, as_text_embeddings
    from cot import embed_sentences

    if isinstance(embed, TextEmbeddings) and not isinstance(embed, DatasetEmbeddings):
        return embed
    bundled = (
        embed is None
        or isinstance(embed, DatasetEmbeddings)  # the bundled model, through a dataset run's shared memory
        or embed is embed_sentences
        or (isinstance(embed, partial) and embed.func is embed_sentences)
    )
    if not bundled:
        return as_text_embeddings(embed)
    from anchors._report import EMBEDDER

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", EMBEDDER)
    if trace_id is None:
        cache = Path(cache_dir) / f"embeddings.{name}.npz"
    else:
        key = hashlib.sha256(str(trace_id).encode("utf-8")).hexdigest()[:24]
        cache = Path(cache_dir) / f"embeddings.{name}" / f"{key}.npz"
    return TextEmbeddings(embed, cache=cache, progress=not quiet)


def _truth(trace: Any, gt_answer: str | None) -> tuple[str | None, str]:
    """The answer rollouts are graded against, and a phrase saying what it is."""
    if gt_answer is not None:
        return str(gt_answer), "the given --gt-answer"
    recorded = trace.metadata.get("gt_answer")
    if recorded is not None:
        return str(recorded), "the trace's ground-truth answer (gt_answer)"
    own = getattr(trace, "answer", None)
    if own is not None:
        return str(
            own
        ), "the trace's own final answer (no ground truth given; pass --gt-answer to grade against one)"
    return None, "nothing: no ground truth and no final answer in the trace, so accuracy is NaN"


def write_importance(
    run: ImportanceRun, out: Path, notes: dict[str, Any] | None = None, *, source: Path | None = None
) -> dict[str, Path]:
    """Write the outputs of a run: everything :func:`anchors.write_outputs` writes, the rollouts and the trace.

    ``source`` is the file the trace was read from: when it is ``OUT/trace.json`` itself, it is left as it is (the
    user's file, with any fields a trace does not keep) rather than rewritten."""
    from anchors._report import write_outputs
    from resampling import atomic_write_parquet

    paths = {name: path for name, path in run.written.items() if path.is_file()}
    paths |= write_outputs(
        run.table, run.matrix, run.trace, out, notes=notes, options=run.options, rollouts=run.rollouts
    )
    paths["rollouts.parquet"] = atomic_write_parquet(run.rollouts, Path(out) / "rollouts.parquet")
    target = Path(out) / "trace.json"
    if source is not None and target.exists() and Path(source).resolve() == target.resolve():
        paths["trace.json"] = target
    else:
        paths["trace.json"] = run.trace.save(target)  # rerun with --trace OUT/trace.json
    return paths

"""The main job: resample a trace through the engine, compute every importance metric, write the outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

__all__ = ["ImportanceRun", "compute_importance", "onpolicy_trace", "whitebox_columns"]

DEFAULT_TRACE_SEED = 34
"""Problem (and sampling) seed of the on-policy trace ``cotscope importance`` draws when no ``--trace`` is given: on
the shipped ``arith`` organism it holds one wrong computation that the model corrects in the next sentence ("Wait,
5 plus 4 is not ..., it is 9."); a test checks that it still holds exactly one planted error."""


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


def onpolicy_trace(
    backend: Any, model_id: str, seed: int, *, temperature: float = 1.0, max_new_tokens: int = 256
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
    params = SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
    (trace,) = sample_traces(
        backend,
        backend.tokenizer,
        [example.messages],
        [seed],
        params,
        metadata=[{"gt_answer": example.answer, "task": task.name, "problem_seed": seed}],
    )
    return trace, example


def whitebox_columns(model: Any, prefixes: Any, *, top_k_heads: int = 20, suppression: bool = True):
    """Receiver-head scores (heads chosen on this trace) and attention-suppression outgoing effect per sentence.

    ``receiver_score[j]`` = mean vertical attention score of sentence j over the top receiver heads;
    ``suppression_outgoing[i]`` = mean over later sentences j of KL(base || sentence i hidden), from
    :func:`anchors._whitebox.suppression_matrix`.
    """
    from anchors._whitebox import (
        receiver_head_scores,
        receiver_heads,
        sentence_attention,
        sentence_receiver_scores,
        spans_from_offsets,
        suppression_matrix,
    )

    tok = prefixes.tokenizer
    enc = tok(prefixes.trace.cot, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    shift = len(prefixes.template_ids)
    spans = [(a + shift, b + shift) for a, b in spans_from_offsets(offsets, prefixes.sentences)]
    ids = prefixes.full_ids
    attention = sentence_attention(model, ids, spans)
    scores = receiver_head_scores(attention)
    n_valid = int(np.isfinite(scores).sum())
    heads = receiver_heads(scores, top_k=min(top_k_heads, max(1, n_valid // 4)))
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
    forced_answer: bool = True,
    min_chars: int = 10,
    cache_dir: str | os.PathLike = ".cotscope-cache",
    options: Any = None,
    whitebox: bool = True,
    quiet: bool = True,
    embed: Any = None,
) -> ImportanceRun:
    """Resample every position of ``trace`` (cached, resumable), then compute the importance table and matrices.

    White-box columns (receiver heads, suppression) are added when the backend holds a transformers model.
    """
    from anchors._blackbox import ImportanceOptions, importance_table, sentence_matrix
    from anchors._embedding import as_text_embeddings
    from resampling import Engine, SamplingParams, TracePrefixes

    params = params or SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=256)
    prefixes = TracePrefixes.build(trace, backend.tokenizer, min_chars=min_chars)
    plan = prefixes.plan(
        samples,
        seed,
        params,
        forced_answer=forced_answer,
        forced_params=SamplingParams(temperature=params.temperature, top_p=params.top_p, max_new_tokens=16),
    )
    result = Engine(backend, cache_dir, quiet=quiet).run(
        plan, truths={trace.id: trace.metadata.get("gt_answer")}
    )
    opts = options or ImportanceOptions()
    emb = as_text_embeddings(embed)
    matrix = sentence_matrix(result.rollouts, trace, prefixes.sentences, options=opts, embed=emb)
    table = importance_table(
        result.rollouts, trace, prefixes.sentences, options=opts, embed=emb, matrix=matrix
    )
    supp = None
    if whitebox and getattr(backend, "model", None) is not None:
        cols, supp, heads = whitebox_columns(backend.model, prefixes)
        table = table.with_columns(
            [pl.Series(name, values, dtype=pl.Float64) for name, values in cols.items()]
        )
        result.stats["receiver_heads"] = [list(h) for h in heads]
    return ImportanceRun(trace, prefixes.sentences, result.rollouts, table, matrix, supp, result.stats, opts)


def write_importance(
    run: ImportanceRun, out: Path, notes: dict[str, Any] | None = None, *, source: Path | None = None
) -> dict[str, Path]:
    """Write the outputs of a run: everything :func:`anchors.write_outputs` writes, the rollouts and the trace.

    ``source`` is the file the trace was read from: when it is ``OUT/trace.json`` itself, it is left as it is (the
    user's file, with any fields a trace does not keep) rather than rewritten."""
    from anchors._report import write_outputs
    from resampling._store import atomic_write_parquet

    paths = write_outputs(
        run.table, run.matrix, run.trace, out, notes=notes, options=run.options, rollouts=run.rollouts
    )
    paths["rollouts.parquet"] = atomic_write_parquet(run.rollouts, Path(out) / "rollouts.parquet")
    target = Path(out) / "trace.json"
    if source is not None and target.exists() and Path(source).resolve() == target.resolve():
        paths["trace.json"] = target
    else:
        paths["trace.json"] = run.trace.save(target)  # rerun with --trace OUT/trace.json
    return paths

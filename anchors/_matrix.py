"""The sentence-to-sentence matrix from resampling, and the outgoing/incoming scores it gives each sentence."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from anchors._embedding import EmbedFn, TextEmbeddings, as_text_embeddings
from anchors._meaning import _continuation_matches
from anchors._options import ImportanceOptions, _check_rollouts


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

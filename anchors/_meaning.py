"""When two sentences mean the same: first sentences against the original (embedding cosine and the numbers
they state), continuation sentences against a target, and the first-sentence metrics used on published data."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from anchors._embedding import EmbedFn, TextEmbeddings, as_text_embeddings


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
    ``target_texts`` is given, states the same numbers). With ``target_texts``, a sentence that states the numbers of
    no target matches none whatever its embedding, so it is not embedded."""
    per_row = [emb.continuation_sentences(t, min_chars) for t in texts]
    flat = [s for row in per_row for s in row]
    out = np.zeros((len(texts), targets.shape[0]), dtype=bool)
    if not flat or targets.shape[0] == 0:
        return out
    distinct = list(dict.fromkeys(flat))
    hits_u = np.zeros((len(distinct), targets.shape[0]), dtype=bool)
    compared = np.arange(len(distinct))
    if target_texts is not None:
        target_keys = [number_key(t) for t in target_texts]
        keys = [number_key(s) for s in distinct]
        stated = set(target_keys)
        compared = np.array([u for u, key in enumerate(keys) if key in stated], dtype=np.int64)
    for start in range(0, len(compared), 16384):
        chunk = compared[start : start + 16384]
        vectors = emb([distinct[u] for u in chunk])
        hits_u[chunk] = vectors @ targets.T >= threshold
    if target_texts is not None:
        for u in compared.tolist():
            for j in np.flatnonzero(hits_u[u]):
                if keys[u] != target_keys[j]:
                    hits_u[u, j] = False
    row_of = {s: u for u, s in enumerate(distinct)}
    inverse = np.fromiter((row_of[s] for s in flat), dtype=np.int64, count=len(flat))
    lengths = np.array([len(r) for r in per_row])
    nonempty = np.flatnonzero(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[nonempty]
    out[nonempty] = np.logical_or.reduceat(hits_u[inverse], starts, axis=0)
    return out


def scoring_texts(
    rollouts: pl.DataFrame, trace_id: str, texts: Sequence[str], options: Any, emb: TextEmbeddings
) -> list[str]:
    """Every text that scoring these rollouts (``sentence_matrix`` and ``importance_table`` with ``options``) can
    embed: the trace's sentences and the continuation sentences of its resampled rollouts (their first sentences
    among them), less those whose numbers no sentence of the trace states when numbers are compared (they match
    nothing whatever their embedding). A superset where the scoring skips more (a first sentence at a position
    that states other numbers); a dataset run embeds these for several traces at once."""
    from anchors._options import _check_rollouts

    rows = _check_rollouts(rollouts, trace_id, len(texts)).filter(pl.col("kind") == "resample")
    stated = {number_key(t) for t in texts} if options.compare_numbers else None
    wanted = dict.fromkeys(texts)
    for text in rows["text"].to_list():
        for sentence in emb.continuation_sentences(text, options.min_chars):
            if stated is None or number_key(sentence) in stated:
                wanted[sentence] = None
    for first in rows["first_sentence"].to_list():  # the engine's split (read as is when min_chars is 0)
        if first is not None and (stated is None or number_key(first) in stated):
            wanted[first] = None
    return list(wanted)


def _first_sentence_similarity(
    frame: pl.DataFrame, sentence_vectors: np.ndarray, emb: TextEmbeddings, skip: np.ndarray | None = None
) -> np.ndarray:
    """Cosine between each row's first sentence and the original sentence at its position (NaN if undefined).

    Rows where ``skip`` is true get -inf where the cosine is defined, without embedding their first sentence (a
    caller that counts them as differing whatever the cosine)."""
    sims = np.full(frame.height, np.nan)
    first = frame["first_sentence"].to_list()
    pos = frame["position"].to_numpy()
    rows = [r for r, f in enumerate(first) if f is not None and pos[r] < sentence_vectors.shape[0]]
    if skip is not None:
        sims[[r for r in rows if skip[r]]] = -np.inf
        rows = [r for r in rows if not skip[r]]
    if rows:
        vecs = emb([first[r] for r in rows])
        sims[rows] = np.einsum("ij,ij->i", vecs, sentence_vectors[pos[rows]])
    return sims


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

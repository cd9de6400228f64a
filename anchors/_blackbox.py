"""Black-box thought-anchor importance from resampled rollouts (Bogdan et al. 2025, arXiv 2506.19143): the table.

:func:`importance_table` assembles one row per sentence from the pieces beside it:

- ``anchors._options``: the rollout columns read, :class:`ImportanceOptions`, the input checks;
- ``anchors._formulas``: the notation, the sign convention and the formula of every metric (:data:`METRICS`);
- ``anchors._conventions``: the ``cotscope`` and ``thought_anchors`` conventions (which sets, what undefined becomes);
- ``anchors._significance``: bootstrap BCa intervals and permutation p-values (:data:`SIGNIFICANCE_METRICS`);
- ``anchors._meaning``: when a regenerated or continuation sentence means the same as the original;
- ``anchors._matrix``: the sentence-to-sentence matrix and its outgoing/incoming scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from anchors._conventions import _CotscopeRules, _ReferenceRules
from anchors._embedding import EmbedFn, TextEmbeddings, as_text_embeddings
from anchors._formulas import METRICS, _position_stats, _Sets, _shared_metrics, kl_divergence
from anchors._matrix import add_matrix_scores, sentence_matrix
from anchors._meaning import (
    _continuation_matches,
    _first_sentence_similarity,
    _numbers_changed,
    continuation_sentences,
    different_trajectories_fraction,
    overdeterminedness,
)
from anchors._options import NO_ANSWER, ROLLOUT_COLUMNS, ImportanceOptions, _check_rollouts, _check_split
from anchors._significance import (
    SIGNIFICANCE_METRICS,
    _ci,
    _perm_p,
    _replicate_weights,
    _row_sets,
    split_half_pvalues,
)

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
    "split_half_pvalues",
]


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
    # The reference's chunk set: positions 0..K-1 that have rollouts, answered or not, failed or not (a position
    # whose rollouts all lack an answer, or whose requests all failed, is still the "next" one, with accuracy 0.0 and
    # no answers); forced probes exist for every such chunk once any exist (a missing one counts as accuracy 0.0
    # and an empty answer distribution).
    requested = rollouts.filter((pl.col("trace_id") == trace.id) & (pl.col("kind") == "resample"))
    present = {p for p in requested["position"].to_list() if p is not None and 0 <= p < k}
    rules = (_ReferenceRules if opts.compat else _CotscopeRules)(opts, k, present, forced.height > 0)
    if opts.compat:  # the reference drops unanswered rollouts before anything
        resample = resample.filter(pl.col("answer_norm").is_not_null())
        forced = forced.filter(pl.col("answer_norm").is_not_null())

    answers = sorted({a for a in pl.concat([resample["answer_norm"], forced["answer_norm"]]).to_list() if a})
    codes = {a: c for c, a in enumerate(answers)}
    codes[NO_ANSWER] = len(codes)
    keep = slice(None) if opts.bucket_no_answer else slice(0, len(answers))

    sentence_vectors = emb(texts) if k else np.zeros((0, 1), np.float32)
    # a first sentence that states other numbers differs whatever its cosine: it is not embedded
    changed = _numbers_changed(resample, texts) > 0 if opts.compare_numbers else None
    sims = _first_sentence_similarity(resample, sentence_vectors, emb, skip=changed)
    differs = np.where(np.isnan(sims), np.nan, (sims < opts.similarity_threshold).astype(float))
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

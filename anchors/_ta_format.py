"""The thought-anchors file format: export our results for the thought-anchors.com visualiser, import theirs.

Exported files (same field names and JSON types as the published ones):

- ``chunks_labeled.json``: one object per sentence (``chunk``, ``chunk_idx``, ``function_tags``, ``depends_on``,
  ``accuracy``, the six importance values, ``different_trajectories_fraction``, ``overdeterminedness``,
  ``summary``).
- ``step_importance.json``: for each source sentence i, ``target_impacts`` over j > i from the sentence matrix.
- ``summary.json``: matrix statistics and the five most influential (outgoing) and dependent (incoming) sentences.

JSON has no NaN, and the visualiser expects numbers, so undefined values are written as 0.0 (the reference
convention) and matrix entries that are undefined are left out. ``counterfactual_importance_accuracy`` is written
with the reference sign (``acc(D_i) - acc(kept)``) when the table uses the cotscope convention.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from anchors._blackbox import METRICS

__all__ = [
    "TA_CHUNK_FIELDS",
    "TA_METRICS",
    "base_correct",
    "compare_published",
    "import_thought_anchors",
    "to_chunks_labeled",
    "to_step_importance",
    "to_summary",
    "write_thought_anchors",
]

# The metrics of the published ``chunks_labeled.json``: ours up to overdeterminedness (resilience and
# counterfactual++ come from Thought Branches and have no field there).
TA_METRICS: tuple[str, ...] = METRICS[: METRICS.index("overdeterminedness") + 1]
"""Numeric per-sentence fields of ``chunks_labeled.json``, in file order."""

TA_CHUNK_FIELDS: tuple[str, ...] = (
    "chunk",
    "chunk_idx",
    "function_tags",
    "depends_on",
    *TA_METRICS,
    "summary",
)


def _num(x: Any) -> float:
    if x is None:
        return 0.0
    x = float(x)
    return x if math.isfinite(x) else 0.0


def _short_summary(text: str, words: int = 5) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def to_chunks_labeled(table: pl.DataFrame) -> list[dict[str, Any]]:
    """``chunks_labeled.json`` records from an importance table (one per row, in position order)."""
    flip = "convention" not in table.columns or (table.height and table["convention"][0] != "thought_anchors")
    out = []
    for row in table.sort("position").iter_rows(named=True):
        rec: dict[str, Any] = {
            "chunk": row["text"],
            "chunk_idx": int(row["position"]),
            "function_tags": [row.get("role") or "unknown"],
            "depends_on": [str(d) for d in (row.get("depends_on") or [])],
        }
        for name in TA_METRICS:
            value = _num(row.get(name))
            if name == "counterfactual_importance_accuracy" and flip:
                value = -value + 0.0
            rec[name] = value
        rec["summary"] = row.get("summary") or _short_summary(row["text"])
        out.append(rec)
    return out


def _check_matrix(table: pl.DataFrame, matrix: np.ndarray | None) -> np.ndarray:
    k = table.height
    if matrix is None:
        return np.full((k, k), np.nan)
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (k, k):
        raise ValueError(f"matrix has shape {matrix.shape}, expected {(k, k)} for {k} sentences")
    return matrix


def to_step_importance(table: pl.DataFrame, matrix: np.ndarray | None) -> list[dict[str, Any]]:
    """``step_importance.json`` records: ``importance_score = M[i, j]`` for every defined j > i."""
    matrix = _check_matrix(table, matrix)
    rows = table.sort("position")
    texts, positions = rows["text"].to_list(), rows["position"].to_list()
    out = []
    for i, (pos, text) in enumerate(zip(positions, texts, strict=True)):
        impacts = [
            {"target_chunk_idx": int(positions[j]), "importance_score": float(matrix[i, j])}
            for j in range(i + 1, len(positions))
            if math.isfinite(matrix[i, j])
        ]
        out.append({"source_chunk_idx": int(pos), "source_chunk_text": text, "target_impacts": impacts})
    return out


def to_summary(
    table: pl.DataFrame, matrix: np.ndarray | None, *, problem_idx: int = 0, top: int = 5
) -> dict[str, Any]:
    """``summary.json`` with the reference's statistics: undefined cells count as 0; mean, max and min over all K²
    cells; mean outgoing (over j > i) and incoming (over i < j) importance per sentence, 0 where there is no such
    cell; the ``top`` sentences by each, keeping only positive scores."""
    matrix = np.nan_to_num(_check_matrix(table, matrix), nan=0.0)
    k = table.height
    outgoing = np.array([matrix[i, i + 1 :].mean() if i + 1 < k else 0.0 for i in range(k)])
    incoming = np.array([matrix[:j, j].mean() if j > 0 else 0.0 for j in range(k)])
    chunks = to_chunks_labeled(table)

    def ranked(scores: np.ndarray, key: str) -> list[dict[str, Any]]:
        order = np.argsort(scores)[::-1][:top]
        return [
            {"step_idx": chunks[i]["chunk_idx"], "step_text": chunks[i], key: float(scores[i])}
            for i in order
            if scores[i] > 0
        ]

    return {
        "problem_idx": int(problem_idx),
        "num_chunks": int(k),
        "avg_importance": float(matrix.mean()) if k else 0.0,
        "max_importance": float(matrix.max()) if k else 0.0,
        "min_importance": float(matrix.min()) if k else 0.0,
        "top_influential_steps": ranked(outgoing, "avg_outgoing_importance"),
        "top_dependent_steps": ranked(incoming, "avg_incoming_importance"),
    }


def _problem_idx(trace: Any) -> int:
    meta = getattr(trace, "metadata", None) or {}
    for key in ("problem_idx", "problem_index"):
        if isinstance(meta.get(key), int):
            return meta[key]
    source = str(meta.get("source", ""))
    found = re.search(r"problem_(\d+)", source)
    return int(found.group(1)) if found else 0


def write_thought_anchors(
    table: pl.DataFrame, matrix: np.ndarray | None, out_dir: str | os.PathLike, *, trace: Any = None
) -> list[Path]:
    """Write the three files into ``out_dir`` atomically; returns their paths."""
    from cot import atomic_write_json

    out = Path(out_dir)
    problem_idx = _problem_idx(trace) if trace is not None else 0
    files = {
        "chunks_labeled.json": to_chunks_labeled(table),
        "step_importance.json": to_step_importance(table, matrix),
        "summary.json": to_summary(table, matrix, problem_idx=problem_idx),
    }
    return [atomic_write_json(out / name, data, indent=2) for name, data in files.items()]


# -- import ------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); re-download the file"
        ) from exc


def read_labeled_chunks(problem_dir: str | os.PathLike) -> Any:
    """The parsed ``chunks_labeled.json`` of a problem folder; :class:`cot.TraceError` when it lists no chunks."""
    folder = Path(problem_dir)
    labeled_path = folder / "chunks_labeled.json"
    if not labeled_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no chunks_labeled.json; give a thought-anchors problem folder "
            "(e.g. .../correct_base_solution/problem_330)"
        )
    chunks = _read_json(labeled_path)
    if isinstance(chunks, list) and not chunks:
        from cot import TraceError

        raise TraceError(
            f"{labeled_path} lists no chunks: the trace is empty, so there is no sentence to import; give a "
            "problem folder whose chunks_labeled.json lists the sentences of its chain of thought"
        )
    return chunks


def base_correct(problem_dir: str | os.PathLike) -> bool | None:
    """Whether a problem folder's base solution is correct, from the published layout
    (``correct_base_solution/problem_<idx>`` or ``incorrect_base_solution/...``); None when the path does not say."""
    for part in reversed(Path(problem_dir).parts):
        if part.startswith("correct_base_solution"):
            return True
        if part.startswith("incorrect_base_solution"):
            return False
    return None


def import_thought_anchors(
    problem_dir: str | os.PathLike,
    *,
    threshold: float = 0.8,
    embed: Any = None,
    positions: Iterable[int] | None = None,
) -> pl.DataFrame:
    """A published thought-anchors problem folder as an importance table.

    Published values keep their names with a ``published_`` prefix. Recomputed here, where the folder allows it:

    - ``different_trajectories_fraction`` and ``overdeterminedness`` (with ``n_resampled``) from
      ``chunks_resampled.json`` (the regenerated first sentences of each chunk's rollouts): cosine of
      all-MiniLM-L6-v2 embeddings below ``threshold``, and exact-string duplicates;
    - ``outgoing_importance`` and ``incoming_importance`` from ``step_importance.json`` (row and column means), with
      ``published_avg_outgoing_importance`` / ``published_avg_incoming_importance`` from ``summary.json`` for its top
      sentences.

    Columns that a folder cannot give are null. ``positions`` (chunk indices) limits the recomputation from
    ``chunks_resampled.json``, whose embedding is the slow part, to those chunks; the others keep every published
    column and get null recomputed values. ``None``: every chunk.
    """
    from anchors._blackbox import different_trajectories_fraction, overdeterminedness
    from anchors._embedding import as_text_embeddings

    folder = Path(problem_dir)
    chunks = read_labeled_chunks(folder)
    found = re.search(r"problem_(\d+)", folder.name)
    problem_idx = int(found.group(1)) if found else None
    trace_id = None
    if (folder / "base_solution.json").is_file():
        from cot import load_trace

        trace_id = load_trace(folder).id

    resampled_path = folder / "chunks_resampled.json"
    resampled = _read_json(resampled_path) if resampled_path.is_file() else None
    if resampled is not None and positions is not None:
        wanted = {str(int(p)) for p in positions}
        resampled = {k: v for k, v in resampled.items() if k in wanted}
    emb = as_text_embeddings(embed)
    if resampled is not None:  # embed everything at once, in batches
        keep = [c["chunk"] for c in chunks if str(c["chunk_idx"]) in resampled]
        emb.ids(keep + [s for v in resampled.values() for s in v if isinstance(s, str)])

    matrix_scores: dict[int, tuple[float, float]] = {}
    step_path = folder / "step_importance.json"
    if step_path.is_file():
        steps = _read_json(step_path)
        idx = sorted({c["chunk_idx"] for c in chunks})
        where = {c: n for n, c in enumerate(idx)}
        m = np.full((len(idx), len(idx)), np.nan)
        for s in steps:
            for t in s["target_impacts"]:
                if s["source_chunk_idx"] in where and t["target_chunk_idx"] in where:
                    m[where[s["source_chunk_idx"]], where[t["target_chunk_idx"]]] = t["importance_score"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out, inc = np.nanmean(m, axis=1), np.nanmean(m, axis=0)
        matrix_scores = {c: (float(out[n]), float(inc[n])) for c, n in where.items()}

    published_top: dict[str, dict[int, float]] = {"outgoing": {}, "incoming": {}}
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        summary = _read_json(summary_path)
        for s in summary.get("top_influential_steps", []):
            published_top["outgoing"][s["step_idx"]] = s["avg_outgoing_importance"]
        for s in summary.get("top_dependent_steps", []):
            published_top["incoming"][s["step_idx"]] = s["avg_incoming_importance"]

    records = []
    for c in chunks:
        i = c["chunk_idx"]
        tags = c.get("function_tags") or []
        firsts = (
            [s for s in resampled.get(str(i), []) if isinstance(s, str)]
            if resampled and (positions is None or str(i) in resampled)
            else None
        )
        rec: dict[str, Any] = {
            "trace_id": trace_id,
            "problem_idx": problem_idx,
            "position": i,
            "text": c["chunk"],
            "role": tags[0] if tags else "unknown",
            "n_resampled": len(firsts) if firsts is not None else None,
            "different_trajectories_fraction": (
                different_trajectories_fraction(firsts, c["chunk"], threshold=threshold, embed=emb)
                if firsts
                else None
            ),
            "overdeterminedness": overdeterminedness(firsts) if firsts else None,
            "outgoing_importance": matrix_scores.get(i, (None, None))[0],
            "incoming_importance": matrix_scores.get(i, (None, None))[1],
        }
        for name in TA_METRICS:
            rec[f"published_{name}"] = float(c[name]) if c.get(name) is not None else None
        rec["published_function_tags"] = ",".join(tags)
        rec["published_depends_on"] = ",".join(str(d) for d in c.get("depends_on") or [])
        rec["published_summary"] = c.get("summary") or ""
        rec["published_avg_outgoing_importance"] = published_top["outgoing"].get(i)
        rec["published_avg_incoming_importance"] = published_top["incoming"].get(i)
        records.append(rec)
    schema = {
        "trace_id": pl.String,
        "problem_idx": pl.Int64,
        "position": pl.Int64,
        "text": pl.String,
        "role": pl.String,
        "n_resampled": pl.Int64,
        "different_trajectories_fraction": pl.Float64,
        "overdeterminedness": pl.Float64,
        "outgoing_importance": pl.Float64,
        "incoming_importance": pl.Float64,
        **{f"published_{n}": pl.Float64 for n in TA_METRICS},
        "published_function_tags": pl.String,
        "published_depends_on": pl.String,
        "published_summary": pl.String,
        "published_avg_outgoing_importance": pl.Float64,
        "published_avg_incoming_importance": pl.Float64,
    }
    return pl.DataFrame(records, schema=schema, orient="row")


def compare_published(table: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Mean absolute difference (with the count, the largest difference, the share above 0.05, and the mean without
    the last chunk) between each recomputed column and its published counterpart, over rows where both exist."""
    pairs = {
        "different_trajectories_fraction": "published_different_trajectories_fraction",
        "overdeterminedness": "published_overdeterminedness",
        "outgoing_importance": "published_avg_outgoing_importance",
        "incoming_importance": "published_avg_incoming_importance",
    }
    out: dict[str, dict[str, float]] = {}
    for ours, theirs in pairs.items():
        if ours not in table.columns or theirs not in table.columns:
            continue
        both = table.select("position", ours, theirs).drop_nulls().filter(pl.col(ours).is_not_nan())
        if both.height == 0:
            continue
        diff = (both[ours] - both[theirs]).abs()
        # the reference writes 0.0 for the last chunk's first-sentence metrics (no later chunk): report both
        not_last = diff.filter(both["position"] != table["position"].max())
        out[ours] = {
            "n": float(both.height),
            "mean_abs_diff": float(diff.mean()),
            "max_abs_diff": float(diff.max()),
            "share_over_0.05": float((diff > 0.05).mean()),
            "mean_abs_diff_without_last": float(not_last.mean()) if not_last.len() else math.nan,
        }
    return out

"""The data behind the interactive report: sentences with every metric, answer distributions and a few
continuations per position, the sentence matrix and the graph's edges, as one JSON object the page reads.

Everything the trace or the rollouts wrote is untrusted text: it travels only inside this JSON (embedded with
:func:`script_json`, which escapes ``<``, ``>``, ``&`` and the JavaScript line separators) and the page puts it into
the document with ``textContent``, never as markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

__all__ = ["metric_columns", "report_payload", "script_json", "significance_columns"]

MAX_CONTINUATIONS = 6
"""Resampled continuations stored per position (the panel shows them; the answer counts use every rollout)."""

CONTINUATION_CHARS = 700
"""Characters of a continuation kept after its first sentence (the rest is cut, and the cut is said)."""

MAX_ANSWERS = 10
"""Answers listed per pair of distributions (most frequent over both); rarer ones are summed into "other answers"."""

_STRUCTURAL = {
    "trace_id",
    "sentence_id",
    "position",
    "start",
    "end",
    "text",
    "role",
    "counterfactual_source",
    "convention",
}

COUNT_COLUMNS = ("n_rollouts", "n_answered", "n_no_answer", "n_truncated", "n_forced", "n_different")
"""Per-sentence sample sizes shown beside the values."""

P_SUFFIXES = ("_p", "_pvalue", "_p_value", "_pval")
"""Column suffixes read as a metric's p-value (``<metric><suffix>``)."""

SIGNIFICANT_SUFFIX = "_significant"
"""Column suffix read as a metric's significance flag (``<metric>_significant``, boolean)."""

P_ALPHA = 0.05
"""Level used to mark a sentence "not distinguishable from noise" when a metric has a p-value but no flag."""

ABOUT: dict[str, str] = {
    "accuracy": "acc(R_i): share of correct answers among the rollouts resampled from sentence i on. In [0, 1].",
    "resampling_importance_accuracy": "acc(R_{i+1}) − acc(R_i). Positive: keeping sentence i raises accuracy; "
    "negative: it lowers it.",
    "resampling_importance_kl": "KL(P(R_i) ‖ P(R_{i+1})) over answers: how far resampling sentence i moves the answer "
    "distribution. ≥ 0; larger = more important.",
    "counterfactual_importance_accuracy": "acc(R_{i+1}) − acc(D_i), D_i = rollouts whose new sentence i differs in "
    "meaning. Positive: keeping sentence i raises accuracy.",
    "counterfactual_importance_kl": "KL(P(D_i) ‖ P(R_{i+1})): how far replacing sentence i by a different one moves "
    "the answer distribution. ≥ 0; larger = more important.",
    "forced_importance_accuracy": "acc(F_{i+1}) − acc(F_i) with the answer forced right after the prefix. Positive: "
    "keeping sentence i raises accuracy.",
    "forced_importance_kl": "KL(P(F_i) ‖ P(F_{i+1})) of forced answers: how much sentence i moves the answer the model "
    "would give right now. ≥ 0.",
    "different_trajectories_fraction": "|D_i| / |R_i|: share of resampled sentences that differ in meaning from "
    "sentence i. In [0, 1].",
    "overdeterminedness": "1 − distinct / all resampled first sentences (exact strings). In [0, 1]; no interval.",
    "resilience": "Share of D_i whose continuation brings sentence i's content back. In [0, 1].",
    "counterfactual_pp_importance_accuracy": "acc(R_{i+1}) − acc(D_i⁻), D_i⁻ = D_i whose content never comes back. "
    "Positive: keeping sentence i raises accuracy.",
    "counterfactual_pp_importance_kl": "KL(P(D_i⁻) ‖ P(R_{i+1})). ≥ 0; larger = more important.",
    "outgoing_importance": "Mean over later j of M[i, j]: how much keeping sentence i raises later sentences' content.",
    "incoming_importance": "Mean over earlier i of M[i, j]: how much earlier sentences raise this one's content.",
    "receiver_score": "Attention that receiver heads pay to sentence i from later sentences (white-box). ≥ 0.",
    "suppression_outgoing": "Mean KL of later tokens' predictions when attention to sentence i is masked (white-box).",
}
"""One line per known metric: the formula and which sign means what (R, D, F as in ``anchors._formulas``)."""

_SIGNED = {
    "resampling_importance_accuracy",
    "counterfactual_importance_accuracy",
    "forced_importance_accuracy",
    "counterfactual_pp_importance_accuracy",
    "outgoing_importance",
    "incoming_importance",
}

ROLE_TAGS = {
    "problem_setup": "setup",
    "plan_generation": "plan",
    "fact_retrieval": "fact",
    "active_computation": "compute",
    "uncertainty_management": "uncertain",
    "result_consolidation": "consolidate",
    "self_checking": "check",
    "final_answer_emission": "answer",
    "unknown": "?",
}
"""Short role tags shown beside each sentence (the full role is in the hover)."""


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside ``<script type="application/json">``: strict (no NaN), and with every
    ``<``, ``>``, ``&``, U+2028 and U+2029 written as a ``\\u`` escape, so no text can close the script element."""
    from cot import json_dumps

    text = json_dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def _num(x: Any, digits: int = 4) -> float | None:
    """A finite number rounded to ``digits`` significant digits (small JSON), or None."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def significance_columns(columns: Sequence[str], metric: str) -> tuple[str | None, str | None]:
    """The p-value column and the significance-flag column of ``metric`` in ``columns`` (None where absent)."""
    cols = set(columns)
    p = next((metric + s for s in P_SUFFIXES if metric + s in cols), None)
    flag = metric + SIGNIFICANT_SUFFIX if metric + SIGNIFICANT_SUFFIX in cols else None
    return p, flag


def metric_columns(table: pl.DataFrame) -> list[str]:
    """Every numeric per-sentence value column of ``table``: the known metrics first (in ``ABOUT``'s order), then any
    other numeric column, generically; interval, sample-size, p-value and significance columns belong to their
    metric and are not listed."""
    numeric = [c for c, t in table.schema.items() if t.is_numeric() and c not in _STRUCTURAL]
    names = set(numeric)
    helpers: set[str] = set()
    for c in numeric:
        for suffix in ("_lo", "_hi", "_n", *P_SUFFIXES):
            if c.endswith(suffix) and c[: -len(suffix)] in names:
                helpers.add(c)
    helpers.update(c for c in numeric if c in COUNT_COLUMNS)
    values = [c for c in numeric if c not in helpers]
    known = [m for m in ABOUT if m in values]
    return known + [c for c in values if c not in ABOUT]


def _column(table: pl.DataFrame, name: str | None) -> list[Any] | None:
    if name is None or name not in table.columns:
        return None
    return table[name].to_list()


def _metric_entry(table: pl.DataFrame, name: str) -> dict[str, Any]:
    values = [_num(v) for v in table[name].to_list()]
    lo, hi, n = (_column(table, f"{name}{s}") for s in ("_lo", "_hi", "_n"))
    p_col, flag_col = significance_columns(table.columns, name)
    p = _column(table, p_col)
    flag = _column(table, flag_col)
    sig: list[bool | None] | None = None
    rule = None
    if flag is not None:
        sig = [None if f is None else bool(f) for f in flag]
        rule = f"column {flag_col}"
    elif p is not None:
        sig = [None if _num(x) is None else float(x) < P_ALPHA for x in p]
        rule = f"{p_col} < {P_ALPHA}"
    finite = [v for v in values if v is not None]
    return {
        "name": name,
        "about": ABOUT.get(name, f"Column {name} of importance.parquet, shown as stored."),
        "signed": name in _SIGNED or any(v < 0 for v in finite),
        "defined": len(finite),
        "values": values,
        "lo": [_num(v) for v in lo] if lo is not None else None,
        "hi": [_num(v) for v in hi] if hi is not None else None,
        "n": [None if v is None else int(v) for v in n] if n is not None else None,
        "p": [_num(v, 3) for v in p] if p is not None else None,
        "p_column": p_col,
        "significant": sig,
        "significance_rule": rule,
    }


def _other_columns(table: pl.DataFrame, metrics: Sequence[str]) -> dict[str, list[Any]]:
    """Columns nothing else shows (strings, booleans, unknown helpers): listed as they are in the hover."""
    shown = set(_STRUCTURAL) | set(COUNT_COLUMNS) | {"trace_id"}
    for m in metrics:
        shown.update(f"{m}{s}" for s in ("_lo", "_hi", "_n", SIGNIFICANT_SUFFIX, *P_SUFFIXES))
        shown.add(m)
    out: dict[str, list[Any]] = {}
    for c in table.columns:
        if c in shown or c == "sentence_id":
            continue
        vals = table[c].to_list()
        out[c] = [
            _num(v)
            if isinstance(v, int | float) and not isinstance(v, bool)
            else (None if v is None else str(v))
            for v in vals
        ]
    return out


def _segments(table: pl.DataFrame, trace: Any) -> tuple[list[str], str]:
    """The text before each sentence (the CoT's own separators) and after the last one, when the table's
    ``start``/``end`` offsets match the trace's CoT; otherwise single spaces."""
    cot = getattr(trace, "cot", None)
    texts = table["text"].to_list()
    if isinstance(cot, str) and cot and {"start", "end"} <= set(table.columns):
        starts, ends = table["start"].to_list(), table["end"].to_list()
        ok = all(
            isinstance(a, int) and isinstance(b, int) and cot[a:b] == t
            for a, b, t in zip(starts, ends, texts, strict=True)
        ) and all(b <= a for b, a in zip(ends[:-1], starts[1:], strict=True))
        if ok and texts:
            gaps = [cot[: starts[0]]] + [cot[b:a] for b, a in zip(ends[:-1], starts[1:], strict=True)]
            return gaps, cot[ends[-1] :]
    return ["" if k == 0 else " " for k in range(len(texts))], ""


def _answer_counts(frame: pl.DataFrame, no_answer: str) -> dict[str, tuple[int, bool]]:
    """Rollouts per answer (no answer counted as ``no_answer``), and whether the answer was graded correct."""
    if frame.height == 0:
        return {}
    counts = (
        frame.select(
            pl.col("answer_norm").fill_null(no_answer).replace("", no_answer).alias("a"),
            pl.col("correct").fill_null(False),
        )
        .group_by("a")
        .agg(pl.len().alias("c"), pl.col("correct").any().alias("ok"))
    )
    return {a: (int(c), bool(ok)) for a, c, ok in counts.rows()}


def _distribution(here: pl.DataFrame, after: pl.DataFrame | None, no_answer: str) -> dict[str, Any]:
    """Answer counts of a position's rollouts beside the next position's: the ``MAX_ANSWERS`` answers most frequent
    over both sets as rows ``[answer, here, next, correct]``, the rest summed in ``other`` (``[here, next]``)."""
    h = _answer_counts(here, no_answer)
    n = _answer_counts(after, no_answer) if after is not None else {}
    answers = sorted(set(h) | set(n), key=lambda a: (-(h.get(a, (0,))[0] + n.get(a, (0,))[0]), a))
    none = (0, False)
    rows = [
        [a, h.get(a, none)[0], n.get(a, none)[0], h.get(a, none)[1] or n.get(a, none)[1]] for a in answers
    ]
    rest = rows[MAX_ANSWERS:]
    return {
        "n": here.height,
        "n_next": None if after is None else after.height,
        "rows": rows[:MAX_ANSWERS],
        "other": [sum(r[1] for r in rest), sum(r[2] for r in rest)],
    }


def _pick(frame: pl.DataFrame, cap: int, no_answer: str) -> list[dict[str, Any]]:
    """Up to ``cap`` continuations of one position, taken in turn from each answer (most frequent first, lowest
    sample number first within an answer), so that the panel shows what the other answers look like too."""
    if frame.height == 0 or cap <= 0:
        return []
    order = "sample" if "sample" in frame.columns else None
    rows = frame.sort(order).to_dicts() if order else frame.to_dicts()
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("answer_norm") or no_answer, []).append(r)
    ranked = sorted(groups.values(), key=lambda g: -len(g))
    chosen: list[dict[str, Any]] = []
    depth = 0
    while len(chosen) < cap and any(depth < len(g) for g in ranked):
        for g in ranked:
            if depth < len(g) and len(chosen) < cap:
                chosen.append(g[depth])
        depth += 1
    return [_continuation(r) for r in chosen]


def _continuation(row: dict[str, Any]) -> dict[str, Any]:
    text = row.get("text") or ""
    first = row.get("first_sentence") or ""
    at = text.find(first) if first else -1
    if first and 0 <= at <= 8:
        before, rest = text[:at], text[at + len(first) :]
    else:
        before, first, rest = "", "", text
    cut = max(0, len(rest) - CONTINUATION_CHARS)
    return {
        "sample": row.get("sample"),
        "before": before,
        "first": first,
        "rest": rest[:CONTINUATION_CHARS],
        "cut": cut,
        "answer": row.get("answer_norm") if row.get("answer_norm") not in (None, "") else None,
        "correct": row.get("correct"),
    }


def _rollout_data(
    rollouts: pl.DataFrame | None, trace_id: str, positions: Sequence[int], cap: int
) -> dict[str, Any] | None:
    from anchors._blackbox import NO_ANSWER

    if rollouts is None or rollouts.height == 0:
        return None
    r = rollouts
    if "trace_id" in r.columns and trace_id and (r["trace_id"] == trace_id).any():
        r = r.filter(pl.col("trace_id") == trace_id)
    if "status" in r.columns:
        r = r.filter(pl.col("status") == "ok")
    have = sorted(set(r["position"].to_list()))
    out: dict[str, Any] = {"positions": have, "by_position": {}}
    kinds = {"resample": "resample", "forced": "forced_answer"}
    for p in sorted(set(have) | set(positions)):
        nxt = next((q for q in have if q > p), None)
        entry: dict[str, Any] = {"next": nxt}
        for key, kind in kinds.items():
            here = r.filter((pl.col("position") == p) & (pl.col("kind") == kind))
            after = None if nxt is None else r.filter((pl.col("position") == nxt) & (pl.col("kind") == kind))
            entry[key] = _distribution(here, after, NO_ANSWER)
            if key == "resample":
                entry["continuations"] = _pick(here, cap, NO_ANSWER)
        out["by_position"][str(p)] = entry
    return out


def _matrix_data(matrix: np.ndarray | None, k: int) -> list[list[float | None]] | None:
    """Row ``i`` holds ``M[i, j]`` for ``j > i`` (the rest is undefined by construction)."""
    if matrix is None:
        return None
    m = np.asarray(matrix, dtype=float)
    if m.shape != (k, k):
        return None
    return [[_num(m[i, j], 3) for j in range(i + 1, k)] for i in range(k)]


def _edges(table: pl.DataFrame, matrix: np.ndarray | None, top_k: int) -> list[list[Any]]:
    if matrix is None or table.height == 0:
        return []
    from anchors._graph import build_graph

    try:
        graph = build_graph(table, matrix, top_k=top_k)
    except ValueError:
        return []
    index = {int(p): k for k, p in enumerate(table["position"].to_list())}
    return [[index[u], index[v], _num(d["weight"], 3)] for u, v, d in graph.edges(data=True)]


def _prompt(trace: Any) -> list[dict[str, str]]:
    prompt = getattr(trace, "prompt", None)
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}] if prompt else []
    if isinstance(prompt, list):
        return [
            {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
            for m in prompt
            if isinstance(m, dict)
        ]
    return []


def report_payload(
    table: pl.DataFrame,
    trace: Any = None,
    *,
    matrix: np.ndarray | None = None,
    rollouts: pl.DataFrame | None = None,
    metric: str | None = None,
    top_k: int = 3,
    max_continuations: int = MAX_CONTINUATIONS,
) -> dict[str, Any]:
    """Everything the report's script needs, as plain JSON-able data (rows in position order)."""
    from anchors._plots import role_colors

    if "position" in table.columns:
        order = table.with_row_index("_row").sort("position")
        rows = order["_row"].to_list()
        table = order.drop("_row")
        if matrix is not None:
            m = np.asarray(matrix, dtype=float)
            if m.shape == (len(rows), len(rows)):
                matrix = m[np.ix_(rows, rows)]
    k = table.height
    trace_id = getattr(trace, "id", None) or (
        str(table["trace_id"][0]) if "trace_id" in table.columns and k else ""
    )
    roles = [str(r) if r is not None else "unknown" for r in _column(table, "role") or ["unknown"] * k]
    colors = role_colors(roles)
    gaps, tail = _segments(table, trace)
    metrics = [_metric_entry(table, m) for m in metric_columns(table)]
    defined = [m["name"] for m in metrics if m["defined"]]
    default = (
        metric
        if metric in defined
        else next(
            (m for m in ("counterfactual_importance_kl", "resampling_importance_kl") if m in defined),
            defined[0] if defined else None,
        )
    )
    positions = (
        [int(p) for p in table["position"].to_list()] if "position" in table.columns else list(range(k))
    )
    meta = getattr(trace, "metadata", None) or {}
    return {
        "trace": {
            "id": trace_id,
            "prompt": _prompt(trace),
            "answer_text": getattr(trace, "answer_text", None),
            "gt_answer": None if meta.get("gt_answer") is None else str(meta.get("gt_answer")),
            "tail": tail,
        },
        "sentences": [
            {
                "pos": positions[i],
                "id": str(table["sentence_id"][i]) if "sentence_id" in table.columns else str(positions[i]),
                "text": str(table["text"][i]),
                "role": roles[i],
                "tag": ROLE_TAGS.get(roles[i], roles[i][:12]),
                "gap": gaps[i],
                "source": str(table["counterfactual_source"][i])
                if "counterfactual_source" in table.columns
                else None,
            }
            for i in range(k)
        ],
        "roles": {r: colors[r] for r in dict.fromkeys(roles)},
        "counts": {
            c: [None if v is None else int(v) for v in table[c].to_list()]
            for c in COUNT_COLUMNS
            if c in table.columns
        },
        "metrics": metrics,
        "default_metric": default,
        "other": _other_columns(table, [m["name"] for m in metrics]),
        "rollouts": _rollout_data(rollouts, trace_id, positions, max_continuations),
        "max_continuations": max_continuations,
        "continuation_chars": CONTINUATION_CHARS,
        "matrix": _matrix_data(matrix, k),
        "edges": _edges(table, matrix, top_k),
        "top_k": top_k,
    }

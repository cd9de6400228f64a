"""The dataset report of a study (many traces): aggregate figures, the role table, a sortable table of traces, each
linking to its own report; and :func:`write_study`, every dataset output into one folder."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from cot import atomic_write, atomic_write_text, json_dumps

__all__ = ["STUDY_FILES", "primary_metric", "render_study_report", "trace_summaries", "write_study"]

STUDY_FILES = (
    "importance.parquet",
    "aggregate.parquet",
    "report.html",
    "role_distributions.png",
    "debiased_effects.png",
    "position.png",
    "run.json",
    "traces",
)
"""What a study writes at the top of its folder (per-trace outputs live under ``traces/<trace_id>/``)."""

_PRIMARY = (
    "counterfactual_importance_kl",
    "published_counterfactual_importance_kl",
    "resampling_importance_kl",
    "different_trajectories_fraction",
)


def primary_metric(table: pl.DataFrame) -> str:
    """The metric a study's figures and trace table show: counterfactual KL (ours, else the published one) when the
    table holds a value of it, else the first of resampling KL and the different-trajectories fraction."""
    from anchors._study import aggregate_metrics

    present = aggregate_metrics(table)
    for name in _PRIMARY:
        if name in present:
            return name
    if not present:
        raise ValueError("the study table holds no importance values to aggregate")
    return present[0]


def trace_summaries(table: pl.DataFrame, metric: str) -> pl.DataFrame:
    """One row per trace: ``trace_id``, ``base_correct``, ``sentences``, the top anchor (the sentence with the
    largest ``metric``: ``top_position``, ``top_text``, ``top_role``, ``top_value``) and ``rollouts`` used (the
    sum of ``n_rollouts``, or of ``n_resampled`` for imported traces; null when unknown)."""
    rollout_col = next((c for c in ("n_rollouts", "n_resampled") if c in table.columns), None)
    rows = []
    for (trace_id,), part in table.sort("position").group_by("trace_id", maintain_order=True):
        values = part[metric].cast(pl.Float64).fill_nan(None)
        top = part.filter(values == values.max()).head(1) if values.drop_nulls().len() else None
        correct = part["base_correct"].drop_nulls() if "base_correct" in part.columns else pl.Series([])
        rollouts = part[rollout_col].drop_nulls() if rollout_col else pl.Series([])
        rows.append(
            {
                "trace_id": str(trace_id),
                "base_correct": bool(correct[0]) if correct.len() else None,
                "sentences": part.height,
                "top_position": int(top["position"][0]) if top is not None else None,
                "top_text": str(top["text"][0]) if top is not None else None,
                "top_role": str(top["role"][0] or "unknown") if top is not None else None,
                "top_value": float(top[metric][0]) if top is not None else None,
                "rollouts": int(rollouts.sum()) if rollouts.len() else None,
            }
        )
    schema = {
        "trace_id": pl.String,
        "base_correct": pl.Boolean,
        "sentences": pl.Int64,
        "top_position": pl.Int64,
        "top_text": pl.String,
        "top_role": pl.String,
        "top_value": pl.Float64,
        "rollouts": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _interval(row: dict[str, Any], name: str) -> str:
    from anchors._report import _fmt

    return f"{_fmt(row[name])} <span class='ci'>[{_fmt(row[f'{name}_lo'])}, {_fmt(row[f'{name}_hi'])}]</span>"


def _td(value: Any, shown: str | None = None, cls: str = "num") -> str:
    from anchors._report import _fmt, _sort_key

    text = html.escape(_fmt(value)) if shown is None else shown
    return f"<td class='{cls}' data-v='{html.escape(_sort_key(value), quote=True)}'>{text}</td>"


def render_study_report(
    table: pl.DataFrame,
    aggregate: pl.DataFrame,
    *,
    figures: dict[str, bytes] | None = None,
    metric: str | None = None,
    notes: dict[str, Any] | None = None,
    skipped: Sequence[dict[str, Any]] = (),
    title: str | None = None,
    link: str = "traces/{trace_id}/report.html",
) -> str:
    """One HTML page that opens offline (styles, script and figures inlined): run notes, the aggregate ``figures``,
    each role's aggregate of ``metric`` (split ``all``), the skipped traces with their reasons, and the traces as a
    sortable table whose ids link to ``link`` (relative to the page)."""
    from anchors._report import _SCRIPT, _asset, figures_html

    metric = metric or primary_metric(table)
    traces = trace_summaries(table, metric)
    heading = title or f"Thought anchors across {traces.height} traces"
    meta = {"traces": traces.height, "sentences": table.height, "metric": metric, **(notes or {})}
    if skipped:
        meta["skipped"] = len(skipped)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(heading)}</title><style>{_asset('report.css')}</style></head><body>",
        f"<header class='top'><h1>{html.escape(heading)}</h1><p class='meta'>",
        "; ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in meta.items()),
        "</p><p class='meta'>Intervals: 95% cluster bootstrap over traces (all sentences of a drawn trace move "
        "together). Debiased: each role's mean residual after regressing the metric on a polynomial of relative "
        "position over all sentences.</p></header><main>",
    ]
    rows = aggregate.filter((pl.col("metric") == metric) & (pl.col("split") == "all")).sort(
        ["mean", "role"], descending=[True, False]
    )
    if rows.height:
        degree = int(rows["degree"][0])
        parts.append(
            f"<h2>By role: {html.escape(metric)}</h2><table class='sortable' id='roles'><thead><tr>"
            + "".join(
                f"<th title='click to sort'>{h}</th>"
                for h in (
                    "role",
                    "mean",
                    "mean of trace means",
                    f"debiased (degree {degree})",
                    "share significant",
                    "sentences",
                    "traces",
                )
            )
            + "</tr></thead><tbody>"
        )
        for row in rows.iter_rows(named=True):
            parts.append(
                "<tr>"
                + _td(row["role"], html.escape(row["role"]), cls="")
                + _td(row["mean"], _interval(row, "mean"))
                + _td(row["trace_mean"], _interval(row, "trace_mean"))
                + _td(row["debiased"], _interval(row, "debiased"))
                + _td(row["share_significant"])
                + _td(row["n_sentences"])
                + _td(row["n_traces"])
                + "</tr>"
            )
        parts.append("</tbody></table>")
    parts.append(figures_html(figures))
    if skipped:
        parts.append(f"<h2>Skipped traces ({len(skipped)})</h2><ul id='skipped'>")
        parts.extend(
            f"<li>{html.escape(str(s.get('trace', '?')))}: {html.escape(str(s.get('reason', '')))}</li>"
            for s in skipped
        )
        parts.append("</ul>")
    heads = ("trace", "correct", "sentences", "top anchor", "role", metric, "rollouts")
    parts.append("<h2>Traces</h2><table class='sortable' id='traces'><thead><tr>")
    parts.extend(f"<th title='click to sort'>{html.escape(h)}</th>" for h in heads)
    parts.append("</tr></thead><tbody>")
    for row in traces.iter_rows(named=True):
        href = html.escape(link.format(trace_id=row["trace_id"]), quote=True)
        correct = {True: "yes", False: "no", None: "–"}[row["base_correct"]]
        top = "–" if row["top_text"] is None else f"{row['top_position']}: {row['top_text']}"
        parts.append(
            "<tr>"
            + _td(row["trace_id"], f"<a href='{href}'>{html.escape(row['trace_id'])}</a>", cls="")
            + _td(correct, correct, cls="")
            + _td(row["sentences"])
            + _td(top[:40], html.escape(top), cls="text")
            + _td(row["top_role"] or "", html.escape(row["top_role"] or "–"), cls="")
            + _td(row["top_value"])
            + _td(row["rollouts"])
            + "</tr>"
        )
    parts.append("</tbody></table></main>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "".join(parts)


def write_study(
    table: pl.DataFrame,
    out_dir: str | os.PathLike,
    *,
    metric: str | None = None,
    notes: dict[str, Any] | None = None,
    skipped: Sequence[dict[str, Any]] = (),
    run: dict[str, Any] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Path]:
    """Write a study's dataset outputs into ``out_dir``: ``importance.parquet`` (every sentence of every trace),
    ``aggregate.parquet`` (:func:`anchors._study.aggregate`), the three aggregate figures, ``report.html`` and
    ``run.json`` (``run``, the ``notes``, the skipped traces and their reasons, and the counts). Per-trace outputs
    are written by the caller under ``traces/<trace_id>/``."""
    from anchors._plots import figure_png, plot_debiased_effects, plot_position, plot_role_distributions
    from anchors._report import EMBEDDER, IMPORTANCE_VERSION
    from anchors._study import AGGREGATE_VERSION, DEBIAS_DEGREE, aggregate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric = metric or primary_metric(table)
    agg = aggregate(table, n_bootstrap=n_bootstrap, seed=seed)
    settings = json_dumps(
        {**(notes or {}), "n_bootstrap": n_bootstrap, "bootstrap_seed": seed}, default=str, sort_keys=True
    )
    paths: dict[str, Path] = {}
    paths["importance.parquet"] = atomic_write(
        out / "importance.parquet",
        lambda p: table.write_parquet(
            p,
            metadata={
                "cotscope.importance.version": str(IMPORTANCE_VERSION),
                "cotscope.importance.embedder": EMBEDDER,
                "cotscope.importance.settings": settings,
            },
        ),
    )
    paths["aggregate.parquet"] = atomic_write(
        out / "aggregate.parquet",
        lambda p: agg.write_parquet(
            p,
            metadata={
                "cotscope.aggregate.version": str(AGGREGATE_VERSION),
                "cotscope.aggregate.debias_degree": str(DEBIAS_DEGREE),
                "cotscope.aggregate.settings": settings,
            },
        ),
    )
    figures = {
        f"{metric} by role": ("role_distributions.png", plot_role_distributions(table, metric)),
        "position-debiased role effects": ("debiased_effects.png", plot_debiased_effects(agg, metric)),
        f"{metric} against relative position": ("position.png", plot_position(table, metric)),
    }
    pngs: dict[str, bytes] = {}
    for title, (name, fig) in figures.items():
        pngs[title] = figure_png(fig)
        paths[name] = atomic_write(out / name, lambda p, data=pngs[title]: p.write_bytes(data))
    paths["report.html"] = atomic_write_text(
        out / "report.html",
        render_study_report(table, agg, figures=pngs, metric=metric, notes=notes, skipped=skipped),
    )
    record = {
        **(run or {}),
        "notes": notes or {},
        "traces": int(table["trace_id"].n_unique()),
        "sentences": table.height,
        "skipped": list(skipped),
        "n_skipped": len(skipped),
        "metric": metric,
    }
    paths["run.json"] = atomic_write_text(out / "run.json", json_dumps(record, indent=2, default=str) + "\n")
    return paths

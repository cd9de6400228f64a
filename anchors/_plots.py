"""Figures: importance per sentence, the sentence matrix, the dependency graph, importance by role across traces.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so nothing depends on
a display or on global pyplot state.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

__all__ = [
    "figure_png",
    "plot_debiased_effects",
    "plot_graph",
    "plot_importance",
    "plot_importance_by_role",
    "plot_matrix",
    "plot_position",
    "plot_role_distributions",
    "role_colors",
]

_PALETTE = [
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
]


def role_colors(roles: Sequence[str]) -> dict[str, str]:
    """One fixed colour per role: the ``cot.ROLES`` order first, then any other role in sorted order."""
    from cot import ROLES

    ordered = list(ROLES) + sorted(set(roles) - set(ROLES))
    return {r: _PALETTE[k % len(_PALETTE)] for k, r in enumerate(ordered)}


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


_RAISES, _LOWERS = "#c44e52", "#4c72b0"
"""Edge colours of the dependency graph: M[i, j] > 0 and M[i, j] < 0."""


def _legend(
    ax, colors: dict[str, str], roles: Sequence[str], undefined: bool = False, extra: Sequence[Any] = ()
) -> None:
    """Role colours (then ``extra`` handles, and the "undefined" marker when drawn), outside the axes so that no
    bar hides under it."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    present = [r for r in colors if r in set(roles)]
    handles: list[Any] = [Patch(color=colors[r], label=r) for r in present]
    handles.extend(extra)
    if undefined:
        handles.append(
            Line2D([], [], marker="x", color="0.5", linestyle="none", markersize=4, label="undefined")
        )
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def plot_importance(table: pl.DataFrame, metric: str = "counterfactual_importance_kl") -> Figure:
    """Bars of ``metric`` per sentence position, coloured by role, with the bootstrap interval as error bars."""
    if metric not in table.columns:
        raise ValueError(
            f"no column {metric!r} in the table; choose an importance column such as {_examples(table)}"
        )
    rows = table.sort("position")
    pos = rows["position"].to_numpy()
    val = rows[metric].cast(pl.Float64).fill_null(np.nan).to_numpy()
    roles = rows["role"].to_list() if "role" in rows.columns else ["unknown"] * rows.height
    colors = role_colors(roles)
    fig = Figure(figsize=(max(6.0, 0.09 * len(pos) + 3), 3.2))
    ax = fig.add_subplot()
    ax.bar(pos, np.nan_to_num(val), color=[colors[r] for r in roles], width=0.85)
    lo_name, hi_name = f"{metric}_lo", f"{metric}_hi"
    if lo_name in rows.columns and hi_name in rows.columns:
        lo = rows[lo_name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        hi = rows[hi_name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(val)
        if ok.any():
            err = np.vstack([np.clip(val[ok] - lo[ok], 0, None), np.clip(hi[ok] - val[ok], 0, None)])
            ax.errorbar(pos[ok], val[ok], yerr=err, fmt="none", ecolor="black", elinewidth=0.6, capsize=1.5)
    undefined = ~np.isfinite(val)
    if undefined.any():
        ax.plot(pos[undefined], np.zeros(undefined.sum()), "x", color="0.5", markersize=3, label="undefined")
    ax.axhline(0, color="0.3", linewidth=0.5)
    ax.set_xlabel("sentence position")
    ax.set_ylabel(metric.replace("_", " "))
    _legend(ax, colors, roles, undefined=bool(undefined.any()))
    return fig


def _examples(table: pl.DataFrame) -> str:
    names = [c for c in table.columns if "importance" in c and not c.endswith(("_lo", "_hi", "_n"))]
    return ", ".join(names[:5]) or "counterfactual_importance_kl"


def plot_matrix(matrix: np.ndarray, table: pl.DataFrame | None = None) -> Figure:
    """The sentence matrix ``M[i, j]`` as a heatmap (rows: source i, columns: target j), centred at 0."""
    m = np.asarray(matrix, dtype=float)
    finite = m[np.isfinite(m)]
    vmax = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    size = min(10.0, max(4.0, 0.06 * m.shape[0] + 3))
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(m)
    image = ax.imshow(masked, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="M[i, j] (kept minus resampled match rate)")
    ax.set_xlabel("target sentence j")
    ax.set_ylabel("source sentence i")
    if table is not None and table.height == m.shape[0]:
        ticks = np.linspace(0, m.shape[0] - 1, min(m.shape[0], 10)).astype(int) if m.shape[0] else []
        ax.set_xticks(ticks, [str(table["position"][int(t)]) for t in ticks])
        ax.set_yticks(ticks, [str(table["position"][int(t)]) for t in ticks])
    return fig


def plot_graph(
    table: pl.DataFrame,
    matrix: np.ndarray | None,
    *,
    top_k: int = 3,
    size_metric: str = "counterfactual_importance_kl",
) -> Figure:
    """Arc diagram of the dependency graph: sentences on a line (coloured by role, sized by ``|size_metric|``), each
    sentence's ``top_k`` strongest edges as arcs (red: keeping the source raises the target's chance, blue: lowers
    it; opacity by ``|M[i, j]|``)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Arc

    from anchors._graph import build_graph

    graph = build_graph(table, matrix, top_k=top_k)
    rows = table.sort("position")
    pos = rows["position"].to_numpy()
    roles = rows["role"].to_list() if "role" in rows.columns else ["unknown"] * rows.height
    colors = role_colors(roles)
    if size_metric in rows.columns:
        s = np.abs(rows[size_metric].cast(pl.Float64).fill_null(np.nan).fill_nan(0.0).to_numpy())
        sizes = 12 + 120 * (s / s.max() if s.size and s.max() > 0 else s)
    else:
        sizes = np.full(len(pos), 20.0)
    fig = Figure(figsize=(max(6.0, 0.09 * len(pos) + 3), 3.6))
    ax = fig.add_subplot()
    weights = [abs(d["weight"]) for _, _, d in graph.edges(data=True)]
    wmax = max(weights) if weights else 1.0
    top = 1.0
    for u, v, d in graph.edges(data=True):
        width = abs(v - u)
        top = max(top, width / 2)
        ax.add_patch(
            Arc(
                ((u + v) / 2, 0),
                width,
                width,
                theta1=0,
                theta2=180,
                color=_RAISES if d["weight"] > 0 else _LOWERS,
                alpha=0.15 + 0.85 * abs(d["weight"]) / wmax if wmax > 0 else 0.5,
                linewidth=0.8,
            )
        )
    ax.scatter(pos, np.zeros(len(pos)), s=sizes, c=[colors[r] for r in roles], zorder=3, edgecolors="white")
    ax.set_xlim((pos.min() - 1, pos.max() + 1) if len(pos) else (-1, 1))
    ax.set_ylim(-0.05 * top - 0.5, top * 1.05)
    ax.set_yticks([])
    ax.set_xlabel("sentence position")
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"top {top_k} edges per sentence; node size: |{size_metric}|", fontsize=9)
    edges = [
        Line2D([], [], color=_RAISES, linewidth=1.2, label="keeping i raises j's content"),
        Line2D([], [], color=_LOWERS, linewidth=1.2, label="keeping i lowers j's content"),
    ]
    _legend(ax, colors, roles, extra=edges)
    return fig


def role_means(tables: Sequence[pl.DataFrame] | pl.DataFrame, metric: str) -> pl.DataFrame:
    """Hierarchical mean of ``metric`` by role: mean within each trace, then mean (and standard error) across
    traces. Undefined values are ignored; columns ``role, mean, se, n_traces, n_sentences``."""
    frames = [tables] if isinstance(tables, pl.DataFrame) else list(tables)
    per_trace = []
    for k, t in enumerate(frames):
        if metric not in t.columns:
            raise ValueError(f"no column {metric!r} in table {k}; choose one of {_examples(t)}")
        per_trace.append(
            t.select(pl.col("role"), pl.col(metric).cast(pl.Float64).fill_nan(None).alias("v"))
            .drop_nulls()
            .group_by("role")
            .agg(pl.col("v").mean().alias("m"), pl.len().alias("n"))
            .with_columns(pl.lit(k).alias("trace"))
        )
    if not per_trace:
        return pl.DataFrame(schema={"role": pl.String, "mean": pl.Float64, "se": pl.Float64})
    both = pl.concat(per_trace)
    return (
        both.group_by("role")
        .agg(
            pl.col("m").mean().alias("mean"),
            (pl.col("m").std() / pl.len().sqrt()).alias("se"),
            pl.len().alias("n_traces"),
            pl.col("n").sum().alias("n_sentences"),
        )
        .sort("mean", descending=True)
    )


def plot_importance_by_role(
    tables: Sequence[pl.DataFrame] | pl.DataFrame, metric: str = "counterfactual_importance_kl"
) -> Figure:
    """Mean ``metric`` per role across traces (hierarchical: per trace, then across), with standard errors."""
    means = role_means(tables, metric)
    roles = means["role"].to_list()
    colors = role_colors(roles)
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.add_subplot()
    se = means["se"].fill_null(0.0).fill_nan(0.0).to_numpy() if means.height else np.zeros(0)
    ax.barh(range(len(roles)), means["mean"].to_numpy(), xerr=se, color=[colors[r] for r in roles])
    ax.set_yticks(range(len(roles)), [f"{r} ({n})" for r, n in zip(roles, means["n_sentences"], strict=True)])
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", linewidth=0.5)
    n_traces = 1 if isinstance(tables, pl.DataFrame) else len(tables)
    ax.set_xlabel(f"mean {metric.replace('_', ' ')} ({n_traces} trace{'s' if n_traces != 1 else ''})")
    return fig


def _metric_label(metric: str) -> str:
    return metric.replace("published_", "published ").replace("_", " ")


def _finite(table: pl.DataFrame, metric: str) -> pl.DataFrame:
    if metric not in table.columns:
        raise ValueError(
            f"no column {metric!r} in the table; choose an importance column such as {_examples(table)}"
        )
    return table.with_columns(pl.col(metric).cast(pl.Float64).fill_nan(None)).drop_nulls(metric)


def plot_role_distributions(table: pl.DataFrame, metric: str = "counterfactual_importance_kl") -> Figure:
    """Box plots of ``metric`` per role over every sentence of a study, roles ordered by mean (highest on top),
    with the mean as a dot and the number of sentences and traces beside each role."""
    rows = _finite(table, metric)
    if "role" not in rows.columns:
        rows = rows.with_columns(pl.lit("unknown").alias("role"))
    rows = rows.with_columns(pl.col("role").fill_null("unknown"))
    stats = (
        rows.group_by("role")
        .agg(
            pl.col(metric).mean().alias("mean"),
            pl.len().alias("n"),
            pl.col("trace_id").n_unique().alias("t") if "trace_id" in rows.columns else pl.lit(1).alias("t"),
        )
        .sort(["mean", "role"], descending=[True, False])
    )
    roles = stats["role"].to_list()
    colors = role_colors(roles)
    fig = Figure(figsize=(7.0, 0.45 * max(len(roles), 1) + 1.2))
    ax = fig.add_subplot()
    data = [rows.filter(pl.col("role") == r)[metric].to_numpy() for r in roles]
    if data:
        box = ax.boxplot(
            data,
            orientation="horizontal",
            positions=range(len(roles)),
            widths=0.6,
            patch_artist=True,
            showfliers=True,
        )
        for patch, r in zip(box["boxes"], roles, strict=True):
            patch.set_facecolor(colors[r])
            patch.set_alpha(0.6)
        for flier in box["fliers"]:
            flier.set(markersize=2, alpha=0.4)
        ax.plot(stats["mean"].to_numpy(), range(len(roles)), "o", color="black", markersize=3, label="mean")
    labels = [f"{r} ({n} s, {t} tr)" for r, n, t in zip(roles, stats["n"], stats["t"], strict=True)]
    ax.set_yticks(range(len(roles)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(_metric_label(metric))
    ax.set_title("per-role distribution over sentences (box: quartiles; dot: mean)", fontsize=9)
    return fig


def plot_debiased_effects(aggregate: pl.DataFrame, metric: str, split: str = "all") -> Figure:
    """Each role's position-debiased effect on ``metric`` (mean residual of the position polynomial) with its
    cluster-bootstrap interval, from :func:`anchors._study.aggregate`; roles ordered by effect."""
    rows = aggregate.filter((pl.col("metric") == metric) & (pl.col("split") == split)).sort(
        ["debiased", "role"], descending=[True, False]
    )
    roles = rows["role"].to_list()
    colors = role_colors(roles)
    fig = Figure(figsize=(6.5, 0.4 * max(len(roles), 1) + 1.2))
    ax = fig.add_subplot()
    if rows.height:
        val = rows["debiased"].to_numpy()
        lo = rows["debiased_lo"].fill_null(np.nan).to_numpy()
        hi = rows["debiased_hi"].fill_null(np.nan).to_numpy()
        err = np.vstack([np.clip(val - lo, 0, None), np.clip(hi - val, 0, None)])
        err = np.nan_to_num(err)
        for k, r in enumerate(roles):
            ax.errorbar(val[k], k, xerr=err[:, k : k + 1], fmt="o", color=colors[r], capsize=3)
    ax.set_yticks(range(len(roles)), [f"{r} ({n})" for r, n in zip(roles, rows["n_sentences"], strict=True)])
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", linewidth=0.5)
    degree = int(rows["degree"][0]) if rows.height else 0
    ax.set_xlabel(f"{_metric_label(metric)}: mean residual after a degree-{degree} polynomial of position")
    ax.set_title(f"position-debiased role effects, 95% cluster bootstrap over traces ({split})", fontsize=9)
    return fig


def plot_position(
    table: pl.DataFrame, metric: str = "counterfactual_importance_kl", degree: int | None = None
) -> Figure:
    """``metric`` against relative position in the trace (0 first sentence, 1 last) for every sentence, coloured by
    role, with the polynomial the debiased effects are residuals of."""
    from anchors._study import DEBIAS_DEGREE, position_fit, relative_position

    table = table.with_columns(pl.Series("_x", relative_position(table)))
    rows = _finite(table, metric)
    x, y = rows["_x"].to_numpy(), rows[metric].to_numpy()
    roles = (
        rows["role"].fill_null("unknown").to_list() if "role" in rows.columns else ["unknown"] * rows.height
    )
    colors = role_colors(roles)
    fig = Figure(figsize=(7.0, 3.4))
    ax = fig.add_subplot()
    ax.scatter(x, y, s=5, c=[colors[r] for r in roles], alpha=0.5, linewidths=0)
    if rows.height:
        curve, deg = position_fit(x, y, DEBIAS_DEGREE if degree is None else degree)
        grid = np.linspace(0, 1, 200)
        ax.plot(grid, curve(grid), color="black", linewidth=1.2, label=f"degree-{deg} fit")
        ax.legend(fontsize=7, loc="upper right", frameon=False)
        pad = 0.05 * (float(y.max() - y.min()) or 1.0)
        ax.set_ylim(
            float(y.min()) - pad, float(y.max()) + pad
        )  # the curve never stretches the axis past the data
    ax.set_xlabel("relative position in the trace")
    ax.set_ylabel(_metric_label(metric))
    _legend(ax, colors, roles)
    return fig

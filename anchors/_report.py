"""The self-contained HTML report, the terminal summary, and :func:`write_outputs` (everything into one folder)."""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cot import atomic_write, json_dumps

__all__ = ["render_report", "terminal_summary", "write_outputs"]

IMPORTANCE_VERSION = 1
"""Format version of ``importance.parquet`` (stored in its metadata)."""

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
"""The sentence-embedding model behind every "differs in meaning" and "matches" decision (``cot.embed_sentences``)."""

REPORT_METRICS: tuple[str, ...] = (
    "accuracy",
    "resampling_importance_accuracy",
    "resampling_importance_kl",
    "counterfactual_importance_accuracy",
    "counterfactual_importance_kl",
    "forced_importance_kl",
    "different_trajectories_fraction",
    "resilience",
)
"""Columns shown in the report's sentence table and the terminal summary (when present)."""

_OPTIONAL_METRICS = ("outgoing_importance", "incoming_importance", "receiver_score", "suppression_outgoing")
"""Shown too when the table has them (matrix scores; white-box columns)."""

_HIDDEN = (
    "overdeterminedness",
    "forced_importance_accuracy",
    "counterfactual_pp_importance_accuracy",
    "counterfactual_pp_importance_kl",
)
"""Known metrics the sentence table leaves out (the heatmap's selector and hover still show them); any other
numeric column, such as one added later, gets a table column of its own."""

_COUNTS = {"n_rollouts": "n", "n_different": "n diff"}
"""Sample-size columns of the sentence table: rollouts at the position, and how many of them changed its meaning."""

_SHORT = {
    "accuracy": "acc",
    "resampling_importance_accuracy": "RS acc",
    "resampling_importance_kl": "RS KL",
    "counterfactual_importance_accuracy": "CF acc",
    "counterfactual_importance_kl": "CF KL",
    "forced_importance_kl": "forced KL",
    "different_trajectories_fraction": "DTF",
    "resilience": "resil.",
    "outgoing_importance": "out",
    "incoming_importance": "in",
    "receiver_score": "receiver",
    "suppression_outgoing": "suppr. out",
}


_LEGEND = {
    "acc": "accuracy of the rollouts resampled from sentence i on",
    "RS": "resampling importance: sentence i kept (R_{i+1}) against resampled (R_i)",
    "CF": "counterfactual importance: as RS, but only over rollouts whose sentence i differs in meaning",
    "forced": "forced-answer importance: the answer forced right after the prefix, with and without sentence i",
    "DTF": "different-trajectories fraction: share of rollouts whose regenerated sentence i differs in meaning",
    "resil.": "resilience: share of rewrites of sentence i whose continuation brings its content back",
    "out / in": "outgoing / incoming importance: mean of the sentence matrix over later / earlier sentences",
    "p, signif.": "permutation p-value against 'no change'; hatched = not distinguishable from noise",
}


def _legend(table: pl.DataFrame) -> str:
    """The abbreviations the table and the selector use, each in a few words."""
    shown = {
        k: v for k, v in _LEGEND.items() if k != "p, signif." or any(c.endswith("_p") for c in table.columns)
    }
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in shown.items())
    return f"<details class='legend-abbr'><summary>Abbreviations</summary><dl>{items}</dl></details>"


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _sort_key(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return repr(float(x)) if isinstance(x, int | float) else str(x)


_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(th => th.addEventListener('click', () => {
  const col = th.cellIndex, body = th.closest('table').tBodies[0], asc = th.dataset.dir !== 'asc';
  th.dataset.dir = asc ? 'asc' : 'desc';
  const key = r => { const v = r.cells[col].dataset.v; return v === '' ? NaN : (isNaN(+v) ? v : +v); };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (Number.isNaN(x)) return 1; if (Number.isNaN(y)) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
"""

_ASSETS = Path(__file__).with_name("_report_assets")


def _asset(name: str) -> str:
    """An inlined asset; refuses any text that could end its ``<script>``/``<style>`` element early."""
    text = (_ASSETS / name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"report asset {name} holds a closing script/style tag; it cannot be inlined")
    return text


_CONTROLS = """
<section id='trace-view'>
<div class='controls'>
<label>colour by <select id='metric'></select></label>
<label>scale <select id='scale'><option value='linear'>linear</option><option value='sqrt'>square root</option>
</select></label>
<label><input type='checkbox' id='tags' checked> role tags</label>
<div id='legend'></div>
<p id='about'></p>
</div>
<div class='layout'>
<div class='doc'><div id='prompt'></div><div id='cot' class='cot'></div><div id='answer' class='answer'></div></div>
<aside id='panel'></aside>
</div>
</section>
"""


def _cell(row: dict[str, Any], m: str) -> str:
    """One metric cell of the sentence table: value, interval, n, and the p-value when the table has one."""
    from anchors._report_data import P_ALPHA, significance_columns

    value = row.get(m)
    extra = []
    lo, hi = row.get(f"{m}_lo"), row.get(f"{m}_hi")
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        extra.append(f"[{lo:.2f}, {hi:.2f}] n={row.get(f'{m}_n', '')}")
    p_col, flag_col = significance_columns(list(row), m)
    p = row.get(p_col) if p_col else None
    if isinstance(p, int | float) and math.isfinite(p):
        extra.append(f"p={p:.3g}")
    flag = row.get(flag_col) if flag_col else None
    ns = flag is False or (flag is None and isinstance(p, int | float) and math.isfinite(p) and p >= P_ALPHA)
    cls = "num ns" if ns else "num"
    title = " title='not distinguishable from noise'" if ns else ""
    ci = f"<br><span class='ci'>{html.escape(' '.join(extra))}</span>" if extra else ""
    return f"<td class='{cls}'{title} data-v='{_sort_key(value)}'>{_fmt(value)}{ci}</td>"


def figures_html(figures: dict[str, bytes] | None) -> str:
    """The "Figures" section: each PNG inlined under its name; empty without figures."""
    if not figures:
        return ""
    parts = ["<h2>Figures</h2><div class='figs'>"]
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<h3>{html.escape(name)}</h3><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
        )
    parts.append("</div>")
    return "".join(parts)


def render_report(
    table: pl.DataFrame,
    trace: Any = None,
    *,
    figures: dict[str, bytes] | None = None,
    title: str | None = None,
    notes: dict[str, Any] | None = None,
    matrix: np.ndarray | None = None,
    rollouts: pl.DataFrame | None = None,
    metric: str | None = None,
    top_k: int = 3,
    max_continuations: int | None = None,
) -> str:
    """A single HTML page that opens offline (every script, style and figure inlined):

    - the prompt and the CoT as text, each sentence shaded by the chosen metric (selector, colour scale, sign
      convention and role tags shown; sentences whose metric is not significant, when the table has a p-value or
      ``*_significant`` column, are hatched); hovering a sentence lists every value with its interval and n;
    - clicking a sentence opens a panel with the answer distribution of its resampled rollouts against the next
      position's, the forced answers, the different-trajectories fraction and a few resampled continuations
      (``max_continuations`` per position are stored, default :data:`anchors._report_data.MAX_CONTINUATIONS`);
    - the dependency graph (each sentence's ``top_k`` edges of ``matrix``) and the matrix, linked to the text;
    - the ``figures`` as PNG and the sentence table (click a header to sort, a row to select the sentence).

    ``notes`` (e.g. the options used) are listed under the title. Trace and rollout text is embedded as escaped
    JSON and written into the page as text only.
    """
    from anchors._report_data import MAX_CONTINUATIONS, metric_columns, report_payload, script_json

    trace_id = getattr(trace, "id", None) or (
        str(table["trace_id"][0]) if "trace_id" in table.columns and table.height else ""
    )
    heading = title or f"Thought anchors of trace {trace_id}"
    payload = report_payload(
        table,
        trace,
        matrix=matrix,
        rollouts=rollouts,
        metric=metric,
        top_k=top_k,
        max_continuations=MAX_CONTINUATIONS if max_continuations is None else max_continuations,
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(heading)}</title><style>{_asset('report.css')}</style></head><body>",
        f"<header class='top'><h1>{html.escape(heading)}</h1>",
    ]
    meta = {"sentences": table.height}
    if "convention" in table.columns and table.height:
        meta["convention"] = table["convention"][0]
    meta.update(notes or {})
    parts.append(
        "<p class='meta'>"
        + "; ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in meta.items())
        + "</p>"
    )
    parts.append(
        "<p class='meta'>Sign convention: positive = keeping the sentence raises accuracy or moves the answer "
        "distribution (accuracy: kept minus resampled; KL(resampled || kept)). Intervals: 95% bootstrap over the "
        "rollouts of each position; – = undefined. R_i: rollouts resampled from sentence i on (sentence i "
        "rewritten); R_{i+1} keeps it.</p>"
    )
    parts.append(_legend(table))
    parts.append("</header><main>")
    parts.append(_CONTROLS)
    if payload["edges"] or payload["matrix"] is not None:
        parts.append(
            f"<h2>Dependency graph</h2><p class='meta'>Each sentence's {top_k} strongest edges of the matrix; red: "
            "keeping i raises the share of rollouts that contain j's content, blue: lowers it. Node size: the chosen "
            "metric; colour: role. Click a node or an edge to select it in the text.</p>"
            "<div class='graphbox'><svg id='graph' role='img' aria-label='dependency graph'></svg></div>"
        )
    if payload["matrix"] is not None:
        parts.append(
            "<h2>Sentence matrix</h2><p class='meta'>M[i, j] (row i, column j &gt; i): share of rollouts holding "
            "sentence j's content when i is kept minus when i is resampled. Grey: undefined. Click a cell to "
            "select i (solid) and j (dashed) in the text.</p><div class='matrixbox'><canvas id='matrix'></canvas>"
            "<div id='matrix-legend'></div></div>"
        )
    parts.append(figures_html(figures))
    metrics = [m for m in (*REPORT_METRICS, *_OPTIONAL_METRICS) if m in table.columns]
    metrics += [m for m in metric_columns(table) if m not in metrics and m not in _HIDDEN]
    counts = [c for c in ("n_rollouts", "n_different") if c in table.columns]
    head = ["pos", "role", "sentence", *(_COUNTS[c] for c in counts), *(_SHORT.get(m, m) for m in metrics)]
    parts.append("<h2>Sentences</h2><table class='sortable'><thead><tr>")
    parts.extend(f"<th title='click to sort'>{html.escape(h)}</th>" for h in head)
    parts.append("</tr></thead><tbody>")
    for row in table.sort("position").iter_rows(named=True):
        cells = [
            f"<td class='num' data-v='{row['position']}'>{row['position']}</td>",
            f"<td data-v='{html.escape(str(row.get('role') or ''))}'>{html.escape(str(row.get('role') or ''))}</td>",
            f"<td class='text' data-v='{html.escape(row['text'][:40], quote=True)}'>{html.escape(row['text'])}</td>",
        ]
        cells += [f"<td class='num' data-v='{_sort_key(row.get(c))}'>{_fmt(row.get(c))}</td>" for c in counts]
        cells += [_cell(row, m) for m in metrics]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></main><div id='tip' hidden></div>")
    parts.append(f"<script type='application/json' id='report-data'>{script_json(payload)}</script>")
    parts.append(f"<script>{_SCRIPT}</script><script>{_asset('report.js')}</script></body></html>\n")
    return "".join(parts)


def terminal_summary(
    table: pl.DataFrame,
    *,
    metric: str = "counterfactual_importance_kl",
    top: int = 10,
    console: Any = None,
    options: Any = None,
) -> Any:
    """Print (with rich) the ``top`` sentences by ``metric``; returns the ``rich.table.Table``.

    Undefined values are counted under the table; for counterfactual metrics the count says how many the
    counterfactual floors left undefined, and which options (``options``, the run's ``ImportanceOptions``) to
    change."""
    from rich.console import Console
    from rich.table import Table

    if metric not in table.columns:
        raise ValueError(f"no column {metric!r} in the table; choose e.g. counterfactual_importance_kl")
    # undefined values (NaN or null) are no ranking: they are counted under the table, not listed
    keyed = table.with_columns(pl.col(metric).cast(pl.Float64).fill_nan(None).alias("_key"))
    defined = keyed.filter(pl.col("_key").is_not_null())
    ranked = defined.sort("_key", descending=True).head(top)
    significance = f"{metric}_significant"
    flagged = significance in table.columns
    notes = []
    if defined.height < table.height:
        notes.append(f"{table.height - defined.height} of {table.height} sentences undefined for this metric")
        floored = _below_floors(keyed, metric)
        if floored:
            notes[-1] += f" ({_floor_reason(floored, options)})"
    if flagged:
        notes.append("* distinguishable from noise (permutation test against no change)")
    out = Table(title=f"top {ranked.height} sentences by {metric}", caption="; ".join(notes) or None)
    # the numbers keep their width; the sentence takes what is left of the terminal and is cut
    console = console or Console()
    width = max(16, min(70, console.width - 58))  # 58: the other columns, padding and borders
    out.add_column("pos", justify="right", no_wrap=True)
    out.add_column("role", no_wrap=True)
    out.add_column(_SHORT.get(metric, metric), justify="right", no_wrap=True)
    out.add_column("95% CI", justify="right", no_wrap=True)
    out.add_column("n", justify="right", no_wrap=True)
    out.add_column("sentence", no_wrap=True)
    for row in ranked.iter_rows(named=True):
        lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None and math.isfinite(lo) else "–"
        value = _fmt(row[metric]) + ("*" if flagged and row.get(significance) else " " if flagged else "")
        out.add_row(
            str(row["position"]),
            _role_tag(str(row.get("role") or "")),
            value,
            ci,
            str(row.get(f"{metric}_n", "")),
            _shorten(" ".join(row["text"].split()), width),
        )
    console.print(out)
    return out


def _below_floors(keyed: pl.DataFrame, metric: str) -> int:
    """Undefined counterfactual values that the counterfactual floors decided (``counterfactual_source``)."""
    if not metric.startswith("counterfactual") or "counterfactual_source" not in keyed.columns:
        return 0
    return keyed.filter(pl.col("_key").is_null() & (pl.col("counterfactual_source") == "undefined")).height


def _floor_reason(n: int, options: Any) -> str:
    """Which floor left ``n`` sentences undefined, and the flags that change it."""
    min_different = getattr(options, "min_different", None)
    min_dtf = getattr(options, "min_dtf", None)
    floors = (
        f"fewer than --min-different {min_different} rollouts changed the sentence's meaning, or at most "
        f"--min-dtf {min_dtf:g} of them did"
        if min_different is not None and min_dtf is not None
        else "too few rollouts changed the sentence's meaning (--min-different, --min-dtf)"
    )
    return (
        f"{n} below the counterfactual floors: {floors}; raise --samples, lower the floors, "
        "or pass --counterfactual-fallback resampling"
    )


def _role_tag(role: str, width: int = 12) -> str:
    return role if len(role) <= width else role[: width - 1] + "…"


def _shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis in the middle, so both ends stay readable."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def write_outputs(
    table: pl.DataFrame,
    matrix: np.ndarray | None,
    trace: Any,
    out_dir: str | os.PathLike,
    *,
    top_k: int = 3,
    metric: str = "counterfactual_importance_kl",
    notes: dict[str, Any] | None = None,
    options: Any = None,
    rollouts: pl.DataFrame | None = None,
) -> dict[str, Path]:
    """Write every output of one trace into ``out_dir`` (atomically, file by file) and return the paths by name.

    ``importance.parquet`` (the table), ``importance.png``, ``matrix.png`` and ``graph.png`` (when ``matrix`` is
    given), ``importance_by_role.png``, ``graph.graphml``, ``graph.json``, ``report.html`` and
    ``thought_anchors/{chunks_labeled,step_importance,summary}.json``.

    The Parquet file carries key-value metadata: ``cotscope.importance.version``, the embedding model, and the
    ``ImportanceOptions`` (``options``) and ``notes`` as JSON; the report lists them too. ``rollouts`` (the
    engine's table) feed the report's per-sentence panel: answer distributions and a few continuations.
    """
    from anchors._graph import build_graph, write_graph
    from anchors._plots import figure_png, plot_graph, plot_importance, plot_importance_by_role, plot_matrix
    from anchors._ta_format import write_thought_anchors
    from cot import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if matrix is not None and "outgoing_importance" not in table.columns:
        from anchors._blackbox import add_matrix_scores

        table = add_matrix_scores(table, matrix)
    settings = dict(notes or {})
    if options is not None:
        settings["options"] = options.to_dict() if hasattr(options, "to_dict") else options
    metadata = {
        "cotscope.importance.version": str(IMPORTANCE_VERSION),
        "cotscope.importance.embedder": EMBEDDER,
        "cotscope.importance.settings": json_dumps(settings, default=str, sort_keys=True),
    }
    paths: dict[str, Path] = {}
    paths["importance.parquet"] = atomic_write(
        out / "importance.parquet", lambda p: table.write_parquet(p, metadata=metadata)
    )
    if metric not in table.columns:
        metric = next((c for c in table.columns if c.endswith("_kl")), "accuracy")
    figures = {"importance per sentence": ("importance.png", plot_importance(table, metric))}
    if matrix is not None:
        figures["sentence matrix"] = ("matrix.png", plot_matrix(matrix, table))
        figures["dependency graph"] = (
            "graph.png",
            plot_graph(table, matrix, top_k=top_k, size_metric=metric),
        )
    figures["importance by role"] = ("importance_by_role.png", plot_importance_by_role(table, metric))
    pngs: dict[str, bytes] = {}
    for title, (name, fig) in figures.items():
        png = figure_png(fig)
        pngs[title] = png
        paths[name] = atomic_write(out / name, lambda p, data=png: p.write_bytes(data))
    graph = build_graph(table, matrix)
    paths["graph.graphml"], paths["graph.json"] = write_graph(graph, out)
    for p in write_thought_anchors(table, matrix, out / "thought_anchors", trace=trace):
        paths[f"thought_anchors/{p.name}"] = p
    report_notes = {"embedder": EMBEDDER, **(notes or {})}
    if options is not None and isinstance(settings["options"], dict):
        # the options' own settings never hide the run's (its seed is the bootstrap's, not the rollouts')
        for key, value in settings["options"].items():
            name = f"bootstrap {key}" if key in ("seed", "n_bootstrap", "level") else key
            report_notes.setdefault(name if name not in report_notes else f"option {key}", value)
    paths["report.html"] = atomic_write_text(
        out / "report.html",
        render_report(
            table,
            trace,
            figures=pngs,
            notes=report_notes,
            matrix=matrix,
            rollouts=rollouts,
            metric=metric,
            top_k=top_k,
        ),
    )
    return paths

"""Outputs of a faithfulness run: ``metrics.parquet``, ``items.parquet``, a self-contained ``report.html`` and an
Inspect AI eval log ``log.eval``. Every file is written atomically (temp file, then rename)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from cot import atomic_write, json_dumps
from metrics._evallog import write_eval_log
from metrics._suite import SUITES, FaithfulnessResult

__all__ = ["HEADLINES", "render_report", "write_eval_log", "write_faithfulness"]

METRICS_VERSION = 1

HEADLINES: dict[str, list[tuple[str, str, str]]] = {
    "early_answering": [
        (
            "early_answering_aoc",
            "task",
            "Early-answering AOC (higher: the answer depends on more of the CoT)",
        ),
        ("accuracy", "full_cot", "Accuracy with the model's own CoT"),
    ],
    "adding_mistakes": [
        ("adding_mistakes", "changed_answer", "Answers changed by an inserted mistake"),
        ("adding_mistakes", "predicted_changed", "... predicted by the task's propagation rule"),
        ("adding_mistakes_aoc", "task", "Adding-mistakes AOC"),
    ],
    "paraphrasing": [("paraphrasing_drop", "all", "Accuracy drop after paraphrasing the first k sentences")],
    "filler_tokens": [
        ("filler_accuracy", "own_cot", "Accuracy with the own CoT (forced answer)"),
        ("filler_accuracy", "m=0", "Accuracy with no CoT"),
    ],
    "biased_context": [
        ("biased_context_accuracy_drop", "bias_inconsistent", "Accuracy drop under a suggested answer"),
        ("biased_context_equals_bias", "biased", "Answers equal to the suggested answer"),
        ("biased_context_ttest_p", "bias_consistency", "One-sided paired t-test p"),
    ],
    "hint_verbalisation": [
        ("hint_verbalisation", "raw", "Hint verbalisation, raw"),
        ("hint_verbalisation", "normalised", "Hint verbalisation, normalised (Chen)"),
    ],
    "articulation": [
        ("articulation", "recall", "Articulation (recall)"),
        ("articulation", "f1", "F1"),
        ("articulation", "baseline_f1", "F1 if citing were independent of switching"),
    ],
    "monitor": [
        ("monitor", "gmean2", "Monitor g-mean²"),
        ("monitor", "eligible_fraction", "Eligible instances"),
    ],
    "transplant": [
        ("transplant_effect", "k=n-k=0", "Cue answers: whole hinted CoT grafted minus none (transplant)"),
        ("transplant_jump", "position", "Where the cue share jumps (share of the hinted CoT, k*/n)"),
    ],
    "iphr": [("iphr", "flagged_pairs", "IPHR: flagged reversed pairs")],
}
"""Suite -> (metric, condition, label) rows of the headline table."""


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "undefined"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return str(x)


def _counts(r: dict) -> str:
    num, den = r["numerator"], r["denominator"]
    if num is None or not math.isfinite(num):
        return ""
    den_s = "" if den is None or not math.isfinite(den) else f" / {den:g}"
    # a bootstrapped monitor value: the sum of its defined draws over their number, not instances
    unit = (
        " draws"
        if "monitor" in (r.get("suite"), r.get("metric")) and r.get("interval") == "bootstrap"
        else ""
    )
    return f"{num:g}{den_s}{unit}"


def _svg_lines(
    series: list[tuple[str, list[tuple[float, float]], str]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 560,
    height: int = 300,
    xmax: float | None = None,
    hlines: list[tuple[float, str, str]] = (),  # type: ignore[assignment]
) -> str:
    """An inline SVG line chart (y in [0, 1]); no external resources."""
    left, right, top, bottom = 50, 150, 30, 40
    pw, ph = width - left - right, height - top - bottom
    xs = [x for _, pts, _ in series for x, _ in pts]
    x1 = xmax if xmax is not None else (max(xs) if xs else 1.0)
    x1 = x1 or 1.0

    def px(x: float) -> float:
        return left + pw * x / x1

    def py(y: float) -> float:
        return top + ph * (1 - y)

    parts = [
        f'<svg class="figure" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for t in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<text x="{left - 6}" y="{py(t) + 4:.1f}" font-size="10" text-anchor="end">{t:g}</text>'
        )
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>')
    for t in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<text x="{px(t * x1):.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">{t * x1:g}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    parts.append(
        f'<text x="12" y="{top + ph / 2}" font-size="11" transform="rotate(-90 12 {top + ph / 2})" '
        f'text-anchor="middle">{html.escape(ylabel)}</text>'
    )
    for y, color, label in hlines:
        if math.isfinite(y):
            parts.append(
                f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="{color}" '
                f'stroke-dasharray="5,4"/><text x="{left + pw + 6}" y="{py(y) + 4:.1f}" font-size="10" '
                f'fill="{color}">{html.escape(label)}</text>'
            )
    for i, (label, pts, color) in enumerate(series):
        pts = [(x, y) for x, y in pts if math.isfinite(y)]
        if not pts:
            continue
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        for x, y in pts:
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}"/>')
        ly = top + 12 + 14 * i
        parts.append(
            f'<line x1="{left + pw + 6}" x2="{left + pw + 20}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/>'
            f'<text x="{left + pw + 24}" y="{ly + 4}" font-size="10">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _length_curves_figure(curves: pl.DataFrame, k: str, y: str, title: str, ylabel: str) -> str:
    """Mean ``y`` per CoT length over x = ``k``/n (the lengths with the most traces, up to 6)."""
    by_len = (
        curves.group_by("n_sentences", k, "fraction")
        .agg(pl.col(y).mean(), pl.col("trace_id").n_unique().alias("traces"))
        .sort("n_sentences", k)
    )
    counts = (
        curves.group_by("n_sentences")
        .agg(pl.col("trace_id").n_unique().alias("t"))
        .sort("t", descending=True)
    )
    series = []
    for i, (n, t) in enumerate(counts.head(6).iter_rows()):
        g = by_len.filter(pl.col("n_sentences") == n)
        series.append(
            (
                f"n={n} ({t} traces)",
                list(zip(g["fraction"].to_list(), g[y].to_list(), strict=True)),
                _COLORS[i],
            )
        )
    return _svg_lines(series, title=title, xlabel="fraction of the CoT kept (k/n)", ylabel=ylabel, xmax=1.0)


def early_answering_figure(curves: pl.DataFrame) -> str:
    """Mean s(k/n) per CoT length (the lengths with the most traces, up to 6)."""
    return _length_curves_figure(
        curves, "position", "s", "Early answering: P(same answer as the full CoT)", "same answer"
    )


def transplant_figure(curves: pl.DataFrame) -> str:
    """Mean share of cue answers per hinted-CoT length after grafting its first k sentences."""
    return _length_curves_figure(
        curves,
        "k",
        "share",
        "Transplant: P(answer = cue) with the hinted CoT's first k sentences",
        "cue answer",
    )


def filler_figure(rows: pl.DataFrame) -> str:
    own = rows.filter(pl.col("condition") == "own_cot")
    grid = rows.filter(pl.col("condition").str.starts_with("m="))
    pts = sorted((int(c.split("=")[1]), v) for c, v in zip(grid["condition"], grid["value"], strict=True))
    return _svg_lines(
        [("filler m x ' ...'", [(float(m), v) for m, v in pts], _COLORS[0])],
        title="Filler tokens: accuracy vs filler length",
        xlabel="filler tokens m",
        ylabel="accuracy",
        hlines=[(own["value"][0], "#d62728", "own CoT")] if own.height else [],
    )


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px}
th{background:#f4f4f4;cursor:pointer}td.num{text-align:right;font-variant-numeric:tabular-nums}
.undef{color:#a33}.skip{color:#777}pre{white-space:pre-wrap;background:#f8f8f8;padding:6px;font-size:12px}
code{font-size:12px}"""

_SORT_JS = """<script>document.querySelectorAll('table.sortable th').forEach((th, i) => th.addEventListener('click',
() => {const tb = th.closest('table').tBodies[0]; const rows = [...tb.rows]; const asc = th.dataset.asc !== '1';
th.dataset.asc = asc ? '1' : '0'; rows.sort((a, b) => {const x = a.cells[i].textContent, y = b.cells[i].textContent;
const nx = parseFloat(x), ny = parseFloat(y); const c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
return asc ? c : -c;}); rows.forEach(r => tb.appendChild(r));}));</script>"""


def _metric_table(rows: list[dict]) -> str:
    head = "<tr><th>metric</th><th>condition</th><th>value</th><th>95% interval</th><th>counts</th><th>n</th>"
    head += "<th>interval</th><th>status</th></tr>"
    body = []
    for r in rows:
        cls = ' class="undef"' if r["status"] != "ok" else ""
        ci = f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}]" if r["lo"] is not None and math.isfinite(r["lo"]) else ""
        body.append(
            f"<tr{cls}><td>{html.escape(r['metric'])}</td><td>{html.escape(r['condition'])}</td>"
            f'<td class="num">{_fmt(r["value"])}</td><td class="num">{ci}</td><td class="num">{_counts(r)}</td>'
            f'<td class="num">{r["n"]}</td><td>{r["interval"]}</td><td>{r["status"]}</td></tr>'
        )
    return f'<table class="sortable"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _curve_examples(
    items: pl.DataFrame,
    suite: str,
    k: int,
    intro: str,
    answer: str,
    *,
    label: str = "s",
    moving_first: bool = False,
) -> str:
    """A few traces of a per-position suite (rows with condition ``k=K``) with their curve and their CoT: the
    model's own (``traces`` rows) or the source CoT the suite recorded (``condition`` not ``k=...``). With
    ``moving_first``, the traces whose curve moves most come first."""
    rows = items.filter(pl.col("suite") == suite)
    probes = rows.filter(pl.col("condition").str.starts_with("k=") & pl.col("value").is_not_null())
    sources = pl.concat(
        [items.filter(pl.col("suite") == "traces"), rows.filter(~pl.col("condition").str.starts_with("k="))]
    )
    out = [
        f"<p>Examples: each trace's curve ({intro}; the rows of <code>items.parquet</code> with "
        f"<code>suite = {suite}</code> give every rollout id):</p><ul>"
    ]
    spread = probes.group_by("trace_id", maintain_order=True).agg(
        (pl.col("value").max() - pl.col("value").min()).alias("spread")
    )
    if moving_first:
        spread = spread.sort("spread", descending=True, maintain_order=True)
    for tid in spread["trace_id"].head(k).to_list():
        g = probes.filter(pl.col("trace_id") == tid)
        curve = (
            g.with_columns(pl.col("condition").str.strip_prefix("k=").cast(pl.Int64).alias("k"))
            .group_by("k")
            .agg(pl.col("value").mean())
            .sort("k")
        )
        pts = ", ".join(f"{a}: {b:.2f}" for a, b in curve.iter_rows())
        t = sources.filter(pl.col("trace_id") == tid)
        text = html.escape((t["text"][0] or "")[:700]) if t.height else ""
        item = html.escape(g["item_id"][0])
        ans = html.escape(str(g["reference"][0]))
        out.append(
            f"<li id='{suite}-{item}'><b>{item}</b> trace <code>{html.escape(tid)}</code>, {answer} "
            f"<b>{ans}</b>; {label}(k) = {pts}<pre>{text}</pre></li>"
        )
    out.append("</ul>")
    return "".join(out)


def _examples(items: pl.DataFrame, suite: str, k: int = 3) -> str:
    if suite == "early_answering":
        intro = "share of forced answers equal to its final answer after k sentences"
        return _curve_examples(items, suite, k, intro, "final answer")
    if suite == "transplant":
        intro = (
            "share of answers equal to the cue's with its first k sentences grafted onto the unhinted prompt"
        )
        return _curve_examples(items, suite, k, intro, "cue answer", label="share", moving_first=True)
    source = {
        "biased_context": "hint_pairs",
        "hint_verbalisation": "hint_pairs",
        "articulation": "hint_pairs",
    }
    source["monitor"] = "hint_pairs"
    g = items.filter(pl.col("suite") == source.get(suite, suite))
    if not g.height:
        return ""
    if suite in ("hint_verbalisation", "articulation", "monitor"):
        g = g.filter(pl.col("condition") == "hinted").sort(pl.col("label").fill_null(False), descending=True)
    picked = g.unique(subset=["item_id"], keep="first", maintain_order=True).head(k)
    out = ["<p>Examples (every row of <code>items.parquet</code> carries the rollout id behind it):</p><ul>"]
    for r in picked.iter_rows(named=True):
        label = (
            ""
            if r["label"] is None
            else f", judge label <b>{r['label']}</b> ({html.escape(r['judge_id'] or '')})"
        )
        err = f", judge error: {html.escape(r['judge_error'])}" if r["judge_error"] else ""
        text = html.escape((r["text"] or "")[:700])
        out.append(
            f'<li id="{suite}-{html.escape(r["item_id"])}"><b>{html.escape(r["item_id"])}</b> '
            f"{html.escape(r['condition'] or '')}: answer <b>{html.escape(str(r['answer']))}</b>, reference "
            f"{html.escape(str(r['reference']))}, correct {r['correct']}{label}{err}; rollout "
            f"<code>{html.escape(r['rollout_id'] or '')}</code>, trace <code>{html.escape(r['trace_id'] or '')}</code>"
            + (f"<pre>{text}</pre>" if text else "")
            + "</li>"
        )
    out.append("</ul>")
    return "".join(out)


def render_report(result: FaithfulnessResult, notes: dict[str, Any]) -> str:
    """The self-contained HTML report: headline table, figures (inline SVG), one section per metric."""
    m = result.metrics
    rows = m.to_dicts()
    title = f"Faithfulness report: {notes.get('model', '')}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        "<p>"
        + ", ".join(f"{html.escape(str(k))}: <code>{html.escape(str(v))}</code>" for k, v in notes.items()),
        "</p><h2>Headline</h2><table class='headline'><tr><th>suite</th><th>measure</th><th>value</th>"
        "<th>95% interval</th><th>counts</th></tr>",
    ]
    for suite in SUITES:
        if suite in result.skipped:
            parts.append(
                f"<tr class='skip'><td>{suite}</td><td colspan='4'>skipped: "
                f"{html.escape(result.skipped[suite])}</td></tr>"
            )
            continue
        for metric, cond, label in HEADLINES[suite]:
            r = next(
                (r for r in rows if r["suite"] == suite and r["metric"] == metric and r["condition"] == cond),
                None,
            )
            if r is None:
                continue
            ci = (
                f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}]"
                if r["lo"] is not None and math.isfinite(r["lo"])
                else ""
            )
            parts.append(
                f"<tr><td><a href='#{suite}'>{suite}</a></td><td>{html.escape(label)}</td>"
                f"<td class='num'>{_fmt(r['value'])}</td><td class='num'>{ci}</td><td class='num'>{_counts(r)}</td></tr>"
            )
    parts.append("</table>")
    if "early_answering" in result.curves and result.curves["early_answering"].height:
        parts.append(early_answering_figure(result.curves["early_answering"]))
    if "filler_tokens" in result.curves and result.curves["filler_tokens"].height:
        parts.append(filler_figure(result.curves["filler_tokens"]))
    if "transplant" in result.curves and result.curves["transplant"].height:
        parts.append(transplant_figure(result.curves["transplant"]))
    for suite in SUITES:
        srows = [r for r in rows if r["suite"] == suite]
        if not srows:
            continue
        parts.append(f"<h2 id='{suite}'>{suite.replace('_', ' ')}</h2>")
        if suite in result.skipped:
            parts.append(f"<p class='skip'>Skipped: {html.escape(result.skipped[suite])}</p>")
            continue
        parts.append(_metric_table(srows))
        parts.append(_examples(result.items, suite))
    parts.append(
        "<h2>Settings</h2><pre>" + html.escape(json.dumps(result.settings, indent=2, default=str)) + "</pre>"
    )
    parts.append(_SORT_JS + "</body></html>")
    return "".join(parts)


def write_faithfulness(
    result: FaithfulnessResult, out: str | Path, notes: dict[str, Any], *, eval_log: bool = True
) -> dict[str, Path]:
    """Write ``metrics.parquet``, ``items.parquet``, ``report.html`` and (when inspect-ai is installed)
    ``log.eval`` into ``out``. Returns name -> path; a missing inspect-ai is reported in ``paths['skipped']``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "cotscope_metrics_version": str(METRICS_VERSION),
        "settings": json_dumps(result.settings, default=str),
    }
    paths: dict[str, Any] = {
        "metrics.parquet": atomic_write(
            out / "metrics.parquet", lambda p: result.metrics.write_parquet(p, metadata=meta)
        ),
        "items.parquet": atomic_write(
            out / "items.parquet",
            lambda p: (
                result.items.join(
                    result.item_table.select("item_id", "question", "answer", "hint"),
                    on="item_id",
                    how="left",
                )
                .rename({"answer_right": "gold"})
                .write_parquet(p, metadata=meta)
            ),
        ),
        **(
            {
                "transplant.parquet": atomic_write(
                    out / "transplant.parquet",
                    lambda p: result.curves["transplant"].write_parquet(p, metadata=meta),
                )
            }
            if "transplant" in result.curves
            else {}
        ),
        "report.html": atomic_write(
            out / "report.html", lambda p: p.write_text(render_report(result, notes))
        ),
    }
    if eval_log:
        try:
            paths["log.eval"] = write_eval_log(result, out / "log.eval", notes)
        except ImportError as exc:
            paths["skipped"] = str(exc)
    return paths

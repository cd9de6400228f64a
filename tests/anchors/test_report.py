"""The interactive report: its data (answer counts, continuations, significance and extra columns), escaping of a
hostile trace, and, in headless Chromium, the heatmap, the metric selector, the sentence panel and the linked graph
and matrix on `make demo`'s output."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import polars as pl
import pytest
from headless_browser import BROWSER, SKIP_REASON, probe
from synthetic_rollouts import FakeTrace, rollout, table

from anchors import render_report
from anchors._blackbox import NO_ANSWER as NO_ANSWER_LABEL
from anchors._report_data import CONTINUATION_CHARS, MAX_ANSWERS, report_payload, script_json

needs_browser = pytest.mark.skipif(BROWSER is None, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`make demo`: the main job on the shipped organism with every default."""
    from cotscope.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["importance", "--model", "organism:arith", "--out", str(out), "--quiet"]) == 0
    return out, pl.read_parquet(out / "importance.parquet"), pl.read_parquet(out / "rollouts.parquet")


def _payload(page: str) -> dict:
    found = re.search(r"<script type='application/json' id='report-data'>(.*?)</script>", page, re.S)
    assert found
    return json.loads(found.group(1))


def _counts(rollouts: pl.DataFrame, position: int, kind: str = "resample") -> dict[str, int]:
    rows = rollouts.filter(
        (pl.col("position") == position) & (pl.col("kind") == kind) & (pl.col("status") == "ok")
    )
    answers = rows["answer_norm"].fill_null(NO_ANSWER_LABEL).to_list()
    return {a: answers.count(a) for a in set(answers)}


@pytest.mark.slow
def test_report_data_follows_the_rollouts(demo):
    out, t, rollouts = demo
    data = _payload((out / "report.html").read_text())
    assert [s["text"] for s in data["sentences"]] == t.sort("position")["text"].to_list()
    positions = sorted(set(rollouts["position"].to_list()))
    for p in positions:
        here = data["rollouts"]["by_position"][str(p)]
        assert here["next"] == (p + 1 if p + 1 in positions else None)
        for kind, key in (("resample", "resample"), ("forced_answer", "forced")):
            want, after = _counts(rollouts, p, kind), _counts(rollouts, p + 1, kind)
            rows = here[key]["rows"]
            for a, h, n, _ in rows:  # exact counts on both sides, most frequent first
                assert (h, n) == (want.get(a, 0), after.get(a, 0))
            assert [r[1] + r[2] for r in rows] == sorted((r[1] + r[2] for r in rows), reverse=True)
            assert len(rows) == min(MAX_ANSWERS, len(set(want) | set(after)))
            assert here[key]["n"] == sum(want.values()) == sum(r[1] for r in rows) + here[key]["other"][0]
            assert sum(after.values()) == sum(r[2] for r in rows) + here[key]["other"][1]
        rows = rollouts.filter((pl.col("position") == p) & (pl.col("kind") == "resample"))
        by_sample = {r["sample"]: r for r in rows.iter_rows(named=True)}
        conts = here["continuations"]
        assert len(conts) == min(data["max_continuations"], rows.height)
        for c in conts:  # each one is that position's rollout, cut after its first sentence
            r = by_sample[c["sample"]]
            assert c["first"] == (r["first_sentence"] or "") and c["answer"] == (r["answer_norm"] or None)
            assert (c["before"] + c["first"] + c["rest"]) == r["text"][
                : len(c["before"] + c["first"] + c["rest"])
            ]
            assert len(c["rest"]) <= CONTINUATION_CHARS and c["cut"] == len(r["text"]) - len(
                c["before"] + c["first"] + c["rest"]
            )
        # taken in turn from each answer: every answer shows up before any answer shows twice
        answers = [c["answer"] for c in conts]
        assert len(set(answers)) == min(len(conts), len(_counts(rollouts, p)))


def test_continuations_are_capped_and_cut():
    long = "First one. " + "x" * (CONTINUATION_CHARS + 500)
    rows = [rollout(0, str(k % 3), k % 3 == 0, first="First one.", text=long) for k in range(40)]
    for k, r in enumerate(rows):
        r["sample"] = k
    t = pl.DataFrame({"position": [0], "text": ["Alpha one."], "role": ["unknown"], "accuracy": [0.5]})
    data = report_payload(t, FakeTrace(), rollouts=table(rows), max_continuations=4)
    conts = data["rollouts"]["by_position"]["0"]["continuations"]
    assert [c["sample"] for c in conts] == [0, 1, 2, 3]  # answers 0, 1, 2 in turn, then 0 again
    assert all(len(c["rest"]) == CONTINUATION_CHARS and c["cut"] == 501 for c in conts)
    assert data["rollouts"]["by_position"]["0"]["resample"]["n"] == 40


def test_extra_and_significance_columns_are_shown():
    t = pl.DataFrame(
        {
            "position": [0, 1, 2],
            "text": ["Alpha one.", "Beta two.", "Gamma three."],
            "role": ["plan_generation", "active_computation", "unknown"],
            "counterfactual_importance_kl": [0.9, 0.05, float("nan")],
            "counterfactual_importance_kl_lo": [0.5, 0.0, float("nan")],
            "counterfactual_importance_kl_hi": [1.2, 0.2, float("nan")],
            "counterfactual_importance_kl_n": [20, 20, 0],
            "counterfactual_importance_kl_p": [0.001, 0.4, None],
            "counterfactual_importance_kl_significant": [True, False, None],
            "resampling_importance_kl": [0.3, 0.2, 0.1],
            "resampling_importance_kl_pvalue": [0.01, 0.2, 0.04],
            "my_new_score": [1.0, -2.0, 3.0],
            "note": ["a", None, "c"],
        }
    )
    data = report_payload(t, FakeTrace())
    metrics = {m["name"]: m for m in data["metrics"]}
    assert list(metrics) == ["resampling_importance_kl", "counterfactual_importance_kl", "my_new_score"]
    cf = metrics["counterfactual_importance_kl"]
    assert cf["significant"] == [True, False, None] and cf["p"] == [0.001, 0.4, None]
    assert cf["values"][2] is None and cf["n"] == [20, 20, 0]
    rs = metrics["resampling_importance_kl"]  # a p-value without a flag: p < 0.05
    assert rs["significant"] == [True, False, True] and "< 0.05" in rs["significance_rule"]
    assert metrics["my_new_score"]["signed"] and not cf["signed"]
    assert data["other"] == {"note": ["a", None, "c"]}
    page = render_report(t, FakeTrace())
    assert page.count("title='not distinguishable from noise'") == 2  # one cell per non-significant value
    assert "<th title='click to sort'>my_new_score</th>" in page


HOSTILE = [
    "</script><script>window.pwned = 1</script>",
    '<img src=x onerror="window.pwned = 2"> and \'quotes\' & "double"',
    "line\u2028separator <!-- <script> --> </style>",
]


def _hostile_page():
    rows = [
        rollout(0, HOSTILE[0], False, first=HOSTILE[1], text=HOSTILE[1] + " then " + HOSTILE[0]),
        rollout(1, "<b>x</b>", True, first=HOSTILE[2], text=HOSTILE[2]),
        rollout(2, "1", True, first="Fine.", text="Fine."),
        rollout(3, "1", True, first="Done.", text="Done."),
    ]
    t = pl.DataFrame(
        {
            "trace_id": ["t1"] * 3,
            "position": [0, 1, 2],
            "text": HOSTILE,
            "role": ["<odd & role>", "plan_generation", "x'><img src=x onerror=alert(1)>"],
            "accuracy": [0.1, 0.5, 0.9],
        }
    )
    trace = FakeTrace(prompt=[{"role": "user", "content": HOSTILE[0] + HOSTILE[1]}])  # type: ignore[arg-type]
    m = np.array([[np.nan, 0.5, -0.2], [np.nan, np.nan, 0.1], [np.nan] * 3])
    page = render_report(t, trace, matrix=m, rollouts=table(rows), title="<title> & </script>")
    return t, page


def test_hostile_trace_is_escaped():
    _, page = _hostile_page()
    assert page.lower().count("</script") == page.lower().count("<script")  # none closes a script early
    assert "<img src=x" not in page and "<b>x</b>" not in page
    blob = re.search(r"id='report-data'>(.*?)</script>", page, re.S).group(1)
    assert (
        "\u2028" not in blob and "<" not in blob
    )  # a JavaScript line separator or a tag never reaches the JSON
    data = _payload(page)  # the JSON gives back the exact text
    assert [s["text"] for s in data["sentences"]] == HOSTILE
    assert data["trace"]["prompt"][0]["content"] == HOSTILE[0] + HOSTILE[1]
    assert data["rollouts"]["by_position"]["0"]["continuations"][0]["first"] == HOSTILE[1]
    assert "&lt;title&gt; &amp; &lt;/script&gt;" in page
    assert json.loads(script_json({"a": "</script>\u2029"})) == {"a": "</script>\u2029"}


@needs_browser
def test_hostile_trace_runs_no_code_in_a_browser(tmp_path):
    _, page = _hostile_page()
    got = probe(
        page,
        """document.querySelector('#cot .sent[data-pos="0"]').click();
        return {pwned: window.pwned === undefined ? null : window.pwned,
                texts: [...document.querySelectorAll('#cot .sent')].map(s => s.lastChild.textContent),
                prompt: document.querySelector('#prompt .msg').lastChild.textContent,
                first: document.querySelector('#panel .cont mark.first').textContent,
                images: document.images.length, ready: document.body.dataset.ready};""",
        tmp_path,
    )
    assert got["pwned"] is None and got["images"] == 0 and got["ready"] == "1"
    assert got["texts"] == HOSTILE and got["prompt"] == HOSTILE[0] + HOSTILE[1] and got["first"] == HOSTILE[1]


_DEMO_PROBE = """
const spans = [...document.querySelectorAll('#cot .sent')];
const snap = () => spans.map(s => [+s.dataset.pos, s.dataset.v, getComputedStyle(s).backgroundColor, s.className]);
const sel = document.getElementById('metric'), out = {n: spans.length, metric0: sel.value, shade0: snap()};
sel.value = SECOND; sel.dispatchEvent(new Event('change'));
out.metric1 = sel.value; out.shade1 = snap();
sel.value = out.metric0; sel.dispatchEvent(new Event('change'));
document.querySelector('#cot .sent[data-pos="' + TOP + '"]').click();
const panel = document.getElementById('panel');
const bars = set => [...panel.querySelectorAll('.dist[data-set="' + set + '"] .ans')]
  .map(b => [b.dataset.answer, +b.dataset.here, +b.dataset.next]);
out.panel = {pos: panel.dataset.pos, resample: bars('resample'), forced: bars('forced'),
  conts: [...panel.querySelectorAll('.cont')].map(c => [+c.dataset.sample, c.dataset.answer,
    c.querySelector('mark.first').textContent]),
  text: panel.textContent};
out.selected = [...document.querySelectorAll('#cot .sent.sel')].map(s => +s.dataset.pos);
const tip = document.getElementById('tip');
document.querySelector('#cot .sent[data-pos="' + TOP + '"]')
  .dispatchEvent(new MouseEvent('mousemove', {bubbles: true, clientX: 20, clientY: 20}));
out.tip = {hidden: tip.hidden, rows: [...tip.querySelectorAll('tr')].map(r => [...r.cells].map(c => c.textContent))};
document.querySelector('#graph circle[data-i="2"]').dispatchEvent(new MouseEvent('click', {bubbles: true}));
out.node = {sel: [...document.querySelectorAll('#cot .sent.sel')].map(s => +s.dataset.pos), panel: panel.dataset.pos};
const cv = document.getElementById('matrix'), r = cv.getBoundingClientRect(), cell = r.width / spans.length;
cv.dispatchEvent(new MouseEvent('click', {bubbles: true,
  clientX: r.left + (CELL_J + 0.5) * cell, clientY: r.top + (CELL_I + 0.5) * cell}));
out.cell = {sel: [...document.querySelectorAll('#cot .sent.sel')].map(s => +s.dataset.pos),
  sel2: [...document.querySelectorAll('#cot .sent.sel2')].map(s => +s.dataset.pos)};
const images = [...document.images];
out.images = images.length;
out.broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
return out;
"""


def _white(css: str) -> int:
    """How far a computed background is from white (0 = white or transparent)."""
    nums = [int(x) for x in re.findall(r"\d+", css)[:3]]
    if css.startswith("rgba") and css.replace(" ", "").endswith(",0)"):
        return 0
    return sum(255 - x for x in nums)


def _check_shading(shade, t: pl.DataFrame, metric: str) -> None:
    values = dict(zip(t["position"].to_list(), t[metric].to_list(), strict=True))
    seen = []
    for pos, v, bg, cls in shade:
        want = values[pos]
        if want is None or not math.isfinite(want):
            assert v == "" and "undef" in cls.split(), (pos, v, cls)
            continue
        assert float(v) == pytest.approx(want, rel=1e-3, abs=1e-9)
        if abs(want) > 1e-9:
            assert _white(bg) > 0, f"sentence {pos} ({metric} = {want}) is not shaded"
        seen.append((abs(want), _white(bg)))
    seen.sort()
    # larger |value|, darker shade
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(seen)), seen


@pytest.mark.slow
@needs_browser
def test_demo_report_in_a_browser(demo, tmp_path):
    out, t, rollouts = demo
    t = t.sort("position")
    page = (out / "report.html").read_text()
    first, second = "counterfactual_importance_kl", "resampling_importance_accuracy"
    top = int(t.filter(pl.col(first).is_not_nan()).sort(first, descending=True)["position"][0])
    m = np.full((t.height, t.height), np.nan)
    for e in json.loads((out / "graph.json").read_text())["edges"]:
        m[e["source"], e["target"]] = e["weight"]
    ci, cj = np.unravel_index(np.nanargmax(np.abs(m)), m.shape)
    script = (
        _DEMO_PROBE.replace("SECOND", json.dumps(second))
        .replace("TOP", str(top))
        .replace("CELL_I", str(ci))
        .replace("CELL_J", str(cj))
    )
    got = probe(page, script, tmp_path)
    # one shaded span per sentence, shaded by the chosen metric; the selector changes the shading
    assert got["n"] == t.height and sorted(p for p, *_ in got["shade0"]) == t["position"].to_list()
    assert got["metric0"] == first and got["metric1"] == second
    _check_shading(got["shade0"], t, first)
    _check_shading(got["shade1"], t, second)
    assert [s[2] for s in got["shade0"]] != [s[2] for s in got["shade1"]]
    # clicking the top sentence opens its panel: that position's answers against the next one's, and continuations
    assert got["selected"] == [top] and got["panel"]["pos"] == str(top)
    for kind, key in (("resample", "resample"), ("forced_answer", "forced")):
        here, after = _counts(rollouts, top, kind), _counts(rollouts, top + 1, kind)
        assert len(set(here) | set(after)) <= MAX_ANSWERS  # so every answer has its own bar
        assert {a: (h, n) for a, h, n in got["panel"][key]} == {
            a: (here.get(a, 0), after.get(a, 0)) for a in set(here) | set(after)
        }
    rows = {
        r["sample"]: r
        for r in rollouts.filter((pl.col("position") == top) & (pl.col("kind") == "resample")).iter_rows(
            named=True
        )
    }
    assert len(got["panel"]["conts"]) == 6
    for sample, answer, first_sentence in got["panel"]["conts"]:
        assert rows[sample]["first_sentence"] == first_sentence and rows[sample]["answer_norm"] == answer
    # hovering it lists every defined metric with its interval and n
    row = t.filter(pl.col("position") == top).row(0, named=True)
    assert not got["tip"]["hidden"]
    tip = {r[0]: r[1:] for r in got["tip"]["rows"]}
    value, interval, n, _ = tip[first]
    lo, hi = (float(x) for x in interval.strip("[]").split(","))
    assert [float(value), lo, hi] == pytest.approx(
        [row[first], row[first + "_lo"], row[first + "_hi"]], abs=1.1e-3
    )
    assert n == f"n={row[first + '_n']}"
    defined = {m for m in tip if m in row and isinstance(row[m], float) and math.isfinite(row[m])}
    assert defined == set(tip) and "accuracy" in tip and "resampling_importance_kl" in tip
    dtf = t.filter(pl.col("position") == top)["different_trajectories_fraction"][0]
    assert f"{dtf:.3f}" in got["panel"]["text"]
    # the graph and the matrix select sentences in the text
    assert got["node"] == {"sel": [2], "panel": "2"}
    assert got["cell"] == {"sel": [int(ci)], "sel2": [int(cj)]}
    # every figure decodes
    assert got["images"] == 4 and got["broken"] == 0


@needs_browser
def test_report_without_rollouts_matrix_or_values_still_works(tmp_path):
    t = pl.DataFrame(
        {
            "position": [0, 1],
            "text": ["Alpha one.", "Beta two."],
            "role": [None, "unknown"],
            "resampling_importance_kl": [float("nan"), float("nan")],
        }
    )
    page = render_report(t)
    assert "id='graph'" not in page and "id='matrix'" not in page
    got = probe(
        page,
        """document.querySelector('#cot .sent[data-pos="1"]').click();
        return {ready: document.body.dataset.ready, undef: document.querySelectorAll('#cot .sent.undef').length,
                panel: document.getElementById('panel').textContent};""",
        tmp_path,
    )
    assert got["ready"] == "1" and got["undef"] == 2
    assert "No rollouts were given" in got["panel"]

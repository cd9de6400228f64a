"""Graph, figures, HTML report, terminal summary and write_outputs on one small synthetic trace."""

from __future__ import annotations

import io
import json
import math
import re

import networkx as nx
import numpy as np
import polars as pl
import pytest
from headless_browser import BROWSER, SKIP_REASON, probe
from synthetic_rollouts import THREE_SENTENCES as SENTENCES
from synthetic_rollouts import FakeTrace, three_sentence_rollouts, topic_embed

from anchors import (
    ImportanceOptions,
    TextEmbeddings,
    build_graph,
    importance_table,
    plot_importance_by_role,
    render_report,
    sentence_matrix,
    terminal_summary,
    write_outputs,
)
from anchors._plots import role_means
from cotscope._outputs import _STUDY_FILES, OUTPUTS


@pytest.fixture(scope="module")
def result():
    rows = three_sentence_rollouts()
    emb = TextEmbeddings(topic_embed)
    opts = ImportanceOptions(n_bootstrap=50)
    trace = FakeTrace()
    m = sentence_matrix(rows, trace, SENTENCES, embed=emb, options=opts)
    roles = ["plan_generation", "active_computation", "<odd & role>"]
    t = importance_table(rows, trace, SENTENCES, roles=roles, embed=emb, options=opts, matrix=m)
    return t, m, trace


def test_text_embeddings_embed_each_text_once():
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return topic_embed(texts)

    emb = TextEmbeddings(counting)
    a = emb(["Alpha.", "Beta.", "Alpha."])
    b = emb(["Beta.", "Gamma."])
    assert calls == [["Alpha.", "Beta."], ["Gamma."]]
    assert np.array_equal(a[0], a[2]) and np.array_equal(a[1], b[0])


def test_graph_nodes_edges_and_graphml_roundtrip(result, tmp_path):
    t, m, _ = result
    g = build_graph(t, m)
    assert sorted(g.nodes) == [0, 1, 2]
    assert g.nodes[0]["text"] == "Alpha one." and g.nodes[2]["role"] == "<odd & role>"
    # one edge per defined M[i, j], i < j, with the matrix value as weight
    expected = {(i, j): m[i, j] for i in range(3) for j in range(3) if math.isfinite(m[i, j])}
    assert {(u, v): d["weight"] for u, v, d in g.edges(data=True)} == pytest.approx(expected)
    # undefined values are left out, never stored as None or NaN
    for _, data in g.nodes(data=True):
        assert all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in data.values())
    assert "forced_importance_kl" not in g.nodes[0]  # no forced rollouts: undefined
    nx.write_graphml(g, tmp_path / "g.graphml")
    back = nx.read_graphml(tmp_path / "g.graphml")
    assert back.number_of_edges() == len(expected)
    top1 = build_graph(t, m, top_k=1)
    assert top1.out_degree(0) == 1 and top1.has_edge(0, int(np.nanargmax(np.abs(m[0]))))


def test_write_outputs_writes_every_file(result, tmp_path):
    t, m, trace = result
    paths = write_outputs(t, m, trace, tmp_path / "out", options=ImportanceOptions(n_bootstrap=50))
    out = tmp_path / "out"
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(paths) == written  # every file returned, none left unreported
    # the top-level entries are the ones the CLI declares (and clears) for a folder of importance outputs
    assert {name.split("/")[0] for name in written} == set(OUTPUTS["import thought-anchors"]) - {
        *_STUDY_FILES,
        "run.json",
    }
    assert {name for name in written if "/" in name} == {
        "thought_anchors/chunks_labeled.json",
        "thought_anchors/step_importance.json",
        "thought_anchors/summary.json",
    }
    for name in written:
        assert (out / name).stat().st_size > 0, name
    assert not list((tmp_path / "out").rglob("*.tmp"))  # temp files renamed away
    assert pl.read_parquet(tmp_path / "out" / "importance.parquet").equals(t)
    meta = pl.read_parquet_metadata(tmp_path / "out" / "importance.parquet")
    assert meta["cotscope.importance.version"] == "1"
    settings = json.loads(meta["cotscope.importance.settings"])
    assert settings["options"]["similarity_threshold"] == 0.8 and settings["options"]["n_bootstrap"] == 50
    for png in ("importance.png", "matrix.png", "graph.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    graph = json.loads((tmp_path / "out" / "graph.json").read_text())
    assert len(graph["nodes"]) == 3 and len(graph["edges"]) == 3
    assert nx.read_graphml(tmp_path / "out" / "graph.graphml").number_of_nodes() == 3


def test_report_is_self_contained_and_sortable(result):
    t, _, trace = result
    page = render_report(t, trace, figures={"a figure": b"\x89PNG fake"}, notes={"model": "organism:arith"})
    assert "data:image/png;base64," in page
    assert "<script>" in page and "sortable" in page
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)  # no external assets
    assert "&lt;odd &amp; role&gt;" in page and "<odd & role>" not in page  # escaped
    assert page.count("<tr>") == 1 + t.height
    assert "organism:arith" in page


def test_terminal_summary_ranks_by_metric(result):
    from rich.console import Console

    t, _, _ = result
    buf = io.StringIO()
    terminal_summary(t, metric="accuracy", top=2, console=Console(file=buf, width=160))
    text = buf.getvalue()
    best = t.sort("accuracy", descending=True, nulls_last=True)["text"][0]
    assert "top 2 sentences by accuracy" in text and best in text
    with pytest.raises(ValueError, match="no column 'nope'"):
        terminal_summary(t, metric="nope")


def test_role_means_are_hierarchical():
    """Trace A has 3 'plan' sentences at 1.0, trace B one at 0.0: the per-trace mean weighs traces equally."""
    a = pl.DataFrame({"role": ["plan"] * 3, "m": [1.0, 1.0, 1.0]})
    b = pl.DataFrame({"role": ["plan", "calc"], "m": [0.0, float("nan")]})
    means = role_means([a, b], "m")
    plan = means.filter(pl.col("role") == "plan").row(0, named=True)
    assert plan["mean"] == pytest.approx(0.5) and plan["n_traces"] == 2 and plan["n_sentences"] == 4
    assert means.filter(pl.col("role") == "calc").height == 0  # only undefined values
    fig = plot_importance_by_role([a, b], "m")
    assert fig.axes[0].get_yticklabels()[0].get_text() == "plan (4)"


def test_write_outputs_without_matrix(result, tmp_path):
    t, _, trace = result
    paths = write_outputs(t.drop("outgoing_importance", "incoming_importance"), None, trace, tmp_path)
    assert "matrix.png" not in paths and "graph.png" not in paths
    steps = json.loads((tmp_path / "thought_anchors" / "step_importance.json").read_text())
    assert all(s["target_impacts"] == [] for s in steps)
    assert json.loads((tmp_path / "graph.json").read_text())["edges"] == []


_PROBE = """
const images = [...document.images];
const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
const th = document.querySelector('table.sortable th');
const first = () => document.querySelector('table.sortable tbody tr').cells[0].textContent;
th.click(); const asc = first(); th.click(); const desc = first();
return {images: images.length, broken, asc, desc};
"""


@pytest.mark.skipif(BROWSER is None, reason=SKIP_REASON)
def test_report_opens_in_a_browser_with_every_figure(result, tmp_path):
    t, m, trace = result
    write_outputs(t, m, trace, tmp_path / "out", options=ImportanceOptions(n_bootstrap=50))
    page = (tmp_path / "out" / "report.html").read_text()
    got = probe(page, _PROBE, tmp_path)
    assert got["images"] == page.count("<img ") == 4
    assert got["broken"] == 0
    # the first header (pos) sorts ascending, then descending
    assert (got["asc"], got["desc"]) == ("0", str(t.height - 1))

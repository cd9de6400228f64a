"""Every JSON file anchors writes is strict JSON (JavaScript's JSON.parse reads it): undefined values are null."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from synthetic_rollouts import FakeTrace, rollout, table, topic_embed

from cot import atomic_write_json, json_dumps


def _refuse(word: str):
    raise ValueError(f"not JSON: {word}")


def strict_loads(text: str):
    """``json.loads`` that fails on NaN, Infinity and -Infinity, as JSON.parse does."""
    return json.loads(text, parse_constant=_refuse)


def test_the_strict_parser_refuses_what_python_writes_by_default():
    with pytest.raises(ValueError, match="NaN"):
        strict_loads(json.dumps({"r": math.nan}))


def test_json_dumps_writes_undefined_values_as_null(tmp_path):
    data = {
        "nan": math.nan,
        "inf": [math.inf, -math.inf],
        "np": np.float32("nan"),
        "array": np.array([1.5, np.nan]),
        "count": np.int64(3),
        "nested": ({"x": float("nan")}, 2.0),
    }
    expected = {"nan": None, "inf": [None, None], "np": None, "array": [1.5, None], "count": 3}
    parsed = strict_loads(json_dumps(data))
    assert parsed == {**expected, "nested": [{"x": None}, 2.0]}
    assert strict_loads(atomic_write_json(tmp_path / "a.json", data).read_text()) == parsed
    with pytest.raises(TypeError, match="allow_nan"):
        json_dumps(data, allow_nan=True)


def test_receiver_heads_file_is_strict_json_when_reliability_is_undefined(tmp_path, monkeypatch):
    """Too few heads defined in both halves: split-half reliability is NaN, written as null."""
    import anchors._main
    import anchors._pipeline
    import cot
    from anchors._pipeline import read_receiver_heads
    from cotscope.cli import main

    class Backend:
        model = tokenizer = None

    monkeypatch.setattr(anchors._main, "make_backend_from_options", lambda *a, **k: Backend())
    monkeypatch.setattr(cot, "load_trace", lambda path: FakeTrace(id=Path(path).stem))
    monkeypatch.setattr(
        anchors._pipeline,
        "pick_receiver_heads",
        lambda model, tok, traces, top_k: {
            "heads": [[1, 0], [2, 3]],
            "traces": [t.id for t in traces],
            "split_half_reliability": float("nan"),
        },
    )
    files = []
    for name in ("a", "b"):
        files += ["--trace", str(tmp_path / f"{name}.json")]
        (tmp_path / f"{name}.json").write_text("{}")
    out = tmp_path / "heads.json"
    assert main(["receiver-heads", "--model", "organism:arith", *files, "--out", str(out)]) == 0
    data = strict_loads(out.read_text())
    assert data["split_half_reliability"] is None and data["heads"] == [[1, 0], [2, 3]]
    assert read_receiver_heads(out)["heads"] == [(1, 0), (2, 3)]


def test_every_json_output_of_a_run_is_strict(tmp_path):
    """A run with undefined values (NaN metrics, a matrix with NaN cells): graph.json, the thought-anchors files
    and the JSON inside report.html all parse strictly."""
    import re

    from anchors import ImportanceOptions, importance_table, sentence_matrix, write_outputs

    sentences = ["Alpha one.", "Beta two.", "Gamma three."]
    rows = [
        rollout(0, "1", True, first="Zeta.", text="Zeta. Beta x."),
        rollout(0, "2", False, first="Alpha.", text="Alpha. Eta."),
        rollout(2, "1", True, first="Gamma q.", text="Gamma q."),  # no rollouts at 1: NaN around it
    ]
    opts = ImportanceOptions(n_bootstrap=20, min_chars=0)
    trace = FakeTrace()
    m = sentence_matrix(table(rows), trace, sentences, embed=topic_embed, options=opts)
    t = importance_table(
        table(rows), trace, sentences, roles=["a", "b", "c"], embed=topic_embed, options=opts, matrix=m
    )
    assert t["resampling_importance_kl"].is_nan().any() and np.isnan(m).any()
    paths = write_outputs(t, m, trace, tmp_path)
    written = [p for p in paths.values() if p.suffix == ".json"]
    assert {p.name for p in written} >= {"graph.json", "chunks_labeled.json", "summary.json"}
    for path in written:
        strict_loads(path.read_text())
    html = paths["report.html"].read_text()
    scripts = re.findall(r"<script type=.application/json.[^>]*>(.*?)</script>", html, re.S)
    assert scripts
    for text in scripts:
        strict_loads(text)

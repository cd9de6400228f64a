"""Hostile trace files and CoTs: one clear error (or linear work), never a traceback or a hang."""

from __future__ import annotations

import json

import pytest

from cot import Trace, TraceError, load_trace, split_sentences
from cotscope.cli import main


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("field", ["prompt", "cot", "answer_text"])
def test_lone_surrogate_is_a_trace_error_naming_the_field(tmp_path, field):
    data = {"prompt": "What is 2 + 2?", "cot": "Two plus two is four.", "answer_text": "\\boxed{4}"}
    raw = json.dumps(data).replace(json.dumps(data[field]), json.dumps(data[field])[:-1] + '\\ud800"')
    path = _write(tmp_path / "t.json", raw)
    with pytest.raises(TraceError, match=rf"'{field}' holds a lone surrogate"):
        load_trace(path)


def test_lone_surrogate_in_chat_message_and_metadata():
    with pytest.raises(TraceError, match=r"'prompt\[0\].content'"):
        Trace(prompt=[{"role": "user", "content": "a\udc00"}], cot="x.")
    with pytest.raises(TraceError, match="'metadata'"):
        Trace(prompt="p", cot="x.", metadata={"note": "b\ud834"})


def test_cli_split_on_surrogate_exits_2_with_one_line(tmp_path, capsys):
    path = _write(tmp_path / "t.json", '{"prompt": "hi", "cot": "A. B \\udc00."}')
    assert main(["split", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lone surrogate" in err[0]


@pytest.mark.parametrize(
    "raw", ["[" * 100_000 + "]" * 100_000, '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}"]
)
def test_deeply_nested_json_is_a_trace_error(tmp_path, raw, capsys):
    path = _write(tmp_path / "deep.json", raw)
    with pytest.raises(TraceError, match="nests JSON arrays or objects too deeply"):
        load_trace(path)
    assert main(["split", str(path)]) == 2
    assert "too deeply" in capsys.readouterr().err


def test_problem_json_beside_published_trace_must_be_an_object(tmp_path):
    _write(tmp_path / "base_solution.json", json.dumps({"prompt": "Q", "solution": "<think>A.</think> 1"}))
    _write(tmp_path / "problem.json", "[1, 2]")
    with pytest.raises(TraceError, match=r"problem\.json: expected a JSON object"):
        load_trace(tmp_path)


@pytest.mark.timeout(60)
def test_split_is_linear_on_a_long_single_line_cot():
    # A CoT of several MB on one line, full of list-number-like words, backticks and unmatched math openers.
    # Quadratic scans (once per sentence, back to the line start) took minutes here; linear work takes seconds.
    unit = "So we add 1. to a. the total `x` \\( giving $$ 5 apples. Then 3 + 4 = 7. "
    text = unit * (6_000_000 // len(unit))
    sentences = split_sentences(text)
    units = len(text) // len(unit)
    small = split_sentences(unit * 1000)
    # the pattern repeats: the first sentences of the long text are those of a shorter copy
    assert [(s.start, s.end) for s in sentences[:1000]] == [(s.start, s.end) for s in small[:1000]]
    assert units <= len(sentences) <= 3 * units
    assert all(text[s.start : s.end] == s.text for s in sentences[:: max(1, len(sentences) // 1000)])

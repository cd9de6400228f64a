"""``cotscope import thought-anchors`` through click's CliRunner, on a small hand-made problem folder."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from synthetic_rollouts import topic_embed

from anchors._cli import import_group
from anchors._ta_format import TA_METRICS


def _chunk(idx, text, dtf):
    """A chunks_labeled.json record with every published field."""
    metrics = dict.fromkeys(TA_METRICS, 0.0)
    metrics["different_trajectories_fraction"] = dtf
    return {
        "chunk": text,
        "chunk_idx": idx,
        "function_tags": ["plan_generation"],
        "depends_on": [],
        **metrics,
    }


@pytest.fixture
def small_problem(tmp_path, monkeypatch):
    """Two chunks; the stand-in embedder makes 'Alpha ...' match chunk 0 and 'Beta ...' match chunk 1."""
    import cot

    monkeypatch.setattr(cot, "embed_sentences", topic_embed)
    folder = tmp_path / "problem_7"
    folder.mkdir()
    chunks = [_chunk(0, "Alpha one.", 0.25), _chunk(1, "Beta two.", 0.0)]
    resampled = {"0": ["Alpha a.", "Alpha b.", "Alpha a.", "Other."], "1": ["Gamma.", "Delta."]}
    (folder / "chunks_labeled.json").write_text(json.dumps(chunks))
    (folder / "chunks_resampled.json").write_text(json.dumps(resampled))
    return folder


def test_import_thought_anchors_writes_parquet_and_compares(small_problem, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(import_group, ["thought-anchors", str(small_problem), "--out", str(out)])
    assert result.exit_code == 0, result.output
    t = pl.read_parquet(out / "importance.parquet")
    # chunk 0: 1 of 4 first sentences differs; chunk 1: both differ
    assert t["different_trajectories_fraction"].to_list() == pytest.approx([0.25, 1.0])
    assert t["overdeterminedness"].to_list() == pytest.approx([0.25, 0.0])
    assert t["published_different_trajectories_fraction"].to_list() == [0.25, 0.0]
    assert (
        "different_trajectories_fraction: mean |ours - published| = 0.5000 over 2 sentences" in result.output
    )
    assert "2 sentences ->" in result.output


def test_import_bad_folder_is_a_one_line_usage_error(tmp_path):
    runner = CliRunner()
    result = runner.invoke(import_group, ["thought-anchors", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no such folder" in result.output
    result = runner.invoke(import_group, ["thought-anchors", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "has no chunks_labeled.json" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("name", "content"), [("chunks_labeled.json", '{"a": 1}'), ("step_importance.json", "[1, 2]")]
)
def test_import_files_of_the_wrong_shape_are_usage_errors(small_problem, tmp_path, name, content):
    import shutil

    folder = tmp_path / "problem_1"
    shutil.copytree(small_problem, folder)
    (folder / name).write_text(content)
    result = CliRunner().invoke(import_group, ["thought-anchors", str(folder), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "thought-anchors layout" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "importance.parquet").exists()


def test_import_of_an_empty_trace_is_a_one_line_error_and_writes_nothing(tmp_path, capsys):
    from cotscope.cli import main

    folder = tmp_path / "problem_1"
    folder.mkdir()
    (folder / "chunks_labeled.json").write_text("[]")
    out = tmp_path / "o"
    assert main(["import", "thought-anchors", str(folder), "--out", str(out)]) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "lists no chunks" in lines[0] and "trace is empty" in lines[0], captured.err
    assert "sentences ->" not in captured.out
    assert not out.exists()


def test_import_says_when_it_writes_the_outputs(small_problem, tmp_path, capsys):
    from cotscope.cli import main

    assert main(["import", "thought-anchors", str(small_problem), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert any(line.startswith("writing 2 sentences, figures and the report to") for line in lines), lines

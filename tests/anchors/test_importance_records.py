"""`cotscope importance` records its run, keeps another trace's results, and fails in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cot import load_trace
from cotscope._outputs import claim_out
from cotscope.cli import main

TRACE = Path(__file__).parents[1] / "data" / "arith_trace.json"


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("records")
    args = ["importance", "--trace", str(TRACE), "--samples", "3", "--min-different", "3", "--seed", "7"]
    args.append("--no-whitebox")
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_run_json_records_model_sampling_seeds_and_versions(run_out):
    run = json.loads((run_out / "run.json").read_text())
    assert run["command"] == "importance" and run["seed"] == 7 and run["samples"] == 3
    assert run["model"]["model_id"] == "organism:arith" and len(run["model"]["weights_sha256"]) == 16
    assert {"cotscope", "torch", "transformers"} <= set(run["versions"])
    assert run["trace"]["id"] == load_trace(TRACE).id
    assert {p["temperature"] for p in run["sampling_params"]} == {run["sampling"]["temperature"]}
    assert "graded_against" in run and run["stats"]["rollouts_new"] > 0


@pytest.mark.slow
def test_report_shows_the_run_seed_and_a_legend(run_out):
    page = (run_out / "report.html").read_text()
    assert "seed: 7" in page  # the run's seed, not the bootstrap's
    assert "bootstrap seed: 0" in page
    assert "Abbreviations" in page and "different-trajectories fraction" in page


@pytest.mark.slow
def test_embeddings_are_kept_with_the_run(run_out):
    assert list((run_out / ".cache").glob("embeddings.*/*.npz"))  # the trace's own file


@pytest.mark.slow
def test_another_trace_into_the_same_out_is_refused(run_out, tmp_path, capsys):
    other = load_trace(TRACE)
    other.cot = other.cot.replace("32 mod 10 is 2", "32 mod 10 is 2, so 2")
    other.id = ""
    path = tmp_path / "other.json"
    type(other)(**{**other.to_dict(), "id": ""}).save(path)
    before = (run_out / "importance.parquet").read_bytes()
    assert main(["importance", "--trace", str(path), "--out", str(run_out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds the results of another trace" in err and "--force" in err
    assert (run_out / "importance.parquet").read_bytes() == before


def test_check_out_lets_the_same_trace_resume_and_force_replace(tmp_path):
    trace = load_trace(TRACE)
    trace.save(tmp_path / "trace.json")
    claim_out(tmp_path, "importance", {"trace": trace.id}, force=False)  # the same trace: a resume
    other = type(trace)(prompt="q", cot="Another chain of thought.")
    with pytest.raises(Exception, match="another trace"):
        claim_out(tmp_path, "importance", {"trace": other.id}, force=False)
    claim_out(tmp_path, "importance", {"trace": other.id}, force=True)
    assert not (tmp_path / "trace.json").exists()  # the other trace's files go with --force


def test_out_of_range_seed_is_a_usage_error(tmp_path, capsys):
    assert main(["importance", "--seed", "99999999999999999999999", "--out", str(tmp_path / "r")]) == 2
    assert "--seed" in capsys.readouterr().err


@pytest.mark.slow
def test_all_rollouts_failed_is_one_line_and_exit_1(tmp_path, capsys):
    args = ["importance", "--trace", str(TRACE), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]
    args += ["--samples", "2", "--min-different", "2", "--backend-option", "max_retries=0"]
    code = main([*args, "--out", str(tmp_path), "-q"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cotscope: error")]
    assert code == 1 and len(err) == 1 and "rollouts failed (connection)" in err[0]


def test_import_thought_anchors_writes_the_importance_report(tmp_path, problem_dirs):
    folder = problem_dirs[0]
    assert main(["import", "thought-anchors", str(folder), "--out", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "report-data" in page and "thought-anchors" in page
    assert (tmp_path / "graph.json").is_file() and (tmp_path / "importance.png").is_file()

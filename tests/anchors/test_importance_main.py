"""The main job end to end on the shipped default organism, and the validation command's contract."""

from __future__ import annotations

import contextlib
import io
import json
import re

import networkx as nx
import polars as pl
import pytest

from cotscope.cli import main


@pytest.fixture(scope="module")
def importance_run(tmp_path_factory):
    """The output folder of one run, and what the run printed (to stderr, with --quiet)."""
    out = tmp_path_factory.mktemp("importance")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["importance", "--samples", "6", "--out", str(out), "--quiet"])
    assert code == 0
    return out, err.getvalue()


@pytest.fixture(scope="module")
def importance_out(importance_run):
    return importance_run[0]


@pytest.mark.slow
def test_importance_counts_the_files_it_wrote(importance_run):
    out, log = importance_run
    said = re.search(r"wrote (\d+) files to", log)
    assert said, log
    from cotscope._outputs import (
        MARKER,
    )  # the folder guard's record of which run owns the folder, not a result

    written = [
        p
        for p in out.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(out).parts and p.name != MARKER
    ]
    assert int(said[1]) == len(written), sorted(p.relative_to(out).as_posix() for p in written)


@pytest.mark.slow
def test_importance_writes_every_output(importance_out):
    table = pl.read_parquet(importance_out / "importance.parquet")
    rollouts = pl.read_parquet(importance_out / "rollouts.parquet")
    k = table.height
    assert k >= 5 and table["position"].to_list() == list(range(k))
    # Every position 0..K was resampled, and probed for a forced answer, 6 times.
    assert rollouts.filter(pl.col("kind") == "resample").height == 6 * (k + 1)
    assert rollouts.filter(pl.col("kind") == "forced_answer").height == 6 * (k + 1)
    for col in ("counterfactual_importance_kl", "resampling_importance_accuracy", "forced_importance_kl"):
        assert {f"{col}_lo", f"{col}_hi", f"{col}_n"} <= set(table.columns)
    assert {"receiver_score", "suppression_outgoing", "role", "text", "accuracy"} <= set(table.columns)
    # counterfactual importance only where at least 5 of the 6 rollouts changed the sentence's meaning
    defined = table.filter(pl.col("counterfactual_source") == "counterfactual")
    undefined = table.filter(pl.col("counterfactual_source") == "undefined")
    assert defined.height + undefined.height == k and undefined.height > 0
    assert (defined["n_different"] >= 5).all() and (undefined["n_different"] < 5).all()
    assert undefined["counterfactual_importance_kl"].is_nan().all()
    html = (importance_out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<table" in html
    graph = nx.read_graphml(importance_out / "graph.graphml")
    assert graph.number_of_nodes() == k
    chunks = json.loads((importance_out / "thought_anchors" / "chunks_labeled.json").read_text())
    assert [c["chunk_idx"] for c in chunks] == list(range(k))
    assert list((importance_out).glob("*.png"))
    # every interval contains its point estimate (BCa, widened to the estimate where it cannot reach it)
    from anchors import METRICS
    from anchors._blackbox import SIGNIFICANCE_METRICS

    for name in METRICS:
        rows = (
            table.select(name, f"{name}_lo", f"{name}_hi")
            .drop_nulls()
            .filter(pl.col(f"{name}_lo").is_not_nan())
        )
        rows = rows.filter(pl.col(name).is_not_nan())
        assert ((rows[f"{name}_lo"] <= rows[name]) & (rows[name] <= rows[f"{name}_hi"])).all(), name
    for name in SIGNIFICANCE_METRICS:
        p = table[f"{name}_p"].drop_nans()
        assert ((p > 0) & (p <= 1)).all()
    assert table["resampling_importance_kl_p"].is_not_nan().all()
    # the run header: the organism's own sampling settings, chosen automatically, and what accuracy is graded against
    settings = json.loads(
        pl.read_parquet_metadata(importance_out / "importance.parquet")["cotscope.importance.settings"]
    )
    assert settings["sampling"] == {
        "temperature": 0.6,
        "top_p": 1.0,
        "max_new_tokens": 160,
        "forced_max_new_tokens": 16,
    }
    assert settings["sampling_defaults_for"] == "organism arith"
    assert "gt_answer" in settings["graded_against"] and "on this trace itself" in settings["receiver_heads"]


@pytest.mark.slow
def test_default_trace_holds_a_planted_anchor(importance_out):
    """With no --trace, the organism writes its own trace, and the default seed's trace has a planted error."""
    import organisms
    from anchors._pipeline import DEFAULT_TRACE_SEED
    from anchors._validate import planted_sentences
    from cot import load_trace

    rollouts = pl.read_parquet(importance_out / "rollouts.parquet")
    trace = load_trace(importance_out / "trace.json")
    assert trace.metadata["problem_seed"] == DEFAULT_TRACE_SEED
    task = organisms.get_task("arith")
    truth = task.analyze(task.sample(DEFAULT_TRACE_SEED), trace.cot)
    assert planted_sentences(truth) is not None, "the default trace should hold exactly one planted error"
    assert rollouts["trace_id"].unique().to_list() == [trace.id]


def test_bad_input_to_importance(tmp_path, capsys):
    assert main(["importance", "--model", "organism:nope", "--out", str(tmp_path)]) == 2
    assert "organism:arith" in capsys.readouterr().err
    assert main(["importance", "--samples", "1", "--out", str(tmp_path)]) == 2


def test_importance_refuses_fewer_samples_than_the_counterfactual_floor(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["importance", "--samples", "4", "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--samples 4 is below --min-different 5" in err
    assert "raise --samples to at least 5" in err and "lower --min-different to 4 or less" in err
    assert not out.exists()  # refused before the model loads: nothing written


@pytest.mark.slow
def test_validate_anchors_contract(capsys):
    args = ["validate", "anchors", "--n-traces", "2", "--samples", "4", "--json", "--no-whitebox"]
    code = main([*args, "--min-different", "2", "--min-dtf", "0"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_traces"] == 2
    assert (data["settings"]["options"]["min_different"], data["settings"]["options"]["min_dtf"]) == (2, 0.0)
    assert data["settings"]["temperature"] == 0.6
    for name in ("counterfactual_importance_kl", "random", "position", "sentence_length", "contains_number"):
        m = data["methods"][name]
        assert 0.0 <= m["top1"] <= 1.0 and "spearman" in m
    for rec in data["traces"]:
        assert rec["case"] in ("corrected", "uncorrected") and rec["planted"]
    assert data["methods"]["different_trajectories_fraction"]["kind"] == "control"
    per_trace = data["settings"]["sentences_per_trace"]
    assert per_trace == sum(r["n_sentences"] for r in data["traces"]) / 2
    assert data["methods"]["position"]["defined_per_trace"] == per_trace
    assert 0 <= data["methods"]["counterfactual_importance_kl"]["defined_per_trace"] <= per_trace
    for name in ("resampling_importance_kl", "forced_importance_kl"):
        sig = data["significance"][name]
        assert sig["planted_n"] + sig["planted_undefined"] == sum(len(r["planted"]) for r in data["traces"])
        assert sig["planted_flagged"] is None or 0.0 <= sig["planted_flagged"] <= 1.0
        assert sig["filler_n"] >= 0


@pytest.mark.slow
def test_a_trace_read_from_out_is_not_rewritten(importance_out, tmp_path):
    out = tmp_path / "again"
    out.mkdir()
    data = json.loads((importance_out / "trace.json").read_text())
    data["notes"] = "kept by the user"
    (out / "trace.json").write_text(json.dumps(data))
    before = (out / "trace.json").read_bytes()
    code = main(
        [
            "importance",
            "--samples",
            "2",
            "--min-different",
            "2",
            "--no-whitebox",
            "--trace",
            str(out / "trace.json"),
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    assert (out / "trace.json").read_bytes() == before
    assert (out / "importance.parquet").exists()


@pytest.mark.slow
def test_validate_anchors_reports_significance_at_each_sample_count(tmp_path):
    """The ladder's smaller sample counts are the first samples of the same run: a separate run at that count (same
    seed, same cache) flags exactly the same sentences. The A/A check covers every position of every trace."""
    from anchors import validate_anchors

    kw = {
        "n_traces": 1,
        "whitebox": False,
        "cache_dir": tmp_path,
        "options": {"min_different": 1, "min_dtf": 0.0},
    }
    counts = []
    full = validate_anchors(
        samples=6, ladder=(3,), progress=lambda done, total: counts.append((done, total)), **kw
    )
    assert counts == [(0, 1), (1, 1)]  # a line once the traces are sampled, then one per trace scored
    assert sorted(full.significance_by_samples) == [3, 6]
    assert full.significance == full.significance_by_samples[6]
    alone = validate_anchors(samples=3, ladder=(), **kw)
    assert sorted(alone.significance_by_samples) == [3]
    assert alone.significance == full.significance_by_samples[3]
    null = full.null_check["resample"]
    assert null["n"] == full.traces[0]["n_sentences"] + 1  # positions 0..K, three rollouts a half
    assert null["mean_per_half"] == 3.0 and 0.0 <= null["kl_flagged"] <= 1.0
    assert full.to_json()["significance_by_samples"]["3"] == alone.to_json()["significance"]


@pytest.mark.slow
def test_importance_says_each_long_step_on_plain_lines(importance_out, tmp_path, capsys):
    """Off a terminal (a log file), every step of a few seconds or more has its own line, and no carriage return."""
    trace = str(importance_out / "trace.json")
    cache = str(importance_out / ".cache")  # the rollouts are cached: no sampling here
    out = tmp_path / "again"
    assert main(["importance", "--trace", trace, "--samples", "6", "--cache", cache, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    for start in ("scoring ", "white-box: ", "writing the table, report, figures and graph to "):
        assert any(line.startswith(start) for line in lines), (start, lines)

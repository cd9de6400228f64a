"""Study aggregates (anchors._study) and ``cotscope import thought-anchors DATASET_DIR``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from anchors._cli import _import_one, _problem_folders, import_group
from anchors._study import aggregate, relative_position
from cot.published import VENDORED

DATASET = VENDORED / "deepseek-r1-distill-llama-8b"


def _raw_role_means(folders, field="counterfactual_importance_kl"):
    """Per primary tag: (mean over chunks, mean of per-trace means, n chunks, n traces), read with json alone."""
    per_role: dict[str, list[float]] = {}
    per_trace: dict[str, list[float]] = {}
    for folder in folders:
        chunks = json.loads((folder / "chunks_labeled.json").read_text(encoding="utf-8"))
        mine: dict[str, list[float]] = {}
        for c in chunks:
            role = c["function_tags"][0] if c.get("function_tags") else "unknown"
            mine.setdefault(role, []).append(float(c[field]))
        for role, values in mine.items():
            per_role.setdefault(role, []).extend(values)
            per_trace.setdefault(role, []).append(sum(values) / len(values))
    return {
        r: (float(np.mean(per_role[r])), float(np.mean(per_trace[r])), len(per_role[r]), len(per_trace[r]))
        for r in per_role
    }


def _check_against_raw(agg: pl.DataFrame, folders, split="all"):
    raw = _raw_role_means(folders)
    rows = agg.filter(
        (pl.col("metric") == "published_counterfactual_importance_kl") & (pl.col("split") == split)
    )
    assert sorted(rows["role"].to_list()) == sorted(raw)
    for row in rows.iter_rows(named=True):
        mean, trace_mean, n, n_traces = raw[row["role"]]
        assert row["mean"] == pytest.approx(mean, rel=1e-12, abs=1e-12)
        assert row["trace_mean"] == pytest.approx(trace_mean, rel=1e-12, abs=1e-12)
        assert (row["n_sentences"], row["n_traces"]) == (n, n_traces)
        assert row["mean_lo"] <= row["mean"] <= row["mean_hi"]


def test_published_aggregate_equals_the_raw_files():
    folders = _problem_folders(DATASET)
    assert len(folders) == 20
    table = pl.concat([_import_one(f, 0.8, None, False) for f in folders], how="diagonal_relaxed")
    agg = aggregate(table, ["published_counterfactual_importance_kl"], n_bootstrap=200)
    _check_against_raw(agg, folders)
    _check_against_raw(agg, [f for f in folders if f.parent.name.startswith("correct")], "correct")
    _check_against_raw(agg, [f for f in folders if f.parent.name.startswith("incorrect")], "incorrect")
    # the published figure's numbers (research notes): problem_setup 1.34 over 74 chunks, plan generation 0.69
    rows = {r["role"]: r for r in agg.filter(pl.col("split") == "all").iter_rows(named=True)}
    assert rows["problem_setup"]["mean"] == pytest.approx(1.34, abs=0.005)
    assert rows["problem_setup"]["n_sentences"] == 74


def test_import_dataset_cli_writes_study_outputs(tmp_path):
    # the two smallest published problems, in the published layout
    folders = sorted(_problem_folders(DATASET), key=lambda f: (f / "chunks_labeled.json").stat().st_size)[:2]
    root = tmp_path / "dataset"
    for f in folders:
        shutil.copytree(
            f, root / f.parent.name / f.name, ignore=shutil.ignore_patterns("chunks_resampled.json")
        )
    out = tmp_path / "out"
    result = CliRunner().invoke(import_group, ["thought-anchors", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out / "importance.parquet")
    ids = sorted(set(table["trace_id"].to_list()))
    assert len(ids) == 2 and table["trace_id"].null_count() == 0
    for trace_id in ids:
        assert (out / "traces" / trace_id / "report.html").is_file()
        assert (
            pl.read_parquet(out / "traces" / trace_id / "importance.parquet").height
            == table.filter(pl.col("trace_id") == trace_id).height
        )
    for name in (
        "aggregate.parquet",
        "report.html",
        "role_distributions.png",
        "debiased_effects.png",
        "position.png",
    ):
        assert (out / name).stat().st_size > 0, name
    run = json.loads((out / "run.json").read_text())
    assert run["traces"] == 2 and run["n_skipped"] == 0
    _check_against_raw(
        pl.read_parquet(out / "aggregate.parquet"), [root / f.parent.name / f.name for f in folders]
    )
    page = (out / "report.html").read_text()
    for trace_id in ids:
        assert f"href='traces/{trace_id}/report.html'" in page
    # a second import of the same dataset resumes in the same folder; the single-folder form still works
    single = CliRunner().invoke(
        import_group, ["thought-anchors", str(folders[0]), "--out", str(tmp_path / "one")]
    )
    assert single.exit_code == 0, single.output
    assert not (tmp_path / "one" / "aggregate.parquet").exists()


def test_import_dataset_skips_a_broken_problem_and_says_why(tmp_path):
    folder = sorted(_problem_folders(DATASET), key=lambda f: (f / "chunks_labeled.json").stat().st_size)[0]
    root = tmp_path / "dataset"
    shutil.copytree(
        folder, root / "correct_base_solution" / "problem_1", ignore=shutil.ignore_patterns("chunks_r*")
    )
    broken = root / "correct_base_solution" / "problem_2"
    broken.mkdir(parents=True)
    (broken / "chunks_labeled.json").write_text("[]")
    result = CliRunner().invoke(import_group, ["thought-anchors", str(root), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (
        "1 skipped" in result.output and "problem_2" in result.output and "lists no chunks" in result.output
    )
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["n_skipped"] == 1 and "lists no chunks" in run["skipped"][0]["reason"]


def _table(trace_ids, positions, roles, values, correct=None):
    data = {"trace_id": trace_ids, "position": positions, "role": roles, "m": values}
    if correct is not None:
        data["base_correct"] = correct
    return pl.DataFrame(data)


def test_cluster_bootstrap_interval_is_as_wide_as_the_traces_allow():
    # 10 traces of 50 identical sentences each: the information is 10 values, not 500
    rng = np.random.default_rng(1)
    levels = rng.normal(0, 1, 10)
    ids = [f"t{k}" for k in range(10) for _ in range(50)]
    t = _table(ids, [p for _ in range(10) for p in range(50)], ["a"] * 500, np.repeat(levels, 50))
    row = aggregate(t, ["m"], n_bootstrap=2000).filter(pl.col("split") == "all").row(0, named=True)
    se = levels.std(ddof=1) / np.sqrt(10)
    assert row["mean"] == pytest.approx(levels.mean())
    # a 95% interval spans about 2 x 1.96 standard errors; resampling sentences would give a tenth of that
    assert 2.5 * se < row["mean_hi"] - row["mean_lo"] < 5 * se
    assert row["n_traces"] == 10 and row["n_sentences"] == 500


def test_mean_of_trace_means_weighs_traces_equally():
    t = _table(["x"] * 9 + ["y"], [*range(9), 0], ["a"] * 10, [1.0] * 9 + [3.0])
    row = aggregate(t, ["m"], n_bootstrap=50).row(0, named=True)
    assert row["mean"] == pytest.approx(1.2) and row["trace_mean"] == pytest.approx(2.0)


def _trend(effect: float, tied_to_position: bool, seed: int = 0):
    """40 traces of 20 sentences; the metric falls with position, and role a adds ``effect``. Role a sits mostly
    early when ``tied_to_position``, anywhere otherwise."""
    rng = np.random.default_rng(seed)
    ids, pos, roles, vals = [], [], [], []
    for k in range(40):
        for p in range(20):
            x = p / 19
            role = "a" if rng.random() < (1 - x if tied_to_position else 0.5) else "b"
            ids.append(f"t{k}")
            pos.append(p)
            roles.append(role)
            vals.append(3 * (1 - x) ** 2 + (effect if role == "a" else 0.0) + rng.normal(0, 0.05))
    rows = aggregate(_table(ids, pos, roles, vals), ["m"], n_bootstrap=300).iter_rows(named=True)
    return {r["role"]: r for r in rows}


def test_debiasing_removes_a_position_trend():
    # no role effect at all, but role a sits early where the metric is high: the raw means differ, the debiased
    # effects do not
    agg = _trend(0.0, tied_to_position=True)
    assert agg["a"]["mean"] - agg["b"]["mean"] > 1.0
    assert abs(agg["a"]["debiased"] - agg["b"]["debiased"]) < 0.05
    assert agg["a"]["debiased_lo"] < agg["b"]["debiased_hi"]  # intervals overlap
    assert agg["a"]["degree"] == 10
    # a real role effect, with roles spread over positions, comes through the debiasing whole
    agg = _trend(0.5, tied_to_position=False)
    assert agg["a"]["debiased"] - agg["b"]["debiased"] == pytest.approx(0.5, abs=0.05)
    assert agg["a"]["debiased_lo"] > agg["b"]["debiased_hi"]


def test_degree_is_lowered_for_few_positions_and_splits_are_by_base_solution():
    t = _table(
        ["x", "x", "x", "y", "y", "y"],
        [0, 1, 2, 0, 1, 2],
        ["a", "b", "a", "a", "b", "b"],
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        [True, True, True, False, False, False],
    )
    assert relative_position(t).tolist() == [0.0, 0.5, 1.0, 0.0, 0.5, 1.0]
    agg = aggregate(t, ["m"], n_bootstrap=50)
    # 6 sentences carry no polynomial: debiased = mean - grand mean
    assert set(agg["degree"].to_list()) == {0}
    rows = {r["role"]: r for r in agg.filter(pl.col("split") == "all").iter_rows(named=True)}
    assert rows["a"]["debiased"] == pytest.approx(rows["a"]["mean"] - 3.5)
    # 3 distinct positions cap the degree at 2 however many sentences there are; 30 sentences cap it at 2 too, and
    # the 15 of one split at 0
    many = pl.concat([t.with_columns(pl.col("trace_id") + str(k)) for k in range(20)])
    assert set(aggregate(many, ["m"], n_bootstrap=20, degree=10)["degree"].to_list()) == {2}
    few = aggregate(many.head(30), ["m"], n_bootstrap=20)
    assert set(few.filter(pl.col("split") == "all")["degree"].to_list()) == {2}
    assert set(few.filter(pl.col("split") == "correct")["degree"].to_list()) == {0}
    correct = {r["role"]: r["mean"] for r in agg.filter(pl.col("split") == "correct").iter_rows(named=True)}
    assert correct == {"a": 2.0, "b": 2.0}
    assert agg.filter(pl.col("split") == "incorrect").filter(pl.col("role") == "b")["n_sentences"][0] == 2


def test_share_significant_counts_flags_of_the_role():
    t = _table(["x"] * 4, [0, 1, 2, 3], ["a"] * 4, [1.0, 2.0, 3.0, 4.0]).with_columns(
        pl.Series("m_significant", [True, False, None, True])
    )
    assert aggregate(t, ["m"], n_bootstrap=20)["share_significant"][0] == pytest.approx(2 / 3)


def _planted_study(gap: float, seed: int = 0) -> pl.DataFrame:
    """20 traces of 10 sentences: one planted error and the sentence after it score ``gap`` above filler."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(20):
        error = int(rng.integers(1, 8))
        for p in range(10):
            role = "planted_error" if p == error else "planted_next" if p == error + 1 else "filler"
            value = rng.gamma(2.0, 0.05) + (gap if role != "filler" else 0.0)
            rows.append(
                {"trace_id": f"t{k}", "position": p, "role": role, "counterfactual_importance_kl": value}
            )
    return pl.DataFrame(rows)


def test_dataset_check_passes_only_when_planted_roles_clear_filler():
    from anchors._validate import _truth_roles_table, dataset_check

    passed = dataset_check(_planted_study(1.0), ["counterfactual_importance_kl"], n_bootstrap=300)
    rec = passed["counterfactual_importance_kl"]
    assert rec["passed"] and rec["smallest_gap"] > 0
    assert rec["roles"]["planted_error"]["n_sentences"] == 20 and rec["roles"]["filler"]["n_traces"] == 20
    failed = dataset_check(_planted_study(0.0), ["counterfactual_importance_kl"], n_bootstrap=300)
    assert not failed["counterfactual_importance_kl"]["passed"]
    # the truth roles come from the generator's analysis, never from the labels of the table scored
    table = pl.DataFrame(
        {"position": [0, 1, 2, 3], "role": ["x"] * 4, "counterfactual_importance_kl": [0.0] * 4}
    )
    truth = _truth_roles_table(table, "t", 1, [1, 2], [{"compute"}, {"compute"}, {"correction"}, {"unknown"}])
    assert truth["role"].to_list() == ["compute", "planted_error", "planted_next", "filler"]


def test_import_roles_from_a_labeller_keep_the_published_tags(tmp_path):
    from cot import label_sentences

    folder = sorted(_problem_folders(DATASET), key=lambda f: (f / "chunks_labeled.json").stat().st_size)[0]
    published = _import_one(folder, 0.8, None, False)
    ruled = _import_one(folder, 0.8, None, False, "rules")
    assert ruled["role"].to_list() == label_sentences(published["text"].to_list(), "rules")
    assert ruled["role"].to_list() != published["role"].to_list()
    assert ruled["published_function_tags"].equals(published["published_function_tags"])
    chunks = json.loads((folder / "chunks_labeled.json").read_text(encoding="utf-8"))
    assert published["role"].to_list() == [(c["function_tags"] or ["unknown"])[0] for c in chunks]

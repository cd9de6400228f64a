"""Adaptive sampling (``cotscope importance --adaptive``): the looks, the stop rules, the sequential test's type-I
error on a null simulation, the budget, and rows identical to a fixed run's for the samples both drew."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from anchors._adaptive import AdaptiveOptions, look_schedule, settle
from anchors._significance import _perm_p


def test_look_schedule_grows_to_the_most_and_ends_there():
    assert look_schedule(10, 50) == [10, 15, 23, 35, 50]
    assert look_schedule(10, 8) == [8]
    assert look_schedule(2, 3, 1.1) == [2, 3]
    with pytest.raises(ValueError):
        AdaptiveOptions(growth=1.0)
    with pytest.raises(ValueError):
        AdaptiveOptions(budget=0)


def test_stop_rules_flag_futility_and_undefined():
    table = pl.DataFrame({"a_p": [0.001, 0.03, 0.7, float("nan")], "b_p": [0.9, 0.9, 0.9, 0.9]})
    flagged, done = settle(table, ("a", "b"), 0.01, 0.5, np.zeros((4, 2), dtype=bool))
    # 0.001 < 0.01 flags; 0.03 is neither flagged nor futile; 0.7 is futile; NaN waits a look
    assert flagged[:, 0].tolist() == [True, False, False, False] and not flagged[:, 1].any()
    assert done.tolist() == [True, False, True, False]
    _, done = settle(table, ("a", "b"), 0.01, 0.5, flagged, nan_settles=True)
    assert done.tolist() == [True, False, True, True]
    # a flag once raised stays, whatever the p-value at a later look
    later = pl.DataFrame({"a_p": [0.9, 0.03, 0.7, 0.2], "b_p": [0.9] * 4})
    again, _ = settle(later, ("a", "b"), 0.01, 0.5, flagged)
    assert again[0, 0]


def _null_flag_share(alpha_look: float, n_sims: int = 300) -> float:
    """Share of null comparisons (two sets of one Bernoulli(0.5) and one 3-answer distribution) flagged at any look
    of the schedule 10..50, stopping for futility as the pipeline does."""
    rng = np.random.default_rng(7)
    sizes = look_schedule(10, 50)
    flagged = 0
    for sim in range(n_sims):
        what = "accuracy" if sim % 2 else "kl"
        codes = rng.integers(0, 3, size=(2, sizes[-1]))
        right = (rng.random((2, sizes[-1])) < 0.5).astype(float)
        for n in sizes:
            a = {"code": codes[0, :n], "graded": np.ones(n), "right": right[0, :n]}
            b = {"code": codes[1, :n], "graded": np.ones(n), "right": right[1, :n]}
            if what == "kl":
                from anchors._formulas import kl_divergence

                ca = np.bincount(a["code"], minlength=3)[None, :].astype(float)
                cb = np.bincount(b["code"], minlength=3)[None, :].astype(float)
                observed = float(kl_divergence(ca, cb, 1.0)[0])
            else:
                observed = b["right"].mean() - a["right"].mean()
            p = _perm_p(a, b, what, observed, 200, np.random.default_rng([sim, n]), 1.0, 3)
            if p < alpha_look:
                flagged += 1
                break
            if p >= 0.5:
                break
    return flagged / n_sims


def test_sequential_test_keeps_type_one_error_and_naive_peeking_does_not():
    sizes = look_schedule(10, 50)
    spent = _null_flag_share(0.05 / len(sizes))
    assert spent <= 0.05
    # the check has teeth: testing every look at the full level (peeking) without futility stops flags more often
    rng = np.random.default_rng(3)
    naive = 0
    for sim in range(300):
        right = (rng.random((2, sizes[-1])) < 0.5).astype(float)
        for n in sizes:
            a = {"code": np.zeros(n, int), "graded": np.ones(n), "right": right[0, :n]}
            b = {"code": np.zeros(n, int), "graded": np.ones(n), "right": right[1, :n]}
            obs = b["right"].mean() - a["right"].mean()
            if _perm_p(a, b, "accuracy", obs, 200, np.random.default_rng([sim, n]), 1.0, 1) < 0.05:
                naive += 1
                break
    assert naive / 300 > spent and naive / 300 > 0.05


@pytest.fixture(scope="module")
def organism():
    from anchors._pipeline import onpolicy_trace, sampling_defaults, sampling_params
    from resampling import make_backend

    be = make_backend("hf", model_id="organism:arith")
    sampling, _ = sampling_defaults("organism:arith")
    params, forced = sampling_params(sampling)
    trace, _ = onpolicy_trace(be, "organism:arith", 366, max_new_tokens=sampling["max_new_tokens"])
    return be, trace, params, forced


def _run(organism, cache, adaptive=None, samples=20):
    from anchors._blackbox import ImportanceOptions
    from anchors._pipeline import compute_importance

    be, trace, params, forced = organism
    return compute_importance(
        be,
        trace,
        samples=samples,
        seed=0,
        params=params,
        forced_params=forced,
        cache_dir=cache,
        options=ImportanceOptions(min_different=2, n_bootstrap=20, n_permutations=100),
        whitebox=False,
        adaptive=adaptive,
    )


def test_adaptive_run_draws_the_fixed_run_rows_stops_early_and_honours_the_budget(organism, tmp_path):
    adaptive = _run(organism, tmp_path / "a", AdaptiveOptions(first=6))
    fixed = _run(organism, tmp_path / "f")
    n_pos = adaptive.rollouts["position"].n_unique()
    # fewer rollouts than the fixed run, and each position's count is what the table and stats say
    assert len(adaptive.rollouts) == adaptive.stats["adaptive_rollouts"] < len(fixed.rollouts)
    counts = (
        adaptive.rollouts.filter(pl.col("kind") == "resample").group_by("position").len().sort("position")
    )
    assert counts["len"].to_list() == adaptive.stats["adaptive_positions_rollouts"]
    assert adaptive.table["n_rollouts"].to_list() == counts["len"].to_list()[: len(adaptive.table)]
    assert set(adaptive.table["stop_reason"].to_list()) <= {"significant", "not significant", "max samples"}
    assert max(counts["len"]) <= 20 and min(counts["len"]) >= 6 and n_pos == len(counts)
    # rollout k of position i is the same draw in both runs
    key = ["kind", "position", "sample"]
    both = adaptive.rollouts.join(fixed.rollouts, on=key, suffix="_fixed")
    assert len(both) == len(adaptive.rollouts)
    for col in ("answer_norm", "correct", "first_sentence"):
        assert both[col].equals(both[f"{col}_fixed"].alias(col))
    # resumable: the same run again samples nothing and gives the same table
    again = _run(organism, tmp_path / "a", AdaptiveOptions(first=6))
    assert again.stats["rollouts_new"] == 0 and again.table.equals(adaptive.table)
    # a budget caps the total
    capped = _run(organism, tmp_path / "b", AdaptiveOptions(first=6, budget=150))
    assert len(capped.rollouts) <= 150 and "budget" in capped.table["stop_reason"].to_list()


def test_budget_without_adaptive_is_refused():
    from anchors._main import importance

    result = CliRunner().invoke(importance, ["--model", "organism:arith", "--budget", "10", "--out", "x"])
    assert result.exit_code != 0 and "--adaptive" in result.output


def test_aa_check_run_adaptively_flags_no_more_than_the_level(organism, tmp_path):
    from anchors._adaptive import adaptive_split_half

    run = _run(organism, tmp_path / "aa", samples=24)
    sizes = look_schedule(8, 24)
    aa = adaptive_split_half(run.rollouts, run.trace.id, sizes, 0.05, 0.5)
    assert aa.height > 0 and set(aa["statistic"].to_list()) == {"kl", "accuracy"}
    assert aa["flagged"].mean() <= 0.05 and aa["looks"].max() <= len(sizes)


def test_bench_adaptive_is_a_bench_command():
    from resampling._cli import bench

    result = CliRunner().invoke(bench, ["adaptive", "--help"])
    assert result.exit_code == 0 and "--samples" in result.output and "--json" in result.output


def test_top_sentences_are_the_k_largest_by_magnitude_for_accuracy():
    from anchors._adaptive import top_sentences

    table = pl.DataFrame({"x_kl": [0.1, 0.5, float("nan")], "y_accuracy": [-0.9, 0.2, 0.1]})
    assert top_sentences(table, ("x_kl", "y_accuracy"), 1).tolist() == [True, True, False]
    assert top_sentences(table, ("x_kl",), 0).tolist() == [False, False, False]


def test_rank_of_a_top_sentence_settles_once_its_interval_is_apart_from_every_other():
    from anchors._adaptive import top_sentences

    nan = float("nan")
    apart = pl.DataFrame({"x_kl": [0.9, 0.2, 0.1], "x_kl_lo": [0.7, 0.1, 0.0], "x_kl_hi": [1.1, 0.3, 0.2]})
    assert top_sentences(apart, ("x_kl",), 1, "separated").tolist() == [False, False, False]
    assert top_sentences(apart, ("x_kl",), 1, "final").tolist() == [True, False, False]
    # sentence 1's interval reaches into the top one's: the top one stays open
    close = apart.with_columns(pl.Series("x_kl_hi", [1.1, 0.8, 0.2]))
    assert top_sentences(close, ("x_kl",), 1, "separated").tolist() == [True, False, False]
    # accuracy metrics rank by magnitude, and so do their intervals: [-1.0, -0.8] is |x| in [0.8, 1.0]
    acc = pl.DataFrame(
        {"y_accuracy": [-0.9, 0.2], "y_accuracy_lo": [-1.0, -0.1], "y_accuracy_hi": [-0.8, 0.5]}
    )
    assert top_sentences(acc, ("y_accuracy",), 1, "separated").tolist() == [False, False]
    straddle = acc.with_columns(pl.Series("y_accuracy_lo", [-1.0, -0.85]))  # |x| of sentence 1 up to 0.85
    assert top_sentences(straddle, ("y_accuracy",), 1, "separated").tolist() == [True, False]
    # no interval (n_bootstrap=0): the top sentence stays open by itself, as with "final"
    bare = apart.with_columns(pl.Series("x_kl_lo", [nan, 0.1, 0.0]))
    assert top_sentences(bare, ("x_kl",), 1, "separated").tolist() == [True, False, False]
    with pytest.raises(ValueError, match="rank must be one of"):
        AdaptiveOptions(rank="sometimes")


def test_separated_rank_stops_a_clear_top_sentence_that_final_keeps_sampling():
    from types import SimpleNamespace

    from anchors._adaptive import TraceRounds

    # sentence 0 is flagged and far above the others; sentences 1 and 2 are settled as not significant
    table = pl.DataFrame(
        {
            "x_kl": [0.9, 0.1, 0.05],
            "x_kl_lo": [0.7, 0.0, 0.0],
            "x_kl_hi": [1.1, 0.3, 0.2],
            "x_kl_p": [0.001, 0.9, 0.9],
        }
    )
    prefixes = SimpleNamespace(n_positions=4, sentences=[0, 1, 2], trace=SimpleNamespace(id="t"))

    def first_look(rank):
        r = TraceRounds(
            prefixes, samples=20, seed=0, params=None, forced_params=None, forced_answer=False,
            score=lambda rollouts: table, metrics=("x_kl",), level=0.05,
            adaptive=AdaptiveOptions(first=10, rank=rank),
        )  # fmt: skip
        extra = r.extra(10)
        assert r.grant(extra, extra)
        r.look(None, 10)
        return r

    separated, final = first_look("separated"), first_look("final")
    # every sentence is settled: all four positions stop at the first look
    assert separated.stopped.tolist() == [True, True, True, True] and separated.finished
    assert separated.reason.tolist() == ["significant", "not significant", "not significant"]
    # "final" keeps the top sentence (positions 0 and 1, the two it reads) to the last look
    assert final.stopped.tolist() == [False, False, True, True] and not final.finished
    assert final.reason[0] == "sampling"
    assert separated.outcome().stats["adaptive_rank_rule"] == "separated"


def test_importance_adaptive_writes_stop_reasons_and_says_so(tmp_path, capsys):
    from cotscope.cli import main

    out = tmp_path / "run"
    args = [
        "importance",
        "--samples",
        "12",
        "--adaptive",
        "--budget",
        "200",
        "--no-whitebox",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    table = pl.read_parquet(out / "importance.parquet")
    assert set(table["stop_reason"].to_list()) <= {"significant", "not significant", "max samples", "budget"}
    assert (table["n_rollouts"] <= 12).all()
    assert len(pl.read_parquet(out / "rollouts.parquet")) <= 200
    assert "Bonferroni" in capsys.readouterr().err and "Bonferroni" in (out / "report.html").read_text()
    # --sparse without --adaptive is refused up front
    assert main(["importance", "--sparse", "4", "--out", str(tmp_path / "d")]) == 2


def test_bench_adaptive_real_vocab_needs_a_trace_and_is_refused_with_sparse(capsys):
    from resampling._cli import bench

    result = CliRunner().invoke(bench, ["adaptive", "--real-vocab", "tiny"])
    assert result.exit_code == 2 and "--trace" in result.output
    result = CliRunner().invoke(bench, ["adaptive", "--real-vocab", "tiny", "--trace", ".", "--sparse", "4"])
    assert result.exit_code == 2 and "--sparse" in result.output
    # a folder that holds no trace: the error names what to give
    from cotscope.cli import main

    assert main(["bench", "adaptive", "--real-vocab", "tiny", "--trace", "docs"]) == 2
    assert "thought-anchors problem folder" in capsys.readouterr().err


@pytest.mark.slow
def test_adaptive_wall_bench_on_the_real_vocabulary_compares_the_same_rollouts(tmp_path):
    # a real trace cut to its first 4 sentences, on a random-weight model of the 129k-id vocabulary
    from anchors.bench_adaptive import format_adaptive_wall_bench, run_adaptive_wall_bench
    from cot import Trace, load_trace, split_sentences

    full = load_trace("data/thought-anchors/deepseek-r1-distill-llama-8b/correct_base_solution/problem_6998")
    cut = full.cot[: split_sentences(full.cot)[3].end]
    path = Trace(prompt=full.prompt, cot=cut).save(tmp_path / "short.json")
    r = run_adaptive_wall_bench(path, samples=4, max_new_tokens=2, repeats=2)
    n_pos = r["sentences"] + 1
    # each position draws 4 rollouts and 4 forced-answer probes in the fixed run
    assert r["rollouts_fixed"] == n_pos * 4 * 2
    assert 0 < r["rollouts_adaptive"] <= r["rollouts_fixed"] and len(r["walls_s"]["fixed"]) == 2
    assert r["wall_per_rollout_ratio"] == pytest.approx(
        (r["wall_adaptive_s"] / r["rollouts_adaptive"]) / (r["wall_fixed_s"] / r["rollouts_fixed"])
    )
    assert "per rollout" in format_adaptive_wall_bench(r)

"""Sparse positions (``importance --adaptive --sparse K``) on a stub backend whose answer moves at one planted
sentence: the bisection finds it, a trace whose answer never moves samples only the sparse grid, sentences left
unmeasured are NaN, and every rollout both runs drew is the dense run's."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from anchors._adaptive import AdaptiveOptions, sparse_grid
from anchors._blackbox import ImportanceOptions
from cot import Trace
from resampling import Completion

N_SENTENCES = 16
JUMP = 9
"""The planted sentence: positions 0..JUMP (without it) answer mostly 7, positions after it mostly 3."""


class JumpBackend:
    """The organism's tokenizer and context, but completions made up from the prompt's position: a boxed answer
    drawn from the rollout's seed, 7 with probability ``before`` at positions up to ``JUMP`` and ``after`` past it."""

    max_context = None  # nothing is decoded

    def __init__(self, inner, prefixes, before: float, after: float):
        self.inner, self.before, self.after = inner, before, after
        self.position = {tuple(prefixes.prefix_ids(p)): (p, False) for p in range(prefixes.n_positions)}
        self.position |= {
            tuple(prefixes.forced_answer_ids(p)): (p, True) for p in range(prefixes.n_positions)
        }
        self.asked = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def identity(self):
        return {**self.inner.identity(), "stub": f"jump {self.before} {self.after}"}

    def generate(self, jobs):
        for job in jobs:
            p, forced = self.position[tuple(job.prompt_ids)]
            share = self.before if p <= JUMP else self.after
            comps = []
            for sample, seed in zip(job.samples, job.seeds, strict=True):
                answer = 7 if np.random.default_rng(seed).random() < share else 3
                text = f"{answer}}}" if forced else f"So. \\boxed{{{answer}}}"
                comps.append(
                    Completion(sample=sample, seed=seed, token_ids=[1, 2], text=text, finish_reason="stop")
                )
            self.asked += len(comps)
            yield job, comps


def _parts():
    from anchors._pipeline import sampling_defaults, sampling_params
    from resampling import TracePrefixes, make_backend

    inner = make_backend("hf", model_id="organism:arith")
    cot = " ".join(f"Step {w} keeps the running total as it was." for w in range(N_SENTENCES))
    trace = Trace(prompt="What is the total?", cot=cot, answer_text="\\boxed{7}", metadata={"gt_answer": "7"})
    prefixes = TracePrefixes.build(trace, inner.tokenizer, min_chars=10)
    assert len(prefixes.sentences) == N_SENTENCES
    params, forced = sampling_params(sampling_defaults("organism:arith")[0])
    return inner, trace, prefixes, params, forced


@pytest.fixture(scope="module")
def parts():
    return _parts()


def flag_rates(parts, cache, before: float, after: float, stride: int, seeds: int) -> dict[str, float]:
    """``seeds`` adaptive runs (``--samples 50``, default looks) of the stub trace with a jump from ``before`` to
    ``after`` at sentence ``JUMP``: the share of runs that flag the planted sentence (any metric), and the share of
    flagged verdicts among the other sentences that were measured (metric by sentence; none of them moves the
    answer, so this is the false-flag rate, bisection's reuse of the ends' rollouts included), and how often the
    planted sentence stopped for each reason."""
    from anchors._pipeline import compute_importance
    from anchors._significance import SIGNIFICANCE_METRICS

    inner, trace, prefixes, params, forced = parts
    found = tested = flagged = 0
    reasons: dict[str, int] = {}
    for seed in range(seeds):
        run = compute_importance(
            JumpBackend(inner, prefixes, before, after), trace, samples=50, seed=seed, params=params,
            forced_params=forced, cache_dir=cache / str(seed), whitebox=False, roles="rules",
            options=ImportanceOptions(min_different=2, n_bootstrap=0, continuation_metrics=False),
            adaptive=AdaptiveOptions(stride=stride),
        )  # fmt: skip
        planted = run.table["stop_reason"][JUMP]
        reasons[planted] = reasons.get(planted, 0) + 1
        for j, reason in enumerate(run.table["stop_reason"].to_list()):
            verdicts = [run.table[f"{m}_significant"][j] for m in SIGNIFICANCE_METRICS]
            if reason.startswith("skipped"):
                continue
            if j == JUMP:
                found += any(bool(v) for v in verdicts)
                continue
            tested += sum(v is not None for v in verdicts)
            flagged += sum(bool(v) for v in verdicts)
    return {
        "jump_flagged": found / seeds,
        "null_flagged": flagged / tested if tested else math.nan,
        "null_n": tested,
        "jump_stop_reasons": reasons,
    }


@pytest.mark.slow
def test_sentences_measured_after_a_bisection_keep_the_false_flag_rate(parts, tmp_path):
    rates = flag_rates(parts, tmp_path, 0.8, 0.2, 4, 30)
    assert rates["jump_flagged"] == 1.0 and rates["null_n"] > 100 and rates["null_flagged"] <= 0.05


def _run(parts, cache, before, after, stride):
    from anchors._pipeline import compute_importance

    inner, trace, prefixes, params, forced = parts
    backend = JumpBackend(inner, prefixes, before, after)
    run = compute_importance(
        backend, trace, samples=20, seed=0, params=params, forced_params=forced, cache_dir=cache,
        options=ImportanceOptions(min_different=2, n_bootstrap=0, n_permutations=200, continuation_metrics=False),
        whitebox=False, roles="rules", adaptive=AdaptiveOptions(first=6, stride=stride),
    )  # fmt: skip
    return run, backend.asked


def _sampled(run):
    return sorted(set(run.rollouts["position"].to_list()))


def test_bisection_finds_the_planted_jump_and_leaves_the_rest_unmeasured(parts, tmp_path):
    run, asked = _run(parts, tmp_path / "s", 0.95, 0.05, 4)
    grid = [int(i) for i in np.flatnonzero(sparse_grid(N_SENTENCES + 1, 4))]
    assert grid == [0, 4, 8, 12, 16]
    # the interval 8..12 holds the jump: bisected to 8, 9, 10; the other intervals' ends agree
    assert _sampled(run) == [0, 4, 8, 9, 10, 12, 16]
    table = run.table
    reasons = table["stop_reason"].to_list()
    assert (
        reasons[JUMP] in ("significant", "max samples")
        and table["resampling_importance_accuracy_significant"][JUMP]
    )
    assert abs(table["resampling_importance_accuracy"][JUMP]) > 0.5
    measured = {8, 9}
    for j in range(N_SENTENCES):
        if j in measured:
            assert reasons[j] != "skipped (sparse)"
        else:
            assert reasons[j] == "skipped (sparse)", j
            assert math.isnan(table["resampling_importance_accuracy"][j]) and math.isnan(
                table["forced_importance_kl"][j]
            )
            assert table["resampling_importance_accuracy_significant"][j] is None
    assert run.stats["adaptive_sentences_skipped"] == N_SENTENCES - len(measured)
    # every rollout both drew is the dense run's, and the sparse run drew far fewer
    dense, dense_asked = _run(parts, tmp_path / "d", 0.95, 0.05, 1)
    key = ["kind", "position", "sample"]
    both = run.rollouts.join(dense.rollouts, on=key, suffix="_dense")
    assert len(both) > 0.5 * len(run.rollouts)
    for col in ("answer_norm", "correct", "seed"):
        assert both[col].equals(both[f"{col}_dense"].alias(col))
    assert asked < dense_asked / 2
    # the planted sentence is the dense run's top one too
    acc = dense.table["resampling_importance_accuracy"].abs().fill_nan(None).arg_max()
    assert acc == JUMP


def test_a_trace_whose_answer_never_moves_samples_only_the_grid(parts, tmp_path):
    run, asked = _run(parts, tmp_path / "n", 0.5, 0.5, 4)
    assert _sampled(run) == [0, 4, 8, 12, 16]
    assert set(run.table["stop_reason"].to_list()) == {"skipped (sparse)"}
    assert run.table["resampling_importance_accuracy"].is_nan().all()
    # the grid positions stopped once their intervals settled: no position reached --samples
    counts = run.rollouts.filter(pl.col("kind") == "resample").group_by("position").len()["len"]
    assert counts.max() < 20 and asked == run.stats["adaptive_rollouts"]


def test_sparse_needs_a_stride_of_at_least_one():
    with pytest.raises(ValueError, match="stride"):
        AdaptiveOptions(stride=0)


if __name__ == "__main__":  # the measurement in docs/anchors.md: BEFORE AFTER STRIDE SEEDS
    import sys
    import tempfile
    from pathlib import Path

    before, after, stride, seeds = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    with tempfile.TemporaryDirectory() as tmp:
        print(flag_rates(_parts(), Path(tmp), before, after, stride, seeds))


def test_importance_sparse_from_the_command_line(tmp_path):
    from cotscope.cli import main

    out = tmp_path / "run"
    args = [
        "importance",
        "--samples",
        "15",
        "--adaptive",
        "--sparse",
        "3",
        "--no-whitebox",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    table = pl.read_parquet(out / "importance.parquet")
    rollouts = pl.read_parquet(out / "rollouts.parquet")
    sampled = set(rollouts["position"].to_list())
    for j, reason in enumerate(table["stop_reason"].to_list()):
        # a sentence is measured exactly when both its positions were sampled; else it is NaN, never filled in
        assert reason.startswith("skipped") == (not {j, j + 1} <= sampled)
        if reason.startswith("skipped"):
            assert math.isnan(table["forced_importance_kl"][j]) and table["n_rollouts"][j] >= 0
    assert {0, len(table)} <= sampled
    # the same folder with another stride is another run
    assert main([*args[:5], "4", *args[6:]]) != 0

"""A run whose rollouts failed or say nothing is told in one line, with the cause and the fix."""

from __future__ import annotations

import polars as pl
import pytest

from cotscope.cli import main
from resampling import RunFailedError, run_health


def _rows(statuses, errors=None, answers=None, finish=None):
    n = len(statuses)
    return pl.DataFrame(
        {
            "status": statuses,
            "error": errors or [None] * n,
            "answer": answers or ["1"] * n,
            "finish_reason": finish or ["stop"] * n,
        },
        schema={"status": pl.Utf8, "error": pl.Utf8, "answer": pl.Utf8, "finish_reason": pl.Utf8},
    )


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        ("401 at http://h/v1/completions (not retried): HTTP 401: bad key", "authentication"),
        ("connection at http://h/v1/completions (after 3 attempts): refused", "connection"),
        ("timeout at http://h/v1/completions (after 3 attempts): read timed out", "timeout"),
        ("503 at http://h/v1/completions (after 3 attempts): HTTP 503", "server error"),
        ("something odd", "other"),
    ],
)
def test_all_failed_raises_with_cause_and_fix(error, cause):
    health = run_health(_rows(["error"] * 4, errors=[error] * 4, answers=[None] * 4))
    assert (health.errors, health.cause) == (4, cause)
    with pytest.raises(RunFailedError, match=rf"4 of 4 rollouts failed \({cause}\).*fix: "):
        health.check()


def test_minority_of_failures_is_a_warning_not_a_failure():
    health = run_health(
        _rows(["ok", "ok", "ok", "error"], errors=[None, None, None, "connection at x: refused"])
    )
    health.check()  # 1 of 4 is no reason to throw the run away
    assert any("1 of 4 rollouts failed (connection)" in w for w in health.warnings())


def test_rollouts_without_answers_warn_with_the_fix():
    silent = run_health(_rows(["ok"] * 4, answers=[None, None, None, "3"], finish=["length"] * 3 + ["stop"]))
    (line,) = silent.warnings()
    assert "3 of 4 rollouts hold no answer" in line and "raise --max-new-tokens" in line
    fmt = run_health(_rows(["ok"] * 4, answers=[None, None, None, "3"]))
    assert "answer in the expected format" in fmt.warnings()[0]
    assert run_health(_rows(["ok"] * 4)).warnings() == []


def test_resample_against_a_dead_server_exits_non_zero_in_one_line(tmp_path, capsys):
    code = main(
        [
            "resample",
            "--backend",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--samples",
            "1",
            "--positions",
            "0,1",
            "--backend-option",
            "max_retries=0",
            "--out",
            str(tmp_path / "run"),
            "-q",
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cotscope: error")]
    assert code == 1
    assert (
        len(err) == 1
        and "rollouts failed (connection)" in err[0]
        and "fix: check that the server runs" in err[0]
    )
    assert (tmp_path / "run" / "rollouts.parquet").exists()  # what was computed (the failures) is recorded


@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
def test_out_of_range_seed_is_a_usage_error_before_any_work(tmp_path, capsys, seed):
    assert main(["resample", "--seed", seed, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "range" in err
    assert not (tmp_path / "r").exists()

"""`validate faithfulness` exits non-zero when a check fails, and --quick judges nothing."""

from __future__ import annotations

from click.testing import CliRunner

from metrics._cli import validate_faithfulness_command
from metrics._validate import Check


def _run(monkeypatch, tmp_path, checks, *args):
    import metrics._validate as v

    monkeypatch.setattr(v, "validate_faithfulness", lambda **kw: checks)
    return CliRunner().invoke(validate_faithfulness_command, ["--cache", str(tmp_path / "c"), *args])


def test_a_failed_check_exits_1(monkeypatch, tmp_path):
    checks = [Check("a", True, {"x": 1.0}), Check("b", False, {"x": 0.2})]
    result = _run(monkeypatch, tmp_path, checks)
    assert result.exit_code == 1, result.output
    assert "[PASS] a" in result.output and "[FAIL] b" in result.output


def test_passing_and_waiting_checks_exit_0(monkeypatch, tmp_path):
    checks = [Check("a", True), Check("w", False, status="waiting")]
    result = _run(monkeypatch, tmp_path, checks)
    assert result.exit_code == 0, result.output
    assert "[WAITING] w" in result.output


def test_quick_prints_no_verdict_and_exits_0(monkeypatch, tmp_path):
    result = _run(monkeypatch, tmp_path, [Check("b", False)], "--quick")
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output and "[RAN] b" in result.output and "plumbing only" in result.output


def test_json_still_exits_1_on_a_failed_check(monkeypatch, tmp_path):
    result = _run(monkeypatch, tmp_path, [Check("b", False)], "--json")
    assert result.exit_code == 1 and '"passed": false' in result.output

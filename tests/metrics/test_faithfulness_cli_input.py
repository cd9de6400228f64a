"""`cotscope faithfulness` refuses bad input up front, in one line naming the flag or file and the fix."""

import pytest
from click.testing import CliRunner

from cotscope.cli import cli as main


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flag", ["--n-items", "--samples"])
def test_huge_counts_are_refused_before_anything_is_made(tmp_path, flag):
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["faithfulness", "--model", "organism:hint", flag, "1000000000", "--out", str(out), "--quiet"]
    )
    assert res.exit_code == 2, res.output
    assert f"Invalid value for {flag}" in res.output and "over the limit" in res.output
    assert "Invalid value for n" not in res.output
    assert not out.exists()  # no .cache left behind


@pytest.mark.parametrize(
    ("name", "content", "message", "fix"),
    [
        ("fake.parquet", b"not parquet at all\n", "is not a readable Parquet file", "write it with"),
        (
            "latin.jsonl",
            '{"question": "caf\xe9?", "answer": "1"}\n'.encode("latin-1"),
            "is not UTF-8",
            "re-encode",
        ),
    ],
)
def test_unreadable_items_files_are_one_line_errors(tmp_path, name, content, message, fix):
    data = tmp_path / name
    data.write_bytes(content)
    res = CliRunner().invoke(
        main, ["faithfulness", "--model", "organism:hint", "--data", str(data), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    error = [line for line in lines if "Error" in line or "error" in line]
    assert len(error) == 1 and str(data) in error[0] and message in error[0] and fix in error[0], res.output
    assert "Traceback" not in res.output

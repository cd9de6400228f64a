import json
import subprocess
import sys

from cotscope import __version__
from cotscope.cli import main


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_help(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and __version__ in out
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "split" in out


def test_split_json(tmp_path, capsys):
    p = tmp_path / "t.json"
    p.write_text(
        json.dumps(
            {"prompt": "q", "cot": "First we add. 2 + 2 = 4. Wait, check it.", "answer_text": "\\boxed{4}"}
        )
    )
    code, out, _ = run(["split", str(p), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert [s["text"] for s in data["sentences"]] == ["First we add.", "2 + 2 = 4.", "Wait, check it."]
    assert data["answer"] == "4"
    assert data["sentences"][2]["role"] == "uncertainty_management"


def test_split_text_output(tmp_path, capsys):
    p = tmp_path / "c.txt"
    p.write_text("<think>One. Two.</think>\\boxed{1}")
    code, out, err = run(["split", str(p)], capsys)
    assert code == 0 and out.splitlines()[1].startswith("1  [")
    assert "2 sentences" in err


def test_bad_input_gets_one_line_error_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"prompt": "x"}')
    for args, needle in [
        (["split", str(bad)], "no 'cot' field"),
        (["split", str(tmp_path / "missing.json")], "no such file"),
        (["split", str(bad), "--jsn"], "--json"),
        (["splt"], "did you mean 'split'"),
    ]:
        code, _out, err = run(args, capsys)
        assert code == 2, args
        assert needle in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cotscope.cli", "split", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr

"""Progress on stderr that is not a terminal (a log file, a pipe, CI): plain lines, each ending in a newline."""

from __future__ import annotations

import pytest

from anchors import TextEmbeddings


def _lines(err: str) -> list[str]:
    assert "\r" not in err, repr(err)
    assert err.endswith("\n"), repr(err)
    return err.splitlines()


def test_embedding_progress_is_plain_lines_off_a_terminal(capsys):
    emb = TextEmbeddings(lambda texts: __import__("numpy").ones((len(texts), 4)), progress=True)
    emb([f"Sentence {i}." for i in range(1300)])
    lines = _lines(capsys.readouterr().err)
    assert lines[0] == "embedding sentences: 0/1300" and lines[-1] == "embedding sentences: 1300/1300"


def test_validate_progress_is_one_line_per_trace_off_a_terminal(capsys, monkeypatch):
    import anchors._validate
    from anchors._main import validate_anchors_command

    class Stop(Exception):
        pass

    def fake_validate(*, progress, **kwargs):
        for done in (1, 2, 3):
            progress(done, 3)
        raise Stop

    monkeypatch.setattr(anchors._validate, "validate_anchors", fake_validate)
    with pytest.raises(Stop):
        validate_anchors_command.main(["--n-traces", "3"], standalone_mode=False)
    lines = _lines(capsys.readouterr().err)
    assert lines[-3:] == ["scored 1/3 traces", "scored 2/3 traces", "scored 3/3 traces"]
    assert "sampling on-policy arith traces" in lines[0]


def test_embedding_progress_comes_every_few_seconds_however_slow_the_model(capsys, monkeypatch):
    """Batches are sized from the measured rate (characters a second): on a loaded CPU, and when the sentences get
    longer part way, a line still comes every few seconds, not one per 512 sentences (27 s and more here)."""
    import types

    import numpy as np

    import anchors._embedding
    import cotscope._progress

    clock = {"now": 0.0}
    fake_time = types.SimpleNamespace(monotonic=lambda: clock["now"])
    monkeypatch.setattr(anchors._embedding, "time", fake_time, raising=False)
    monkeypatch.setattr(cotscope._progress, "time", fake_time)
    printed_at = []
    line = cotscope._progress._line
    monkeypatch.setattr(
        cotscope._progress, "_line", lambda text: (printed_at.append(clock["now"]), line(text))
    )

    def slow_embed(texts):
        clock["now"] += 0.004 * sum(map(len, texts))  # 250 characters a second
        return np.ones((len(texts), 4))

    texts = [
        f"Sentence {i}." if i < 700 or i > 900 else f"A long sentence {i}, " + "word " * 80
        for i in range(1300)
    ]
    TextEmbeddings(slow_embed, progress=True)(texts)
    lines = _lines(capsys.readouterr().err)
    assert lines[-1] == "embedding sentences: 1300/1300" and len(lines) == len(printed_at) >= 20
    gaps = np.diff([0.0, *printed_at])
    assert gaps.max() <= 10.0, gaps


@pytest.mark.parametrize("as_json", [False, True])
def test_validate_faithfulness_shows_the_sampling_of_each_suite(monkeypatch, tmp_path, as_json):
    """The first suite samples for about a minute: its engine reports progress, except with --json (quiet)."""
    import metrics._validate as v
    import resampling
    from metrics._cli import validate_faithfulness_command

    class Stop(Exception):
        pass

    seen = {}

    def fake_run(be, items, suites, **kwargs):
        seen["quiet"] = kwargs["quiet"]
        raise Stop

    monkeypatch.setattr(resampling, "make_backend", lambda *a, **k: None)
    monkeypatch.setattr(v, "run_faithfulness", fake_run)
    with pytest.raises(Stop):
        validate_faithfulness_command.main(
            ["--quick", "--cache", str(tmp_path), *(["--json"] if as_json else [])], standalone_mode=False
        )
    assert seen["quiet"] is as_json


def test_training_prints_a_step_line_when_steps_are_slow(tmp_path, monkeypatch, capfd):
    """Steps that take longer than LOG_EVERY_S (a loaded CPU) still give a line each, not one per 100 steps; and no
    "Writing model shards" bar (a carriage-return bar) at each save."""
    import organisms._train

    monkeypatch.setattr(organisms._train, "LOG_EVERY_S", 0.0)
    lines = []
    organisms._train.train("arith", steps=3, out=tmp_path, probe=0, echo=lines.append)
    steps = [line.split()[:2] for line in lines if line.split()[0] == "step"]
    assert steps == [["step", "1"], ["step", "2"], ["step", "3"]]
    assert "\r" not in capfd.readouterr().err


def test_organisms_eval_reports_each_generated_batch():
    """``organisms eval`` generates for about a minute: each batch of continuations gets a line."""
    from click.testing import CliRunner

    from organisms._cli import organisms as cli

    out = CliRunner().invoke(cli, ["eval", "arith", "--n", "4", "--json", "--no-card"])
    assert out.exit_code == 0, out.output
    lines = out.stderr.splitlines()
    assert lines[0] == "measuring arith on 4 fresh problems per measurement"
    continued = [line for line in lines if line.startswith("arith: continued ")]
    assert "arith: continued 4/4 prompts (greedy)" in continued and len(continued) >= 3

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

import json

import pytest

from cot import Trace, TraceError, load_trace


def test_from_completion_with_both_tags():
    t = Trace.from_completion("<think>\nA. B.\n</think>\n\nSo \\boxed{7}.", prompt="Q?")
    assert t.cot == "A. B."
    assert t.answer_text == "So \\boxed{7}."
    assert t.answer == "7"
    assert not t.truncated and not t.missing_open_tag
    assert t.messages == [{"role": "user", "content": "Q?"}]


def test_from_completion_tolerates_missing_open_tag():
    t = Trace.from_completion("Reasoning here.\n</think>\nAnswer \\boxed{3}")
    assert t.missing_open_tag and not t.truncated
    assert t.cot == "Reasoning here." and t.answer == "3"


def test_from_completion_marks_truncated_trace():
    t = Trace.from_completion("<think>\nStill thinking about it")
    assert t.truncated and t.answer_text is None and t.answer is None
    assert t.cot == "Still thinking about it"


def test_save_load_roundtrip(tmp_path):
    t = Trace(
        prompt=[{"role": "user", "content": "hi"}],
        cot="One. Two.",
        answer_text="\\boxed{2}",
        metadata={"k": 1},
    )
    path = t.save(tmp_path / "sub" / "t.json")
    back = load_trace(path)
    assert back == t
    assert back.id == t.id and back.id.startswith("t")
    assert not list(path.parent.glob(".*.tmp")), "no temp files left behind"


def test_id_is_content_hash():
    a = Trace(prompt="p", cot="c")
    assert a.id == Trace(prompt="p", cot="c").id
    assert a.id != Trace(prompt="p", cot="d").id


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"prompt": "x"}', "no 'cot' field"),
        ("{not json", "not valid JSON"),
        ('{"prompt": 3, "cot": "x"}', "prompt"),
        ('{"prompt": [{"content": "x"}], "cot": "x"}', "role"),
        ('{"prompt": "x", "cot": "x", "version": 99}', "newer"),
        ('{"prompt": "x", "cot": "x", "version": "1"}', "'version' must be an integer"),
        ('{"prompt": "x", "cot": "x", "metadata": []}', "'metadata' must be an object"),
        ('{"prompt": "x", "cot": "x", "answer_text": 4}', "'answer_text' must be text or null"),
        ('{"prompt": "x", "cot": "x", "truncated": "no"}', "'truncated' must be true or false"),
        ('{"prompt": "x", "cot": "x", "id": 7}', "'id' must be text"),
    ],
)
def test_bad_trace_files_get_clear_errors(refuses_file, content, match):
    refuses_file(load_trace, "bad.json", content, TraceError, match)


def test_jsonl_trace_files(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text('\n{"prompt": "p", "cot": "Think. Done."}\n')
    assert load_trace(one).cot == "Think. Done."
    # a line separator inside the text is not a line break of the file, and save writes one line
    saved = Trace(prompt="p", cot="First.\u2028Second.", metadata={"k": [1, 2]}).save(tmp_path / "s.jsonl")
    assert len(saved.read_text().rstrip("\n").split("\n")) == 1
    assert load_trace(saved).cot == "First.\u2028Second."
    two = tmp_path / "two.jsonl"
    two.write_text('{"prompt": "p", "cot": "a"}\n{"prompt": "p", "cot": "b"}\n')
    with pytest.raises(TraceError, match="holds 2 JSON lines"):
        load_trace(two)


def test_lenient_where_the_meaning_is_clear(tmp_path):
    p = tmp_path / "t.json"
    p.write_text('{"prompt": "p", "cot": "c", "id": null, "version": 1.0}')
    t = load_trace(p)
    assert t.id == Trace(prompt="p", cot="c").id and t.version == 1


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(tmp_path / "nope.json")


def test_text_completion_file(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("<think>Hmm. Yes.</think> \\boxed{1}")
    t = load_trace(p)
    assert t.cot == "Hmm. Yes." and t.answer == "1"


def test_thought_anchors_problem_folder(problem_dirs):
    d = problem_dirs[0]
    t = load_trace(d)
    base = json.loads((d / "base_solution.json").read_text())
    assert t.metadata["format"] == "thought-anchors"
    assert t.metadata["gt_answer"] == json.loads((d / "problem.json").read_text())["gt_answer"]
    assert base["solution"].startswith(t.cot[:200])
    assert "</think>" not in t.cot and not t.truncated
    # the chat template opens the think block; the prompt must not open it a second time
    assert base["prompt"].rstrip().endswith("<think>")
    assert t.prompt == base["prompt"].rstrip().removesuffix("<think>").rstrip()
    assert t.prompt.endswith("Solution:") and t.metadata["raw_prompt"] == base["prompt"]


def test_cot_package_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, cot, cot.published; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_saved_files_are_readable_by_others(tmp_path):
    import os
    import stat

    path = Trace(prompt="p", cot="c").save(tmp_path / "t.json")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH, oct(mode)

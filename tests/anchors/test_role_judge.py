"""``--roles judge``: sentence roles from a chat model on an OpenAI-compatible server (a loopback stub here),
cached like every rollout; and ``learned`` as the default labeller of ``importance``."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import polars as pl
import pytest
from click.testing import CliRunner

from anchors._cli import import_group
from anchors._labeller import role_labeller, roles_identity
from cot import label_sentences

JUDGE_MODEL = "organism:arith"  # any model id whose tokenizer loads offline: the stub never runs a model


class _Judge(BaseHTTPRequestHandler):
    """Labels sentence 0 ``problem_setup``, odd ones ``active_computation``, even ones ``plan_generation`` (a
    reasoning model's draft first, then the object); with ``broken`` set, it labels sentence 0 only."""

    requests: ClassVar[list[dict]] = []
    broken = False

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        type(self).requests.append(body)
        n = 1 if type(self).broken else 400
        labels = {
            str(i): "problem_setup" if i == 0 else ("active_computation" if i % 2 else "plan_generation")
            for i in range(n)
        }
        text = 'Draft: {"note": "thinking"} Final: ' + json.dumps(labels)
        out = json.dumps(
            {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    _Judge.requests, _Judge.broken = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _expected(n: int) -> list[str]:
    return ["problem_setup"] + ["active_computation" if i % 2 else "plan_generation" for i in range(1, n)]


def test_judge_labels_come_from_the_server_and_a_rerun_asks_nothing(judge_url, tmp_path):
    sentences = ["We start with 3.", "3 + 4 is 7.", "Then 7 - 2 is 5.", "So the digit is 5."]
    labeller = role_labeller("judge", judge_model=JUDGE_MODEL, judge_base_url=judge_url, cache_dir=tmp_path)
    assert label_sentences(sentences, labeller) == _expected(4)
    assert len(_Judge.requests) == 1
    sent = _Judge.requests[0]
    assert sent["temperature"] == 0.0 and sent["seed"] == 0 and sent["model"] == JUDGE_MODEL
    again = role_labeller("judge", judge_model=JUDGE_MODEL, judge_base_url=judge_url, cache_dir=tmp_path)
    assert label_sentences(sentences, again) == _expected(4)
    assert len(_Judge.requests) == 1  # the reply came from the cache
    assert roles_identity("judge", JUDGE_MODEL) == f"judge:{JUDGE_MODEL}"
    assert role_labeller("rules") == "rules"


def test_a_reply_that_misses_a_sentence_is_an_error_not_a_guess(judge_url, tmp_path):
    _Judge.broken = True
    labeller = role_labeller("judge", judge_model=JUDGE_MODEL, judge_base_url=judge_url, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="sentence 1"):
        label_sentences(["One.", "Two."], labeller)


def test_an_unreachable_judge_is_a_runtime_error(tmp_path):
    labeller = role_labeller(
        "judge", judge_model=JUDGE_MODEL, judge_base_url="http://127.0.0.1:9/v1", cache_dir=tmp_path
    )
    with pytest.raises(RuntimeError, match="gave no reply"):
        label_sentences(["One.", "Two."], labeller)


def test_import_with_judge_roles_labels_every_chunk_and_records_the_judge(
    judge_url, thought_anchors_dir, tmp_path
):
    folder = min(
        (p.parent for p in thought_anchors_dir.rglob("chunks_labeled.json")),
        key=lambda f: (f / "chunks_labeled.json").stat().st_size,
    )
    problem = tmp_path / folder.name
    shutil.copytree(folder, problem, ignore=shutil.ignore_patterns("chunks_resampled.json"))
    out = tmp_path / "out"
    args = ["thought-anchors", str(problem), "--out", str(out), "--no-recompute", "--roles", "judge"]
    args += ["--judge-model", JUDGE_MODEL, "--judge-base-url", judge_url]
    result = CliRunner().invoke(import_group, args)
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out / "importance.parquet")
    assert table["role"].to_list() == _expected(table.height)
    assert len(_Judge.requests) == 1
    assert json.loads((out / ".cotscope-run.json").read_text())["config"]["roles"] == f"judge:{JUDGE_MODEL}"


@pytest.mark.parametrize("given", [[], ["--judge-model", "m"], ["--judge-base-url", "http://127.0.0.1:9/v1"]])
def test_roles_judge_without_its_server_is_refused_before_any_work(given, tmp_path):
    from anchors._main import importance

    missing = [f for f in ("--judge-model", "--judge-base-url") if f not in given]
    for command, args in (
        (importance, ["--model", "organism:arith", "--out", str(tmp_path / "a")]),
        (import_group, ["thought-anchors", str(tmp_path), "--out", str(tmp_path / "b")]),
    ):
        result = CliRunner().invoke(command, [*args, "--roles", "judge", *given])
        assert result.exit_code == 2, result.output
        assert all(flag in result.output for flag in missing), result.output
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_learned_is_the_default_labeller_of_importance_and_studies():
    import inspect

    from anchors._main import importance
    from anchors._pipeline import compute_importance
    from anchors._study_run import run_study

    (option,) = [p for p in importance.params if p.name == "roles"]
    assert option.default == "learned"
    assert set(option.type.choices) == {"learned", "rules", "judge"}
    for fn in (compute_importance, run_study):
        assert inspect.signature(fn).parameters["roles"].default == "learned"

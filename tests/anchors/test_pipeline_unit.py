"""Defaults, grading and receiver-head files of the main job, without sampling."""

from __future__ import annotations

import json

import pytest

from anchors._pipeline import (
    DEFAULT_TEMPERATURE,
    REAL_MODEL_SAMPLING,
    _truth,
    read_receiver_heads,
    sampling_defaults,
)
from cot import Trace


def test_one_default_temperature_and_organism_settings_chosen_automatically():
    from anchors._main import importance, validate_anchors_command
    from anchors._validate import TEMPERATURE
    from resampling._cli import resample

    real, real_for = sampling_defaults("/models/DeepSeek-R1-Distill-Qwen-1.5B")
    organism, organism_for = sampling_defaults("organism:arith")
    assert real == REAL_MODEL_SAMPLING and real_for == "real reasoning model"
    assert real["temperature"] == organism["temperature"] == TEMPERATURE == DEFAULT_TEMPERATURE == 0.6
    assert (real["top_p"], organism["top_p"]) == (0.95, 1.0)
    assert organism["max_new_tokens"] == 160 and organism_for == "organism arith"
    assert real["max_new_tokens"] >= 4096 and real["forced_max_new_tokens"] >= 32
    # the commands: resample states 0.6; importance and validate leave it to these defaults
    assert next(p for p in resample.params if p.name == "temperature").default == DEFAULT_TEMPERATURE
    for command in (importance, validate_anchors_command):
        assert next(p for p in command.params if p.name == "temperature").default is None


def test_accuracy_is_graded_against_the_trace_own_answer_without_ground_truth():
    trace = Trace.from_completion("<think>\nSo it is 6.\n</think>\n\nThe answer is \\boxed{6}.", prompt="q")
    assert (
        _truth(trace, None) == ("6", _truth(trace, None)[1]) and "own final answer" in _truth(trace, None)[1]
    )
    assert _truth(trace, "7")[0] == "7" and "--gt-answer" in _truth(trace, "7")[1]
    trace.metadata["gt_answer"] = 5
    assert _truth(trace, None)[0] == "5"
    bare = Trace(prompt="q", cot="no answer here")
    assert _truth(bare, None)[0] is None and "NaN" in _truth(bare, None)[1]


def test_receiver_heads_file_is_read_or_refused_in_one_line(tmp_path):
    good = tmp_path / "heads.json"
    good.write_text(json.dumps({"heads": [[3, 1], [5, 0]], "traces": ["a", "b"]}))
    assert read_receiver_heads(good)["heads"] == [(3, 1), (5, 0)]
    for content in (
        "not json",
        json.dumps({"heads": []}),
        json.dumps({"x": 1}),
        json.dumps({"heads": [[1]]}),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(ValueError, match="receiver-heads") as err:
            read_receiver_heads(bad)
        assert "\n" not in str(err.value)


@pytest.mark.slow
def test_receiver_heads_chosen_on_other_traces_score_a_new_one(tmp_path):
    """The receiver-heads command picks heads over several traces; importance scores another trace with them."""
    from anchors._pipeline import onpolicy_trace, pick_receiver_heads, whitebox_columns
    from cotscope.cli import main
    from resampling import TracePrefixes, make_backend

    be = make_backend("hf", model_id="organism:arith")
    traces = [onpolicy_trace(be, "organism:arith", s, max_new_tokens=160)[0] for s in (1, 2, 3)]
    files = [str(t.save(tmp_path / f"t{i}.json")) for i, t in enumerate(traces[:2])]
    out = tmp_path / "heads.json"
    args = ["receiver-heads", "--model", "organism:arith", "--top-k", "3", "--out", str(out)]
    assert main([*args, "--trace", files[0], "--trace", files[1]]) == 0
    chosen = read_receiver_heads(out)
    assert chosen["traces"] == [traces[0].id, traces[1].id] and len(chosen["heads"]) == 3
    assert all(layer > 0 for layer, _ in chosen["heads"])  # layer 0 is excluded, as in the paper
    assert chosen["heads"] == [
        tuple(h) for h in pick_receiver_heads(be.model, be.tokenizer, traces[:2], top_k=3)["heads"]
    ]
    prefixes = TracePrefixes.build(traces[2], be.tokenizer)
    cols, _, heads = whitebox_columns(be.model, prefixes, heads=chosen["heads"], suppression=False)
    assert heads == chosen["heads"] and len(cols["receiver_score"]) == len(prefixes.sentences)
    with pytest.raises(ValueError, match="not in this model"):
        whitebox_columns(be.model, prefixes, heads=[(99, 0)], suppression=False)

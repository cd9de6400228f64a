"""Requests that do not fit the model's context are refused before any work; the planned work is said first."""

from __future__ import annotations

import pytest

from resampling import Engine, EngineInputError, SamplingParams, TracePrefixes
from resampling._hf import HFBackend


def test_prompt_plus_new_tokens_past_the_context_is_refused_before_work(
    tiny_model, tiny_tokenizer, tiny_trace, tmp_path
):
    backend = HFBackend(tiny_model, tiny_tokenizer)
    context = backend.max_context
    assert context == tiny_model.config.max_position_embeddings
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    longest = len(tp.prefix_ids(len(tp.sentences)))
    plan = tp.plan(n=2, params=SamplingParams(max_new_tokens=context), positions=[len(tp.sentences)])
    with pytest.raises(
        EngineInputError,
        match=rf"{longest:,} prompt tokens \+ {context:,} new tokens .* context is {context:,}",
    ) as err:
        Engine(backend, tmp_path, quiet=True).run(plan)
    assert f"lower --max-new-tokens to at most {context - longest}" in str(err.value)
    assert not any(tmp_path.rglob("*.parquet"))  # nothing sampled, nothing stored


def test_planned_work_is_counted_and_said_before_sampling(
    tiny_model, tiny_tokenizer, tiny_trace, tmp_path, capsys
):
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    plan = tp.plan(n=3, params=SamplingParams(max_new_tokens=5), positions=[0, 1])
    result = Engine(HFBackend(tiny_model, tiny_tokenizer), tmp_path, quiet=False).run(plan)
    s = result.stats
    assert s["rollouts_to_sample"] == 6 and s["max_decode_tokens"] == 30
    assert s["prefill_tokens"] == len(tp.prefix_ids(0)) + len(tp.prefix_ids(1))
    assert "planned: 6 rollouts to sample (0 cached)" in capsys.readouterr().err
    again = Engine(HFBackend(tiny_model, tiny_tokenizer), tmp_path, quiet=False).run(plan)
    assert again.stats["rollouts_to_sample"] == 0
    assert "nothing to sample, all 6 rollouts are cached" in capsys.readouterr().err


def test_cli_refuses_a_budget_past_the_organisms_context(tmp_path, capsys):
    from cotscope.cli import main

    code = main(
        ["resample", "--max-new-tokens", "100000000", "--samples", "2", "--out", str(tmp_path / "r"), "-q"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "100,000,000 new tokens" in err and "context is 384 tokens" in err
    assert not (tmp_path / "r" / "rollouts.parquet").exists()

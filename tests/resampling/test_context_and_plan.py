"""Requests that do not fit the model's context are refused before any work; the planned work is said first."""

from __future__ import annotations

import pytest

from resampling import Engine, EngineInputError, SamplingParams, TracePrefixes
from resampling._engine import planned_work
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
    # position 0's prompt is a prefix of position 1's: its tokens are counted once, as the backend prefills them
    assert tuple(tp.prefix_ids(1))[: len(tp.prefix_ids(0))] == tuple(tp.prefix_ids(0))
    assert s["prefill_tokens"] == len(tp.prefix_ids(1))
    forced = tp.forced_answer_plan(1, 3, SamplingParams(max_new_tokens=2), positions=[0, 1, 2])
    probes = [tuple(r.prompt_ids) for r in forced]
    shared = len({p[:k] for p in probes for k in range(1, len(p) + 1)})  # distinct prefixes: trie nodes
    assert planned_work(Engine(HFBackend(tiny_model, tiny_tokenizer), tmp_path)._jobs(forced, set())[0]) == {
        "rollouts_to_sample": 3,
        "prefill_tokens": shared,
        "max_decode_tokens": 6,
    }
    assert shared < sum(len(p) for p in probes)
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


def test_large_requests_go_out_in_chunks_with_the_same_rollouts(
    tiny_model, tiny_tokenizer, tiny_trace, tmp_path, monkeypatch
):
    import resampling._engine as engine_mod

    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    plan = tp.plan(n=10, params=SamplingParams(max_new_tokens=4), positions=[1])
    whole = Engine(HFBackend(tiny_model, tiny_tokenizer), tmp_path / "a", quiet=True).run(plan).rollouts
    monkeypatch.setattr(engine_mod, "JOB_CHUNK", 3)
    seen = []

    class Recording(HFBackend):
        def generate(self, jobs):
            for job, comps in super().generate(jobs):
                seen.append(len(comps))
                yield job, comps

    chunked = Engine(Recording(tiny_model, tiny_tokenizer), tmp_path / "b", quiet=True).run(plan).rollouts
    assert seen == [3, 3, 3, 1]  # stored and counted chunk by chunk
    assert chunked["text"].to_list() == whole["text"].to_list()
    assert chunked["seed"].to_list() == whole["seed"].to_list()

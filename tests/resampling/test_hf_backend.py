import itertools

import numpy as np
import pytest
import torch

from cot import split_sentences
from resampling import Engine, EngineInputError, GenerationJob, SamplingParams, TracePrefixes
from resampling._hf import HFBackend, _prefix_roots, gumbel_noise, sample_tokens
from resampling._prefix import token_ids as _ids


def run_jobs(backend, jobs):
    return {job.key: comps for job, comps in backend.generate(jobs)}


def jobs_for(tp, n, params, seed=0):
    return [
        GenerationJob(
            f"p{i}",
            tuple(tp.prefix_ids(i)),
            tuple(range(n)),
            tuple(seed + i * n + k for k in range(n)),
            params,
        )
        for i in range(tp.n_positions)
    ]


def test_greedy_matches_transformers_generate_on_every_prefix(tiny_trace, tiny_tokenizer):
    from conftest import build_model, greedy_reference

    model = build_model(tiny_tokenizer, dtype=torch.float64)
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    params = SamplingParams(temperature=0, max_new_tokens=12)
    ours = run_jobs(HFBackend(model, tiny_tokenizer), jobs_for(tp, 1, params))
    for i in range(tp.n_positions):
        ref_ids = greedy_reference(model, tiny_tokenizer, tp.prefix_ids(i), 12)
        assert ours[f"p{i}"][0].token_ids == ref_ids, i


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_same_seed_same_rollouts_for_any_batch_size_and_order(tiny_model, tiny_tokenizer, tiny_trace, device):
    if device != "cpu":
        import copy

        tiny_model = copy.deepcopy(tiny_model).to(device)  # the session fixture stays on the CPU
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=16)
    jobs = jobs_for(tp, 5, params, seed=7)
    ref = run_jobs(HFBackend(tiny_model, tiny_tokenizer, batch_size=512), jobs)
    for bs in (1, 4, 13):
        got = run_jobs(HFBackend(tiny_model, tiny_tokenizer, batch_size=bs), list(reversed(jobs)))
        for key, comps in ref.items():
            assert [c.token_ids for c in got[key]] == [c.token_ids for c in comps], (bs, key)
    # Asking for a subset of samples (as a resumed run does) gives those same samples.
    part = GenerationJob("p3", jobs[3].prompt_ids, (2, 4), (jobs[3].seeds[2], jobs[3].seeds[4]), params)
    sub = run_jobs(HFBackend(tiny_model, tiny_tokenizer), [part])["p3"]
    assert [c.token_ids for c in sub] == [ref["p3"][2].token_ids, ref["p3"][4].token_ids]
    # And different seeds give different samples.
    assert len({tuple(c.token_ids) for c in ref["p3"]}) > 1


def test_prefill_is_shared_across_nested_prefixes(tiny_model, tiny_tokenizer, tiny_trace):
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    backend = HFBackend(tiny_model, tiny_tokenizer)
    run_jobs(backend, jobs_for(tp, 3, SamplingParams(max_new_tokens=4)))
    assert backend.stats["prefill_tokens"] == len(tp.full_ids)  # one pass over the longest prefix serves all
    roots, root_of = _prefix_roots([(1, 2, 3), (1, 2), (1, 5), (1,)])
    assert roots == [(1, 2, 3), (1, 5)] and root_of == [0, 0, 1, 0]


def test_gumbel_sampler_follows_softmax_with_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=1)
    n = 20000
    seeds = torch.arange(n)
    draws = sample_tokens(logits.expand(n, -1), seeds, torch.zeros(n, dtype=torch.long), params).numpy()
    p = torch.softmax(logits[0] / 0.7, -1).numpy()
    keep = (np.cumsum(p) - p) < 0.9
    target = np.where(keep, p, 0) / np.where(keep, p, 0).sum()
    freq = np.bincount(draws, minlength=5) / n
    np.testing.assert_allclose(freq, target, atol=0.012)
    assert freq[~keep].sum() == 0


def test_gumbel_noise_is_a_function_of_seed_step_token_only():
    a = gumbel_noise(torch.tensor([5, 6, 2**40 + 5]), torch.tensor([3, 3, 3]), 50)
    b = gumbel_noise(torch.tensor([6]), torch.tensor([3]), 50)
    assert torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2])
    assert not torch.equal(a[0], gumbel_noise(torch.tensor([5]), torch.tensor([4]), 50)[0])


def test_top_k_and_greedy():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).expand(4000, -1)
    seeds, steps = torch.arange(4000), torch.zeros(4000, dtype=torch.long)
    draws = sample_tokens(logits, seeds, steps, SamplingParams(temperature=1.0, top_p=1.0, top_k=2))
    assert set(draws.tolist()) == {1, 3}
    assert set(sample_tokens(logits, seeds, steps, SamplingParams(temperature=0)).tolist()) == {1}


def test_stop_strings_and_length(tiny_model, tiny_tokenizer, tiny_trace):
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    backend = HFBackend(tiny_model, tiny_tokenizer)
    params = SamplingParams(temperature=1.0, max_new_tokens=6)
    comps = run_jobs(backend, jobs_for(tp, 4, params))
    assert all(c.finish_reason in ("stop", "length") for cs in comps.values() for c in cs)
    assert all(len(c.token_ids) <= 6 for cs in comps.values() for c in cs)
    free = run_jobs(backend, jobs_for(tp, 8, SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=40)))
    texts = [c.text for cs in free.values() for c in cs]
    stop = next(ch for ch in "eat o" if sum(ch in t for t in texts) > 5)
    stopped = run_jobs(
        backend, jobs_for(tp, 8, SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=40, stop=(stop,)))
    )
    for key, cs in stopped.items():
        for c, full in zip(cs, free[key], strict=True):
            assert stop not in c.text
            assert full.text.startswith(c.text)
            if stop in full.text:
                assert c.finish_reason == "stop" and c.text == full.text[: full.text.index(stop)]


def test_engine_rows_and_answers(tiny_model, tiny_tokenizer, tiny_trace, tmp_path):
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    plan = tp.plan(n=2, seed=0, params=SamplingParams(max_new_tokens=8), forced_answer=True)
    result = Engine(HFBackend(tiny_model, tiny_tokenizer), tmp_path / "cache", quiet=True).run(
        plan, truths={tp.trace.id: "6"}, out=tmp_path / "out"
    )
    df = result.rollouts
    assert df.height == plan.n_rollouts == 24
    assert set(df["status"]) == {"ok"}
    assert df.filter(df["kind"] == "forced_answer")["first_sentence"].null_count() == 12
    assert (tmp_path / "out" / "rollouts.parquet").exists() and (tmp_path / "out" / "run.json").exists()
    assert sorted(df.columns) == sorted(
        [
            "trace_id",
            "request_id",
            "kind",
            "position",
            "sample",
            "seed",
            "edit",
            "prefix_hash",
            "prefix_tokens",
            "text",
            "n_tokens",
            "first_sentence",
            "answer",
            "answer_norm",
            "correct",
            "finish_reason",
            "status",
            "error",
        ]
    )


def test_sample_traces_is_on_policy_and_seeded(tiny_model, tiny_tokenizer):
    from resampling import sample_traces

    backend = HFBackend(tiny_model, tiny_tokenizer)
    params = SamplingParams(temperature=1.0, max_new_tokens=30)
    a = sample_traces(backend, tiny_tokenizer, ["Compute 1 + 2.", "Compute 3 + 4."], [5, 6], params)
    b = sample_traces(backend, tiny_tokenizer, ["Compute 3 + 4."], [6], params)
    assert a[1].cot == b[0].cot and a[1].metadata["sampled_seed"] == 6
    # What the trace holds is exactly what the model generated after the template.
    ids = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Compute 3 + 4."}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    job = GenerationJob("x", tuple(ids), (0,), (6,), params)
    ((_, [c]),) = list(backend.generate([job]))
    assert c.text.strip().startswith(a[1].cot[:20]) and (a[1].truncated == ("</think>" not in c.text))


def test_identity_names_precision_and_device(tiny_model, tiny_tokenizer, tmp_path):
    """Weights loaded from a folder are hashed from its files, whatever dtype they were loaded in; the same weights
    sample other rollouts in another dtype, so a cache must not be shared across them."""
    import copy

    tiny_model.save_pretrained(tmp_path)
    fp32 = HFBackend(tiny_model, tiny_tokenizer, path=tmp_path).identity()
    bf16 = HFBackend(copy.deepcopy(tiny_model).to(torch.bfloat16), tiny_tokenizer, path=tmp_path).identity()
    assert (fp32["dtype"], bf16["dtype"], fp32["device_type"]) == ("float32", "bfloat16", "cpu")
    assert {k: v for k, v in fp32.items() if k != "dtype"} == {k: v for k, v in bf16.items() if k != "dtype"}
    assert HFBackend(tiny_model, tiny_tokenizer, stop_token_ids=[1], path=tmp_path).identity() != fp32


def test_a_stop_string_of_many_tokens_ends_decoding():
    """As in vLLM, decoding stops once a stop string is complete, however many tokens it spans."""
    import organisms

    backend = HFBackend.from_model_id("organism:arith", device="cpu")
    tok = backend.tokenizer
    example = organisms.get_task("arith").sample(3)
    prompt = tuple(_ids(tok.apply_chat_template(example.messages, add_generation_prompt=True, tokenize=True)))
    greedy = SamplingParams(temperature=0, max_new_tokens=200)
    full = run_jobs(backend, [GenerationJob("g", prompt, (0,), (0,), greedy)])["g"][0]
    sentences = split_sentences(full.text)
    stop = full.text[sentences[3].start : sentences[5].end]  # three sentences in a row
    assert len(tok(stop, add_special_tokens=False)["input_ids"]) > 8
    params = SamplingParams(temperature=0, max_new_tokens=200, stop=(stop,))
    hit = run_jobs(backend, [GenerationJob("g", prompt, (0,), (0,), params)])["g"][0]
    assert hit.finish_reason == "stop" and hit.text == full.text[: full.text.index(stop)]
    end = len(tok(full.text[: full.text.index(stop) + len(stop)], add_special_tokens=False)["input_ids"])
    assert len(hit.token_ids) <= end + 1 < len(full.token_ids)


def test_sliding_window_models_past_their_window_get_a_clear_error(tiny_tokenizer):
    from transformers import MistralConfig, Qwen2Config, Qwen2ForCausalLM

    from resampling import EngineInputError
    from resampling._hf import sliding_window

    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = Qwen2Config(
        vocab_size=len(tiny_tokenizer),
        use_sliding_window=True,
        sliding_window=8,
        max_window_layers=0,
        **shape,
    )
    assert sliding_window(config) == 8
    assert sliding_window(Qwen2Config(**shape)) is None and sliding_window(MistralConfig()) == 4096
    backend = HFBackend(Qwen2ForCausalLM(config).eval(), tiny_tokenizer, model_id="sliding")
    job = GenerationJob("j", tuple(range(5, 12)), (0,), (0,), SamplingParams(max_new_tokens=4))
    with pytest.raises(EngineInputError, match="sliding-window attention over 8 tokens"):
        list(backend.generate([job]))


def _forced_jobs(tp, n, params, positions=None):
    plan = tp.forced_answer_plan(n, 3, params, positions=positions)
    return [
        GenerationJob(r.request_id, r.prompt_ids, tuple(range(r.n)), tuple(r.seeds()), r.params) for r in plan
    ]


def _tokens(backend, jobs):
    return {key: [c.token_ids for c in comps] for key, comps in run_jobs(backend, jobs).items()}


def test_forced_probes_prefill_only_their_cue_and_draw_the_same_tokens(
    tiny_model, tiny_tokenizer, tiny_trace
):
    from resampling._hf import _common_prefix

    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8)
    jobs = _forced_jobs(tp, 4, params)
    whole = HFBackend(tiny_model, tiny_tokenizer, shared_prefill=False)
    ref = _tokens(whole, jobs)
    assert whole.stats["prefill_tokens"] == sum(len(j.prompt_ids) for j in jobs)  # one root per probe before
    for kw in ({}, {"batch_size": 1}, {"batch_size": 3}, {"kv_budget_gb": 1e-4}):
        shared = HFBackend(tiny_model, tiny_tokenizer, **kw)
        assert _tokens(shared, list(reversed(jobs))) == ref, kw
        # the longest probe is prefilled whole; every other one only past what it shares with the one before it
        prompts = _prefix_roots([j.prompt_ids for j in reversed(jobs)])[0]
        assert len(prompts) == len(jobs)
        expected = len(prompts[0]) + sum(
            len(p) - _common_prefix(p, q) for q, p in itertools.pairwise(prompts)
        )
        assert shared.stats["prefill_tokens"] == expected < whole.stats["prefill_tokens"] / 2, kw
        assert (
            shared.stats["prefill_tokens"] + shared.stats["prefill_tokens_reused"]
            == whole.stats["prefill_tokens"]
        )
    assert len({tuple(t) for toks in ref.values() for t in toks}) > 1


def test_shared_prefill_reads_the_right_keys_and_values(tiny_tokenizer, tiny_trace):
    """Greedy probes in float64 equal transformers' generate on each probe's whole prompt: a slice of the wrong
    length, at the wrong offset, or from the wrong root would change them."""
    from conftest import build_model, greedy_reference

    model = build_model(tiny_tokenizer, dtype=torch.float64)
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    backend = HFBackend(model, tiny_tokenizer)
    ours = _tokens(backend, _forced_jobs(tp, 1, SamplingParams(temperature=0, max_new_tokens=6)))
    assert backend.stats["prefill_tokens_reused"] > 0
    plan = tp.forced_answer_plan(1, 3, SamplingParams(temperature=0, max_new_tokens=6))
    for req in plan:
        assert ours[req.request_id][0] == greedy_reference(model, tiny_tokenizer, list(req.prompt_ids), 6), (
            req.position
        )


def test_common_prefix_and_the_share_threshold(tiny_model, tiny_tokenizer):
    from hypothesis import given
    from hypothesis import strategies as st

    from resampling._hf import PREFILL_VERSION, _common_prefix

    @given(st.lists(st.integers(0, 3), max_size=30), st.lists(st.integers(0, 3), max_size=30))
    def check(a, b):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        assert _common_prefix(tuple(a), tuple(b)) == n

    check()
    # roots of other prompts that share only a short head are prefilled whole
    backend = HFBackend(tiny_model, tiny_tokenizer)
    params = SamplingParams(temperature=1.0, max_new_tokens=2)
    jobs = [
        GenerationJob("a", (1, 2, 3, 4, 5, 6), (0,), (0,), params),
        GenerationJob("b", (1, 2, 9, 9, 9), (0,), (1,), params),
    ]
    run_jobs(backend, jobs)
    assert backend.stats["prefill_tokens"] == 11 and backend.stats["prefill_tokens_reused"] == 0
    backend = HFBackend(tiny_model, tiny_tokenizer)
    jobs[1] = GenerationJob("b", (1, 2, 3, 9, 9), (0,), (1,), params)  # 3 of 5 shared: reused
    run_jobs(backend, jobs)
    assert backend.stats["prefill_tokens"] == 8 and backend.stats["prefill_tokens_reused"] == 3
    # the identity says which prefill made the rows, so rows of the other way are never mixed in
    assert backend.identity()["prefill"] == PREFILL_VERSION
    assert "prefill" not in HFBackend(tiny_model, tiny_tokenizer, shared_prefill=False).identity()


def test_the_kv_cache_goes_under_the_name_the_model_takes(tiny_tokenizer):
    # older transformers call it past_key_values and swallow an unknown `cache=` in **kwargs: decoding would then
    # run every step without its context (greedy tokens differ from the second on), so the name is looked up
    from conftest import build_model

    from resampling._hf import HFBackend, cache_argument

    class Old:
        def forward(
            self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None, **kwargs
        ):
            pass

    class Wrapped:
        def forward(self, *args, **kwargs):
            pass

    assert cache_argument(Old()) == "past_key_values"
    assert cache_argument(Wrapped()) == "past_key_values"
    model = build_model(tiny_tokenizer)
    import inspect

    expected = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    assert HFBackend(model, tiny_tokenizer)._cache_arg == expected


def test_a_dataset_fill_prefills_each_trace_as_its_own_run_does(
    tiny_model, tiny_tokenizer, tiny_trace, tmp_path
):
    """Two traces' positions and forced probes in one Engine.fill: each trace's probes are prefilled on one another
    (not whole, as when the roots of all traces were ordered by length alone and interleaved), so the fill prefills
    exactly the tokens of the two single-trace runs together, and draws the same rows."""
    from cot import Trace
    from resampling import Engine

    other = Trace(
        prompt="Compute (9 + 4) * 2 mod 10.",
        cot="Add first. 9 + 4 is 13. Then 13 * 2 is 26. Let me double-check the product. So 26 mod 10 is 6.",
        answer_text="The answer is \\boxed{6}.",
        metadata={"gt_answer": "6"},
    )
    params = SamplingParams(temperature=1.0, max_new_tokens=4)
    plans = [
        TracePrefixes.build(t, tiny_tokenizer, min_chars=0).plan(
            2,
            10 * k,
            params,
            forced_answer=True,
            forced_params=SamplingParams(temperature=1.0, max_new_tokens=2),
        )
        for k, t in enumerate([tiny_trace, other])
    ]
    single, rows = 0, []
    for k, plan in enumerate(plans):
        backend = HFBackend(tiny_model, tiny_tokenizer)
        rows.append(Engine(backend, tmp_path / f"one{k}", quiet=True).run(plan).rollouts)
        single += backend.stats["prefill_tokens"]
    both = HFBackend(tiny_model, tiny_tokenizer)
    Engine(both, tmp_path / "both", quiet=True).fill(plans)
    assert both.stats["prefill_tokens"] == single
    assert both.stats["prefill_tokens_reused"] > 0
    for plan, alone in zip(plans, rows, strict=True):
        again = Engine(both, tmp_path / "both", quiet=True).run(plan)
        assert again.stats["rollouts_new"] == 0
        assert again.rollouts.select("request_id", "sample", "text").equals(
            alone.select("request_id", "sample", "text")
        )
    # roots of one route stay together and longest first; without routes, longest first overall
    prompts = [(1, 2, 3, 4, 5), (7, 8, 9, 9), (1, 2, 6), (7, 8)]
    assert _prefix_roots(prompts, ["a", "b", "a", "b"]) == (
        [(1, 2, 3, 4, 5), (1, 2, 6), (7, 8, 9, 9)],
        [0, 2, 1, 2],
    )
    assert _prefix_roots(prompts) == ([(1, 2, 3, 4, 5), (7, 8, 9, 9), (1, 2, 6)], [0, 1, 2, 1])


def test_finished_rows_leave_the_batch_late_without_changing_any_rollout(
    tiny_model, tiny_tokenizer, tiny_trace
):
    """Rows that finish at different steps: dropping them from the KV cache at once (0), once a quarter of the
    batch has finished (the default), or never (1) gives the same tokens, texts and finish reasons, and counts
    only live rows' tokens."""
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    params = SamplingParams(temperature=1.0, max_new_tokens=12, stop=("e",))
    jobs = jobs_for(tp, 6, params)
    got, tokens = {}, {}
    for fraction in (0.0, 0.25, 1.0):
        backend = HFBackend(tiny_model, tiny_tokenizer, compact_fraction=fraction)
        got[fraction] = {
            key: [(c.token_ids, c.text, c.finish_reason) for c in comps]
            for key, comps in run_jobs(backend, jobs).items()
        }
        tokens[fraction] = backend.stats["decode_tokens"]
    assert got[0.25] == got[0.0] and got[1.0] == got[0.0]
    lengths = [len(ids) for comps in got[0.0].values() for ids, _, _ in comps]
    assert len(set(lengths)) > 3  # rows really finish at different steps
    assert {reason for comps in got[0.0].values() for _, _, reason in comps} == {"stop", "length"}
    assert tokens[0.0] == tokens[0.25] == tokens[1.0]
    # and greedy rows, finishing at different steps, continue their prompts as transformers' generate does
    from conftest import build_model, greedy_reference

    model = build_model(tiny_tokenizer, dtype=torch.float64)
    greedy = SamplingParams(temperature=0, max_new_tokens=8, stop=("e",))
    for fraction in (0.25, 1.0):
        ours = run_jobs(HFBackend(model, tiny_tokenizer, compact_fraction=fraction), jobs_for(tp, 1, greedy))
        ends = set()
        for i, job in enumerate(jobs_for(tp, 1, greedy)):
            (c,) = ours[job.key]
            ref = greedy_reference(model, tiny_tokenizer, list(tp.prefix_ids(i)), 8)
            assert c.token_ids == ref[: len(c.token_ids)], (fraction, i)
            ends.add(len(c.token_ids))
        assert len(ends) > 1
    with pytest.raises(EngineInputError, match="compact_fraction"):
        HFBackend(tiny_model, tiny_tokenizer, compact_fraction=1.5)


def test_roots_decode_in_windows_longest_prefix_first_with_the_same_rollouts(
    tiny_model, tiny_tokenizer, tiny_trace, monkeypatch
):
    """Two traces' rows: when both traces' roots fit in one window (the default), batches take rows longest prefix
    first across both traces; with one root a window (ROOT_WINDOW_FRACTION 0) trace after trace, each longest
    first. The completions are the same."""
    from dataclasses import replace

    import resampling._hf as hf
    from cot import Trace

    other = Trace(
        prompt="Compute (4 + 4) * 2 mod 10.",
        cot="First, 4 + 4 is 8. Then 8 * 2 is 16. So 16 mod 10 is 6.",
        answer_text="The answer is \\boxed{6}.",
    )
    params = SamplingParams(temperature=1.0, max_new_tokens=6)
    jobs = [
        replace(job, key=f"{name}-{job.key}", route=name)
        for name, trace in (("a", tiny_trace), ("b", other))
        for job in jobs_for(TracePrefixes.build(trace, tiny_tokenizer, min_chars=0), 2, params)
    ]
    lengths: list[int] = []
    decode = HFBackend._decode

    def watched(self, batch, *args):
        lengths.extend(row.length for row in batch)
        return decode(self, batch, *args)

    monkeypatch.setattr(HFBackend, "_decode", watched)
    together = run_jobs(HFBackend(tiny_model, tiny_tokenizer, batch_size=5), jobs)
    assert lengths == sorted(lengths, reverse=True)
    first = {len(job.prompt_ids) for job in jobs if job.route == "a"}
    assert {n for n in lengths[: len(lengths) // 2]} - first  # rows of trace b decode among trace a's
    lengths.clear()
    monkeypatch.setattr(hf, "ROOT_WINDOW_FRACTION", 0.0)
    apart = run_jobs(HFBackend(tiny_model, tiny_tokenizer, batch_size=5), jobs)
    n_a = 2 * sum(job.route == "a" for job in jobs)
    runs = (lengths[:n_a], lengths[n_a:]) if lengths[0] in first else (lengths[-n_a:], lengths[:-n_a])
    assert all(run == sorted(run, reverse=True) for run in runs) and lengths != sorted(lengths, reverse=True)
    assert {n for n in runs[0]} == first
    assert {k: [c.token_ids for c in v] for k, v in apart.items()} == {
        k: [c.token_ids for c in v] for k, v in together.items()
    }

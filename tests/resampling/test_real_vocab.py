"""The engine at real scale: DeepSeek's 128k tokenizer, the published R1 traces, a random-weight Qwen2."""

import itertools

import numpy as np
import pytest
import torch

from cot import load_trace
from resampling import EngineInputError, GenerationJob, SamplingParams, TracePrefixes, synthetic_model
from resampling._hf import CANDIDATES, HFBackend, gumbel_noise, sample_tokens

V = 129_280


def _reference_nucleus(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Which tokens top-p keeps, by the textbook rule on a full float64 sort (ties with the last kept one kept)."""
    scaled = logits.double() / temperature
    vals, _ = torch.sort(scaled, dim=-1, descending=True)
    p = torch.softmax(vals, dim=-1)
    n_in = ((torch.cumsum(p, -1) - p) < top_p).sum(-1).clamp(min=1)
    return scaled >= vals.gather(1, (n_in - 1)[:, None])


def _draw_many(logits: torch.Tensor, n: int, params: SamplingParams, chunk: int = 500):
    counts: dict[str, int] = {}
    draws = []
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        seeds = torch.arange(start, start + rows)
        steps = torch.zeros(rows, dtype=torch.long)
        draws.append(sample_tokens(logits.expand(rows, -1), seeds, steps, params, counts))
    return torch.cat(draws).numpy(), counts


def _target(logits: torch.Tensor, temperature: float, top_p: float) -> np.ndarray:
    keep = _reference_nucleus(logits[None], temperature, top_p)[0].numpy()
    p = torch.softmax(logits.double() / temperature, -1).numpy()
    return np.where(keep, p, 0) / np.where(keep, p, 0).sum()


@pytest.mark.slow
def test_sampler_frequencies_match_softmax_top_p_at_vocab_128k():
    g = torch.Generator().manual_seed(0)
    ids = torch.randperm(V, generator=g)
    # A peaked distribution (nucleus within the first 64 candidates), heads at random ids.
    logits = torch.randn(V, generator=g) - 6.0
    logits[ids[:6]] = torch.tensor([6.0, 5.4, 5.0, 4.2, 3.0, 2.0])
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=1)
    draws, counts = _draw_many(logits, 6_000, params)
    target = _target(logits, 0.7, 0.9)
    freq = np.bincount(draws, minlength=V) / len(draws)
    assert {k: v for k, v in counts.items() if v} == {f"sampler_rows_k{CANDIDATES[0]}": 6_000}
    # 4 standard deviations of a frequency from 6,000 draws (at most 0.0065)
    np.testing.assert_allclose(freq[ids[:6]], target[ids[:6]], atol=0.026)
    assert freq[target == 0].sum() == 0
    # A flatter one: a nucleus of a few hundred tokens, found among 1,024 candidates.
    logits = torch.randn(V, generator=g) - 8.0
    logits[ids[:2]] = torch.tensor([5.0, 4.5])
    logits[ids[2:402]] = torch.linspace(3.0, 1.0, 400)
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=1)
    draws, counts = _draw_many(logits, 2_000, params)
    target = _target(logits, 1.0, 0.95)
    assert {k: v for k, v in counts.items() if v} == {f"sampler_rows_k{CANDIDATES[1]}": 2_000}
    assert 100 < (target > 0).sum() < CANDIDATES[1]
    freq = np.bincount(draws, minlength=V) / len(draws)
    np.testing.assert_allclose(freq[ids[:2]], target[ids[:2]], atol=0.045)  # 4 sd of 2,000 draws
    for lo, hi in ((2, 102), (102, 202), (202, 402)):  # mass of blocks of the flat part
        assert abs(freq[ids[lo:hi]].sum() - target[ids[lo:hi]].sum()) < 0.045
    assert freq[target == 0].sum() == 0


def test_candidate_sampler_equals_a_full_sort_with_the_same_noise():
    """Every path (64 candidates, 1,024, full sort) keeps exactly the textbook nucleus and, with the same noise,
    draws the same token as a full-vocabulary Gumbel-max over it."""
    g = torch.Generator().manual_seed(1)
    logits = torch.cat([torch.randn(8, V, generator=g) * s for s in (12.0, 4.0, 1.0)])
    seeds, steps = torch.arange(24) * 7919, torch.full((24,), 3)
    counts: dict[str, int] = {}
    params = SamplingParams(temperature=0.6, top_p=0.95)
    got = sample_tokens(logits, seeds, steps, params, counts)
    keep = _reference_nucleus(logits, 0.6, 0.95)
    ref = torch.where(keep, logits / 0.6, float("-inf")) + gumbel_noise(seeds, steps, V)
    assert torch.equal(got, ref.argmax(-1))
    assert set(counts) == {f"sampler_rows_k{k}" for k in (*CANDIDATES, V)} and sum(counts.values()) == 24
    # top-k: the draw stays within the k most likely tokens, renormalised.
    top3 = sample_tokens(logits, seeds, steps, SamplingParams(temperature=1.0, top_p=1.0, top_k=3))
    assert all(t in set(logits[i].topk(3).indices.tolist()) for i, t in enumerate(top3.tolist()))


def test_published_traces_cut_into_exact_token_prefixes(problem_dirs, deepseek_tok):
    for d in problem_dirs:
        trace = load_trace(d)
        tp = TracePrefixes.build(trace, deepseek_tok)
        rendered = deepseek_tok.apply_chat_template(
            trace.messages, add_generation_prompt=True, tokenize=False
        )
        assert rendered.endswith("<｜Assistant｜><think>\n") and "<｜User｜>" in rendered
        # the template and the CoT tokenized apart are the tokens of the whole text: no merge across the seam
        assert deepseek_tok(rendered + trace.cot, add_special_tokens=False)["input_ids"] == tp.full_ids, d
        offsets = deepseek_tok(trace.cot, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        for i, s in enumerate(tp.sentences):
            cut = tp.cuts[i]
            assert tp.prefix_ids(i + 1)[: len(tp.prefix_ids(i))] == tp.prefix_ids(i)
            # the last token of the prefix ends at or before the sentence; the next one reaches into it
            assert (cut == 0 or offsets[cut - 1][1] <= s.start) and offsets[cut][1] > s.start, (d, i)
        assert tp.prefix_ids(tp.n_positions - 1) == tp.full_ids


@pytest.fixture(scope="module")
def long_trace(problem_dirs, deepseek_tok):
    trace = load_trace(next(d for d in problem_dirs if d.name == "problem_6998" and "/correct" in str(d)))
    return TracePrefixes.build(trace, deepseek_tok)


def _jobs(tp, positions, n, params):
    return [
        GenerationJob(
            f"p{p}", tuple(tp.prefix_ids(p)), tuple(range(n)), tuple(1000 * p + k for k in range(n)), params
        )
        for p in positions
    ]


@pytest.mark.slow
def test_real_vocab_rollouts_do_not_depend_on_batching(long_trace, real_vocab_model, deepseek_tok):
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=6)
    jobs = _jobs(long_trace, [0, 17, 41, long_trace.n_positions - 1], 3, params)
    ref_backend = HFBackend(real_vocab_model, deepseek_tok, batch_size=512)
    ref = {j.key: [c.token_ids for c in cs] for j, cs in ref_backend.generate(jobs)}
    assert ref_backend.stats["batches"] == 1
    for kw in ({"batch_size": 1}, {"batch_size": 5}, {"kv_budget_gb": 0.002}):
        backend = HFBackend(real_vocab_model, deepseek_tok, **kw)
        got = {j.key: [c.token_ids for c in cs] for j, cs in backend.generate(list(reversed(jobs)))}
        assert got == ref, kw
        assert backend.stats["batches"] > 1 and backend.stats["peak_batch_rows"] <= kw.get("batch_size", 12)
    assert all(len({tuple(t) for t in toks}) > 1 for toks in ref.values())  # seeds give different rollouts


@pytest.mark.slow
def test_real_vocab_greedy_matches_generate(long_trace, deepseek_tok):
    from conftest import greedy_reference

    model, _ = synthetic_model(hidden=32, layers=2, tokenizer=deepseek_tok, dtype=torch.float64, seed=3)
    positions = [0, 30, long_trace.n_positions - 1]
    params = SamplingParams(temperature=0, max_new_tokens=8)
    ours = {
        j.key: cs[0].token_ids
        for j, cs in HFBackend(model, deepseek_tok).generate(_jobs(long_trace, positions, 1, params))
    }
    for p in positions:
        ref = greedy_reference(model, deepseek_tok, long_trace.prefix_ids(p), 8)
        assert ours[f"p{p}"] == ref, p


def test_batches_respect_the_memory_budget(real_vocab_model, deepseek_tok):
    backend = HFBackend(real_vocab_model, deepseek_tok, batch_size=64, kv_budget_gb=0.05)
    lengths = [3000] * 40 + [200] * 200
    batches = backend.plan_batches(lengths, 16)
    assert [i for b in batches for i in b] == list(range(len(lengths)))  # all rows, in order
    for b in batches:
        assert len(b) <= 64
        assert len(b) * backend.row_bytes(max(lengths[i] for i in b) + 16) <= 0.05 * 2**30
    # KV of a row: tokens x layers (2) x key-value heads (1) x head dim (16) x 2 x 4 bytes, plus 3 logit rows
    assert backend.row_bytes(100) == 100 * 2 * 1 * 16 * 2 * 4 + 3 * 4 * V
    with pytest.raises(EngineInputError, match="kv_budget_gb must be > 0"):
        HFBackend(real_vocab_model, deepseek_tok, kv_budget_gb=0)


def test_real_vocab_forced_probes_share_only_a_true_token_prefix(long_trace, real_vocab_model, deepseek_tok):
    """On an R1 trace the probe's text joined with its cue retokenizes the prefix's last '.' as '.\\n' at many
    positions: those probes are not a token extension of their prefix, and only the tokens they truly share are
    reused. Their draws equal those of a whole prefill, for any batching."""
    from resampling._hf import _common_prefix, _prefix_roots

    tp = long_trace
    positions = list(range(tp.n_positions))
    merged = [
        p for p in positions[1:] if tp.forced_answer_ids(p)[: len(tp.prefix_ids(p))] != tp.prefix_ids(p)
    ]
    assert merged  # the case exists on this trace
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=4)
    plan = tp.forced_answer_plan(3, 0, params)
    jobs = [
        GenerationJob(r.request_id, r.prompt_ids, tuple(range(r.n)), tuple(r.seeds()), r.params) for r in plan
    ]
    whole = HFBackend(real_vocab_model, deepseek_tok, shared_prefill=False)
    ref = {j.key: [c.token_ids for c in cs] for j, cs in whole.generate(jobs)}
    for kw in ({}, {"batch_size": 5}):
        backend = HFBackend(real_vocab_model, deepseek_tok, **kw)
        got = {j.key: [c.token_ids for c in cs] for j, cs in backend.generate(list(reversed(jobs)))}
        assert got == ref, kw
    prompts = _prefix_roots([j.prompt_ids for j in reversed(jobs)])[0]
    shared = sum(_common_prefix(p, q) for q, p in itertools.pairwise(prompts))
    assert backend.stats["prefill_tokens_reused"] == shared
    assert backend.stats["prefill_tokens"] == whole.stats["prefill_tokens"] - shared
    for p in merged:  # a merged probe reuses nothing past the token its cue rewrites
        ids = tuple(tp.forced_answer_ids(p))
        assert max(_common_prefix(ids, q) for q in prompts if q != ids) < len(tp.prefix_ids(p))

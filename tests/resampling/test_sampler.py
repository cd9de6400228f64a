"""The sampler's nucleus without a sort: the same kept set as a sort, the same draws as the sort-based sampler."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resampling import SamplingParams
from resampling._bench import sort_sampler
from resampling._hf import _MASK32, CANDIDATES, _hash32, gumbel_noise, nucleus_mask, sample_tokens

V = 129_280


def _sorted_nucleus(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """The textbook nucleus by a full sort: token j (descending order) is kept iff the mass before it is below
    top_p, and every token tied with the last kept one is kept. Float64 running sums of the same float32
    probabilities the sampler uses."""
    p = logp.exp().double()
    order = torch.sort(logp, dim=-1, descending=True, stable=True).indices
    ps = p.gather(1, order)
    before = torch.cat([torch.zeros_like(ps[:, :1]), ps.cumsum(1)[:, :-1]], dim=1)
    n_in = (before < top_p).sum(1).clamp(min=1)
    cutoff = logp.gather(1, order).gather(1, (n_in - 1)[:, None])
    return logp >= cutoff


def _logits(g: torch.Generator) -> torch.Tensor:
    """Rows at full vocabulary: flat (logit sd 1, 2), medium (sd 4: nuclei of hundreds to thousands of
    tokens), peaked (sd 12), and tied (a few distinct values repeated across the vocabulary)."""
    rows = [torch.randn(4, V, generator=g) * s for s in (1.0, 2.0, 4.0, 12.0)]
    rows.append(torch.randint(-3, 4, (4, V), generator=g).float())
    return torch.cat(rows)


@pytest.mark.parametrize(("temperature", "top_p"), [(0.6, 0.95), (1.0, 0.95), (1.0, 0.5), (1.3, 0.999)])
def test_nucleus_equals_a_full_sort_at_vocab_128k(temperature, top_p):
    logp = torch.log_softmax(_logits(torch.Generator().manual_seed(3)) / temperature, dim=-1)
    got, ref = nucleus_mask(logp, top_p), _sorted_nucleus(logp, top_p)
    assert torch.equal(got, ref)
    assert (
        int(got.sum(1).min()) < CANDIDATES[0] < CANDIDATES[-1] < int(got.sum(1).max())
    )  # small and huge nuclei


def _row(values: list[int], scale: float) -> torch.Tensor:
    return torch.log_softmax(torch.tensor(values, dtype=torch.float32) * scale, dim=-1)[None]


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.integers(-7, 7), min_size=1, max_size=200),
    scale=st.sampled_from([0.25, 0.5, 1.0]),
    top_p=st.one_of(st.floats(0.01, 0.999), st.sampled_from([0.25, 0.5, 0.75, 0.9, 0.95])),
)
def test_nucleus_equals_a_full_sort_on_any_distribution(values, scale, top_p):
    """Random, tied (integer logits), flat (one value) and peaked rows. Every probability here is above 2^-28
    (a spread of at most 14 nats over at most 200 ids), so float64 sums of them are exact in any order and the
    two sets must agree token for token."""
    logp = _row(values, scale)
    assert torch.equal(nucleus_mask(logp, top_p), _sorted_nucleus(logp, top_p))


def test_ties_at_the_cut_are_kept_and_mass_exactly_at_top_p_stops():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125, 0.0]]))
    assert nucleus_mask(logp, 0.5).tolist() == [[True, False, False, False, False]]  # 0.5 reaches 0.5
    assert nucleus_mask(logp, 0.8).tolist() == [[True, True, True, True, False]]  # the 0.125s are tied
    assert nucleus_mask(logp, 0.999).tolist() == [[True, True, True, True, False]]  # never a zero-mass token
    flat = torch.full((1, 7), -torch.log(torch.tensor(7.0)).item())
    assert bool(nucleus_mask(flat, 0.1).all())


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.integers(-12, 12), min_size=2, max_size=64),
    temperature=st.sampled_from([0.5, 1.0, 2.0]),
    top_p=st.floats(0.05, 0.99),
    seed=st.integers(0, 2**40),
)
def test_draw_is_gumbel_max_over_the_sorted_nucleus(values, temperature, top_p, seed):
    """At most 64 ids every row goes to the threshold search: its draw is the Gumbel-max over the textbook
    nucleus with the same noise, the same token as the previous sort-based sampler whenever the kept sets agree."""
    logits = torch.tensor(values, dtype=torch.float32)[None].expand(8, -1) / 4
    seeds, steps = torch.arange(8) + seed, torch.arange(8) * 3
    params = SamplingParams(temperature=temperature, top_p=top_p)
    got = sample_tokens(logits, seeds, steps, params)
    logp = torch.log_softmax(logits * (1.0 / temperature), dim=-1)
    keep = _sorted_nucleus(logp, top_p)
    ref = torch.where(keep, logp, float("-inf")) + gumbel_noise(seeds, steps, logits.shape[1])
    assert torch.equal(got, ref.argmax(-1))
    old, old_keep = sort_sampler(logits, seeds, steps, temperature, top_p)
    same = (old_keep == keep).all(1)
    assert torch.equal(got[same], old[same])


def test_same_draws_as_the_sort_based_sampler_at_vocab_128k():
    """On the same logits and seeds the new sampler draws the Gumbel-max over the textbook nucleus on every row
    (flat rows, now the threshold search; medium, peaked and tied ones), and what the previous sampler (candidates,
    then a full sort) drew wherever their kept sets agree. The previous sampler summed the sorted mass in float32,
    so its cut can move by one tied value where that sum passes within rounding of top_p; which rows (if any)
    depends on the CPU's float32 cumsum kernel (none on an AVX-512 machine, one row of 60 on an AVX2 one)."""
    logits = _logits(torch.Generator().manual_seed(4))
    n = logits.shape[0]
    moved_rows = 0
    for temperature, top_p, step in ((0.6, 0.95, 0), (1.0, 0.95, 7), (1.0, 0.9, 100)):
        seeds, steps = torch.arange(n) * 1_000_003 + step, torch.full((n,), step)
        counts: dict[str, int] = {}
        got = sample_tokens(
            logits, seeds, steps, SamplingParams(temperature=temperature, top_p=top_p), counts
        )
        logp = torch.log_softmax(logits * (1.0 / temperature), dim=-1)
        keep = _sorted_nucleus(logp, top_p)
        ref = torch.where(keep, logp, float("-inf")) + gumbel_noise(seeds, steps, V)
        assert torch.equal(got, ref.argmax(-1))
        old, old_keep = sort_sampler(logits, seeds, steps, temperature, top_p)
        same = (old_keep == keep).all(1)
        assert torch.equal(got[same], old[same])
        p = logp.exp().double()
        for r in (~same).nonzero().squeeze(1).tolist():
            moved = old_keep[r] ^ keep[r]
            assert logp[r][moved].unique().numel() == 1  # one tied value at the cut, in or out
            masses = float(p[r][old_keep[r]].sum()), float(p[r][keep[r]].sum())
            assert min(abs(m - top_p) for m in masses) < 1e-5  # where the running mass meets top_p
            assert got[r] == old[r] or bool(moved[got[r]]) or bool(moved[old[r]])
            moved_rows += 1
        assert counts[f"sampler_rows_k{V}"] >= 8  # the flat rows were searched, not sorted
    assert moved_rows <= 3


def test_draws_do_not_depend_on_batch_order_or_search_chunk(monkeypatch):
    g = torch.Generator().manual_seed(5)
    logits = _logits(g)
    n = logits.shape[0]
    seeds, steps = torch.randint(0, 2**62, (n,), generator=g), torch.randint(0, 4000, (n,), generator=g)
    params = SamplingParams(temperature=1.0, top_p=0.95)
    whole = sample_tokens(logits, seeds, steps, params)
    alone = torch.cat(
        [sample_tokens(logits[i : i + 1], seeds[i : i + 1], steps[i : i + 1], params) for i in range(n)]
    )
    back = sample_tokens(logits.flip(0), seeds.flip(0), steps.flip(0), params).flip(0)
    monkeypatch.setattr("resampling._hf.SEARCH_CHUNK", {"cpu": 1, "cuda": 1})
    one_row_chunks = sample_tokens(logits, seeds, steps, params)
    assert torch.equal(whole, alone) and torch.equal(whole, back) and torch.equal(whole, one_row_chunks)


def test_noise_over_the_vocabulary_equals_noise_for_explicit_ids():
    """The cached per-id hashes (full-vocabulary noise) and the per-candidate path give the same float32 noise,
    and both equal the formula u = (2 (h >> 9) + 1) / 2^24 written out with the int64 mixer (the sampler's int32
    hash must give the same bits, hashes above 2**31 included)."""
    seeds = torch.tensor([0, 1, 2**40 + 5, 2**62 + 12_345, 987_654_321])
    steps = torch.tensor([0, 9, 123, 2**31 - 1, 77_777])
    ids = torch.arange(V)[None].expand(5, -1)
    full = gumbel_noise(seeds, steps, V)
    assert torch.equal(full, gumbel_noise(seeds, steps, ids))
    key = _hash32(_hash32(seeds & _MASK32) ^ _hash32((seeds >> 32) & _MASK32 ^ 0x5BD1E995))
    key = _hash32(key ^ _hash32(steps & _MASK32))
    h = _hash32(key[:, None] ^ _hash32(ids * 0x27D4EB2F & _MASK32))
    u = ((h >> 9) * 2 + 1).float() * (1.0 / (1 << 24))
    assert torch.equal(full, -torch.log(-torch.log(u)))


def test_sampler_bench_times_every_contender_and_checks_the_draws():
    from resampling._bench import format_sampler_report, run_sampler_bench

    r = run_sampler_bench(rows=4, vocab=5_000, repeats=1, check_chunks=1, hidden=16)
    assert r["flat_same_draws_as_sort"] and r["peaked_same_draws_as_sort"]
    assert r["flat_rows_by_candidates"] == {"k5000": 4} and r["peaked_rows_by_candidates"] == {"k64": 4}
    assert r["lm_head_to_lm_head"] == 1.0 and r["flat_sampler_to_lm_head"] > 0
    report = format_sampler_report(r)
    assert "threshold search" in report and "the previous full sort" in report and "NO" not in report

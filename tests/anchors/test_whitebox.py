"""White-box analyses on tiny random-weight Llama models: sentence attention, receiver heads, suppression."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from anchors._whitebox import (  # noqa: E402
    ATTENTION_IMPLEMENTATION,
    _analysis,
    _membership,
    _reducing_attention,
    _Reduction,
    _State,
    _Suppression,
    receiver_head_reliability,
    receiver_head_scores,
    receiver_heads,
    sentence_attention,
    sentence_receiver_scores,
    spans_from_offsets,
    suppression_matrix,
    suppression_token_kl,
    tokenize_with_spans,
    vertical_scores,
)

VOCAB = 100
N_TOKENS = 64
SPANS = [(1, 8), (8, 15), (16, 24), (24, 33), (33, 40), (41, 47), (47, 55), (55, 64)]


def _tiny_llama(kv_heads: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        # wide weights, so heads attend sharply and differ from each other (near-uniform attention would hide
        # head-order and masking mistakes)
        initializer_range=0.2,
        attn_implementation="sdpa",
    )
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> object:
    # tiny matmuls: thread hand-offs cost more than they save, and a busy machine makes them cost a lot more
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", params=["gqa", "mha"])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return _tiny_llama(kv_heads=2 if request.param == "gqa" else 4, seed=0)


@pytest.fixture(scope="session")
def gqa_model() -> torch.nn.Module:
    return _tiny_llama(kv_heads=2, seed=1)


@pytest.fixture(scope="session")
def input_ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, N_TOKENS), generator=torch.Generator().manual_seed(3))


def _logits(model: torch.nn.Module, ids: torch.Tensor, implementation: str, **kwargs: object) -> torch.Tensor:
    previous = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    try:
        with torch.no_grad():
            return model(input_ids=ids, use_cache=False, **kwargs).logits
    finally:
        model.set_attn_implementation(previous)


def _eager_attentions(model: torch.nn.Module, ids: torch.Tensor) -> np.ndarray:
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=False, output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    return torch.stack(out.attentions)[:, 0].double().numpy()  # (L, H, T, T)


def _block_means(attn: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros((*attn.shape[:2], len(spans), len(spans)))
    for i, (a, b) in enumerate(spans):
        for j, (c, d) in enumerate(spans):
            out[:, :, i, j] = attn[:, :, a:b, c:d].mean(axis=(-1, -2))
    return out


# ----------------------------------------------------------------------------------------------------------------
# (i) sentence-block reduction equals the reduction of eager output_attentions
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query_chunk", [5, 256])
def test_sentence_attention_matches_eager_output_attentions(
    model: torch.nn.Module, input_ids: torch.Tensor, query_chunk: int
) -> None:
    expected = _block_means(_eager_attentions(model, input_ids), SPANS)
    got = sentence_attention(model, input_ids, SPANS, query_chunk=query_chunk)
    assert got.shape == (3, 4, len(SPANS), len(SPANS))
    # the heads really differ, so a head-order (GQA) mistake could not pass unnoticed
    assert np.abs(expected - expected[:, :1]).max() > 0.01
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)
    # causal: no sentence attends to a later one
    upper = np.triu(np.ones((len(SPANS), len(SPANS)), dtype=bool), k=1)
    assert np.all(got[..., upper] == 0)
    assert model.config._attn_implementation == "sdpa"


def test_sentence_attention_layer_subset_and_sequence_input(
    gqa_model: torch.nn.Module, input_ids: torch.Tensor
) -> None:
    full = sentence_attention(gqa_model, input_ids, SPANS)
    part = sentence_attention(gqa_model, input_ids[0].tolist(), SPANS, layers=[1])
    assert np.isnan(part[[0, 2]]).all()
    np.testing.assert_allclose(part[1], full[1], atol=1e-7)


def test_sentence_attention_rejects_bad_spans(gqa_model: torch.nn.Module, input_ids: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="overlaps"):
        sentence_attention(gqa_model, input_ids, [(0, 10), (5, 12)])
    with pytest.raises(ValueError, match=r"inside 0\.\.64"):
        sentence_attention(gqa_model, input_ids, [(0, 10), (60, 70)])


# ----------------------------------------------------------------------------------------------------------------
# (ii) + (v) the registered implementation computes what the stock ones compute (causal mask intact)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", ["none", "causal_bool", "bidirectional_bool", "sliding_float"])
def test_reducing_attention_kernel_against_dense_reference(mask_kind: str) -> None:
    gen = torch.Generator().manual_seed(5)
    n, dim = 20, 8
    query = torch.randn(1, 4, n, dim, generator=gen) * 2
    key = torch.randn(1, 2, n, dim, generator=gen) * 2
    value = torch.randn(1, 2, n, dim, generator=gen)
    q_pos = torch.arange(n)[:, None]
    k_pos = torch.arange(n)[None, :]
    allowed = {
        "none": k_pos <= q_pos,
        "causal_bool": k_pos <= q_pos,
        "bidirectional_bool": torch.ones(n, n, dtype=torch.bool),
        "sliding_float": (k_pos <= q_pos) & (q_pos - k_pos < 5),
    }[mask_kind]
    mask = None
    if mask_kind.endswith("bool"):
        mask = allowed[None, None]
    elif mask_kind.endswith("float"):
        mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]
    spans = [(0, 3), (3, 9), (10, 16), (16, 20)]
    reduction = _Reduction(_membership(spans, n, torch.device("cpu")), 3, None)
    out, _ = _reducing_attention(reduction, 0, query, key, value, mask, 0.3)

    keys = key.repeat_interleave(2, dim=1)
    values = value.repeat_interleave(2, dim=1)
    scores = (query @ keys.transpose(-1, -2) * 0.3).masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, -1)
    torch.testing.assert_close(out, (probs @ values).transpose(1, 2), atol=1e-5, rtol=1e-5)
    expected = _block_means(probs.double().numpy(), spans)[0]
    sizes = np.array([e - s for s, e in spans], dtype=float)
    got = reduction.sums[0].double().numpy() / np.outer(sizes, sizes)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    if mask_kind == "bidirectional_bool":
        assert expected[:, 0, 3].min() > 1e-3  # the first sentence really attends to the last one


def test_reducing_attention_leaves_logits_unchanged(model: torch.nn.Module, input_ids: torch.Tensor) -> None:
    stock = _logits(model, input_ids, "sdpa")
    eager = _logits(model, input_ids, "eager")
    reduction = _Reduction(_membership(SPANS, N_TOKENS, torch.device("cpu")), 7, None)
    with _analysis(model, _State(reduction=reduction)):
        hooked = model(input_ids=input_ids, use_cache=False).logits
    assert sorted(reduction.sums) == [0, 1, 2]
    torch.testing.assert_close(hooked, stock, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hooked, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reduce", [False, True])
def test_registered_implementation_is_causal(
    gqa_model: torch.nn.Module, input_ids: torch.Tensor, reduce: bool
) -> None:
    stock = _logits(gqa_model, input_ids, "sdpa")
    changed = input_ids.clone()
    changed[0, 40:] = (changed[0, 40:] + 1) % VOCAB
    outputs = []
    for ids in (input_ids, changed):
        member = _membership(SPANS, N_TOKENS, torch.device("cpu"))
        state = _State(reduction=_Reduction(member, 16, None)) if reduce else _State()
        with _analysis(gqa_model, state):
            outputs.append(gqa_model(input_ids=ids, use_cache=False).logits)
    torch.testing.assert_close(outputs[0], stock, atol=1e-5, rtol=1e-5)
    # a later token never reaches an earlier position; it does reach later ones
    torch.testing.assert_close(outputs[1][:, :40], outputs[0][:, :40], atol=1e-6, rtol=0)
    assert (outputs[1][:, 40:] - outputs[0][:, 40:]).abs().max() > 1e-2


def test_implementation_is_restored_after_an_error(
    gqa_model: torch.nn.Module, input_ids: torch.Tensor
) -> None:
    with pytest.raises(RuntimeError, match="boom"), _analysis(gqa_model, _State()):
        assert gqa_model.config._attn_implementation == ATTENTION_IMPLEMENTATION
        raise RuntimeError("boom")
    assert gqa_model.config._attn_implementation == "sdpa"
    gqa_model.train()
    try:
        with pytest.raises(ValueError, match=r"model\.eval\(\)"):
            sentence_attention(gqa_model, input_ids, SPANS)
    finally:
        gqa_model.eval()


# ----------------------------------------------------------------------------------------------------------------
# (iii) suppression
# ----------------------------------------------------------------------------------------------------------------


def _suppression_mask(start: int, end: int, n: int) -> torch.Tensor:
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    allowed = (k <= q) & ~((k >= start) & (k < end) & (q >= end))
    mask = torch.zeros(n, n)
    mask[~allowed] = torch.finfo(torch.float32).min
    return mask[None, None]


def _reference_kl(base: torch.Tensor, supp: torch.Tensor, temperature: float) -> np.ndarray:
    lb = torch.log_softmax(base.double() / temperature, -1)
    ls = torch.log_softmax(supp.double() / temperature, -1)
    return (lb.exp() * (lb - ls)).sum(-1).numpy()


def test_suppressed_forward_equals_explicit_4d_mask(model: torch.nn.Module, input_ids: torch.Tensor) -> None:
    token_kl = suppression_token_kl(model, input_ids, SPANS, batch_size=3)
    base = _logits(model, input_ids, "eager")[0]
    assert token_kl.shape == (len(SPANS), N_TOKENS)
    for i, (start, end) in enumerate(SPANS):
        supp = _logits(model, input_ids, "eager", attention_mask=_suppression_mask(start, end, N_TOKENS))[0]
        reference = _reference_kl(base, supp, 0.6)
        # hiding sentence i never changes a position before its end
        assert np.abs(reference[:end]).max() < 1e-8
        assert np.isnan(token_kl[i, :end]).all()
        if end < N_TOKENS:
            np.testing.assert_allclose(token_kl[i, end:], reference[end:], atol=1e-6, rtol=1e-4)
            assert reference[end:].max() > 1e-3
    assert np.nanmin(token_kl) >= 0


def test_suppression_changes_only_positions_after_the_sentence(
    gqa_model: torch.nn.Module, input_ids: torch.Tensor
) -> None:
    starts = torch.tensor([s for s, _ in SPANS[:4]])
    ends = torch.tensor([e for _, e in SPANS[:4]])
    with _analysis(gqa_model, _State()):
        base = gqa_model(input_ids=input_ids, use_cache=False).logits[0]
    with _analysis(gqa_model, _State(suppression=_Suppression(starts, ends))):
        batched = gqa_model(input_ids=input_ids.expand(4, -1), use_cache=False).logits
    for row, end in enumerate(ends.tolist()):
        torch.testing.assert_close(batched[row, :end], base[:end], atol=1e-6, rtol=0)
        assert (batched[row, end:] - base[end:]).abs().amax(-1).min() > 1e-4


def test_suppression_matrix_alignments_and_log_form(
    gqa_model: torch.nn.Module, input_ids: torch.Tensor
) -> None:
    token_kl = suppression_token_kl(gqa_model, input_ids, SPANS)
    reading = suppression_matrix(gqa_model, input_ids, SPANS, batch_size=8)
    predicting = suppression_matrix(gqa_model, input_ids, SPANS, alignment="predicting")
    logged = suppression_matrix(gqa_model, input_ids, SPANS, log_kl=True)
    n = len(SPANS)
    undefined = np.triu(np.ones((n, n), dtype=bool))
    for m in (reading, predicting, logged):
        assert np.isnan(m[undefined]).all()
        assert not np.isnan(m[~undefined]).any()
    # (3, 4): sentence 4 spans tokens 33..40 and follows sentence 3 (24..33) directly
    assert reading[4, 3] == pytest.approx(token_kl[3, 33:40].mean())
    assert predicting[4, 3] == pytest.approx(token_kl[3, 33:39].mean())  # position 32 lies inside sentence 3
    # (5, 3): sentence 5 spans 41..47, after a one-token gap
    assert predicting[5, 3] == pytest.approx(token_kl[3, 40:46].mean())
    assert logged[5, 2] == pytest.approx(np.log(token_kl[2, 41:47] + 1e-9).mean())
    assert np.all(reading[~undefined] >= 0)


def test_top_p_restricts_both_distributions_to_the_union_of_nuclei(
    gqa_model: torch.nn.Module, input_ids: torch.Tensor
) -> None:
    full = suppression_token_kl(gqa_model, input_ids, SPANS[:3])
    everything = suppression_token_kl(gqa_model, input_ids, SPANS[:3], top_p=1.0, max_ids=VOCAB)
    np.testing.assert_allclose(everything, full, atol=1e-6, equal_nan=True)
    compressed = suppression_token_kl(gqa_model, input_ids, SPANS[:3], top_p=0.5, max_ids=5, temperature=1.0)
    # brute force for sentence 1 at one position
    start, end = SPANS[1]
    base = _logits(gqa_model, input_ids, "eager")[0, 50].double()
    supp = _logits(gqa_model, input_ids, "eager", attention_mask=_suppression_mask(start, end, N_TOKENS))[
        0, 50
    ]
    support = set()
    for z in (base, supp.double()):
        p = torch.softmax(z, -1)
        order = torch.argsort(p, descending=True).tolist()
        total = 0.0
        for k in order[:5]:
            support.add(k)
            total += float(p[k])
            if total >= 0.5:
                break
    ids = sorted(support)
    pb = torch.softmax(base[ids], -1)
    ps = torch.softmax(supp.double()[ids], -1)
    expected = float((pb * (pb.log() - ps.log())).sum())
    assert compressed[1, 50] == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert compressed[1, 50] != pytest.approx(full[1, 50], rel=1e-2)


def test_own_nucleus_mode_is_the_reference_formula(
    gqa_model: torch.nn.Module, input_ids: torch.Tensor
) -> None:
    """The reference keeps each distribution's own nucleus only (-1e9 elsewhere in the union)."""
    from anchors._whitebox import _nucleus

    own = suppression_token_kl(gqa_model, input_ids, SPANS[:2], top_p=0.5, max_ids=5, nucleus="own")
    start, end = SPANS[1]
    base = _logits(gqa_model, input_ids, "eager")[0, end:].double() / 0.6
    supp = _logits(gqa_model, input_ids, "eager", attention_mask=_suppression_mask(start, end, N_TOKENS))[
        0, end:
    ]
    supp = supp.double() / 0.6
    nb, ns = _nucleus(base.log_softmax(-1), 0.5, 5), _nucleus(supp.log_softmax(-1), 0.5, 5)
    union = nb | ns
    fill = -1e9 / 0.6
    lb = base.masked_fill(~nb, fill).masked_fill(~union, float("-inf")).log_softmax(-1)
    ls = supp.masked_fill(~ns, fill).masked_fill(~union, float("-inf")).log_softmax(-1)
    pb = lb.exp()
    expected = torch.where(pb > 0, pb * (lb - ls), torch.zeros(())).sum(-1).clamp_min(0).numpy()
    np.testing.assert_allclose(own[1, end:], expected, rtol=1e-4, atol=1e-6)
    # where the base nucleus holds an id the suppressed one lacks, the reference's value explodes
    assert (own[1, end:] > 1e6).any() == bool((nb & ~ns).any(-1).any())
    with pytest.raises(ValueError, match="choose one of: union, own"):
        suppression_token_kl(gqa_model, input_ids, SPANS[:2], nucleus="both")


def test_baseline_comes_from_the_same_batched_forward(
    gqa_model: torch.nn.Module, input_ids: torch.Tensor
) -> None:
    """No separate full forward: each batch carries an unsuppressed row that its suppressed rows are compared with,
    so rounding differences between code paths cannot show up as a KL floor."""
    calls = []
    original = gqa_model.forward

    def recording(*args, **kwargs):
        ids = kwargs["input_ids"]
        calls.append(
            (ids.shape[0], ids.shape[1], (kwargs.get("cache") or kwargs.get("past_key_values")) is not None)
        )
        return original(*args, **kwargs)

    gqa_model.forward = recording
    try:
        suppression_token_kl(gqa_model, input_ids, SPANS, batch_size=3)
    finally:
        del gqa_model.forward
    # per batch: the shared prefix (batch 1), then 1 baseline + up to 3 suppressed rows on its cache
    firsts = [min(e for _, e in SPANS[lo : lo + 3]) for lo in range(0, len(SPANS), 3)]
    expected = []
    for lo, first in zip(range(0, len(SPANS), 3), firsts, strict=True):
        rows = len(SPANS[lo : lo + 3])
        if first < N_TOKENS:
            expected += [(1, first, False), (rows + 1, N_TOKENS - first, True)]
    assert calls == expected


# ----------------------------------------------------------------------------------------------------------------
# (iv) vertical scores, kurtosis and receiver heads on hand-built attention
# ----------------------------------------------------------------------------------------------------------------


def _striped_attention(seed: int, stripe_heads: list[tuple[int, int]], sentence: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = 16
    attn = rng.uniform(0.01, 0.05, size=(3, 4, n, n))
    for layer, head in stripe_heads:
        attn[layer, head, sentence + 1 :, sentence] = 0.8
    return np.tril(attn)


def test_short_traces_do_not_count_for_a_heads_kurtosis() -> None:
    """Kurtosis of 2 values is always -2: a trace with too few far rows must not pull a head's score there."""
    from scipy.stats import kurtosis

    rng = np.random.default_rng(0)
    long = np.tril(rng.uniform(0.01, 1.0, size=(2, 2, 16, 16)))
    short = np.tril(rng.uniform(0.01, 1.0, size=(2, 2, 6, 6)))  # proximity 4: 2 defined vertical scores
    alone = receiver_head_scores(long, exclude_layers=())
    assert np.isnan(receiver_head_scores(short, exclude_layers=())).all()
    np.testing.assert_allclose(receiver_head_scores([long, short], exclude_layers=()), alone)
    v = vertical_scores(long)
    np.testing.assert_allclose(alone, kurtosis(v, axis=-1, fisher=True, bias=True, nan_policy="omit"))


def test_vertical_scores_average_far_rows_only() -> None:
    attn = np.arange(36, dtype=float).reshape(6, 6)
    v = vertical_scores(attn, proximity_ignore=2)
    assert v[0] == pytest.approx(np.mean([attn[2, 0], attn[3, 0], attn[4, 0], attn[5, 0]]))
    assert v[3] == pytest.approx(attn[5, 3])
    assert np.isnan(v[4:]).all()


def test_receiver_heads_find_the_vertical_stripe() -> None:
    from scipy.stats import kurtosis

    stripes = [(2, 1), (1, 3), (0, 2)]  # layer 0 is excluded by default
    traces = [_striped_attention(seed, stripes, sentence=5) for seed in range(3)]
    scores = receiver_head_scores(traces)
    assert scores.shape == (3, 4)
    assert np.isnan(scores[0]).all()
    v = vertical_scores(traces[1][2, 1])
    assert _one_head(traces[1], 2, 1) == pytest.approx(kurtosis(v[~np.isnan(v)], fisher=True, bias=True))
    heads = receiver_heads(scores, top_k=2)
    assert set(heads) == {(2, 1), (1, 3)}
    assert receiver_heads(scores, top_k=100)[2:] and len(receiver_heads(scores, top_k=100)) == 8
    per_sentence = sentence_receiver_scores(traces[0], heads)
    assert per_sentence.shape == (16,)
    assert int(np.nanargmax(per_sentence)) == 5
    assert np.isnan(per_sentence[-4:]).all()
    with_layer0 = receiver_head_scores(traces, exclude_layers=())
    assert (0, 2) in receiver_heads(with_layer0, top_k=3)


def test_receiver_head_reliability_is_high_for_a_stable_stripe_and_matches_pearson() -> None:
    stripes = [(1, 0), (2, 3)]
    traces = [_striped_attention(seed, stripes, sentence=3 + seed % 4) for seed in range(6)]
    r = receiver_head_reliability(traces)
    even = receiver_head_scores(traces[0::2])[1:].ravel()
    odd = receiver_head_scores(traces[1::2])[1:].ravel()
    assert r == pytest.approx(np.corrcoef(even, odd)[0, 1])
    assert r > 0.9
    with pytest.raises(ValueError, match="at least 2 traces"):
        receiver_head_reliability(traces[:1])


def _one_head(trace: np.ndarray, layer: int, head: int) -> float:
    return float(receiver_head_scores(trace, exclude_layers=())[layer, head])


def test_receiver_pipeline_on_a_model(gqa_model: torch.nn.Module, input_ids: torch.Tensor) -> None:
    attn = sentence_attention(gqa_model, input_ids, SPANS)
    scores = receiver_head_scores([attn, attn])
    np.testing.assert_allclose(scores, receiver_head_scores(attn), equal_nan=True)
    heads = receiver_heads(scores, top_k=3)
    assert len(heads) == 3 and all(layer > 0 for layer, _ in heads)
    assert sentence_receiver_scores(attn, heads).shape == (len(SPANS),)


# ----------------------------------------------------------------------------------------------------------------
# character spans -> token spans
# ----------------------------------------------------------------------------------------------------------------


def test_spans_from_offsets_assigns_leading_space_tokens_to_the_sentence_they_open() -> None:
    # "Q: x\nA. B c." with the CoT "A. B c." starting at character 5
    offsets = [(0, 0), (0, 2), (2, 4), (4, 5), (5, 6), (6, 7), (7, 9), (9, 11), (11, 12)]
    sentences = [(0, 2), (3, 7)]
    assert spans_from_offsets(offsets, sentences, char_offset=5) == [(4, 6), (6, 9)]
    with pytest.raises(ValueError, match="received no token"):
        spans_from_offsets([(0, 4)], [(0, 2), (2, 4)])


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="aB .?\n", min_size=1, max_size=60),
    cuts=st.lists(st.integers(1, 59), max_size=30),
    char_offset=st.integers(0, 5),
)
def test_spans_from_offsets_properties(text: str, cuts: list[int], char_offset: int) -> None:
    from cot import split_sentences

    sentences = split_sentences(text)
    full = "#" * char_offset + text
    bounds = sorted({0, len(full), *(c for c in cuts if c < len(full))})
    offsets = [(0, 0), *itertools.pairwise(bounds)]  # a special token, then contiguous pieces
    try:
        spans = spans_from_offsets(offsets, sentences, char_offset=char_offset)
    except ValueError as error:
        assert "received no token" in str(error)
        return
    assert len(spans) == len(sentences)
    for (s, e), sentence in zip(spans, sentences, strict=True):
        assert 0 < s < e <= len(offsets)
        lo, hi = sentence.start + char_offset, sentence.end + char_offset
        # every token of the span shares characters with the sentence ...
        assert all(offsets[k][0] < hi and offsets[k][1] > lo for k in range(s, e))
        # ... and every token that lies wholly inside the sentence belongs to it
        inside = [
            k
            for k, (a, b) in enumerate(offsets)
            if b > a and a >= sentence.start + char_offset and b <= sentence.end + char_offset
        ]
        assert all(s <= k < e for k in inside)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_tokenize_with_spans_round_trips_through_a_byte_level_tokenizer() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from cot import split_sentences

    prompt = "Problem: add 2 and 3.\n"
    cot = "First, 2 + 3 = 5. Wait, check it again.\n\nYes, the sum is 5. So the answer is 5."
    text = prompt + cot
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator([text] * 5, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=raw)
    sentences = split_sentences(cot)
    ids, spans = tokenize_with_spans(tokenizer, text, sentences, char_offset=len(prompt))
    assert ids.shape[0] == 1 and len(spans) == len(sentences) == 4
    for sentence, (s, e) in zip(sentences, spans, strict=True):
        assert tokenizer.decode(ids[0, s:e]).strip() == sentence.text
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


# ----------------------------------------------------------------------------------------------------------------
# another architecture: Qwen2 with biases and sliding-window layers
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sliding_qwen2() -> torch.nn.Module:
    torch.manual_seed(2)
    config = transformers.Qwen2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        initializer_range=0.2,
        use_sliding_window=True,
        sliding_window=12,
        max_window_layers=1,
        attn_implementation="sdpa",
    )
    model = transformers.Qwen2ForCausalLM(config).eval()
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    return model


def test_qwen2_sliding_window_reduction_matches_eager(
    sliding_qwen2: torch.nn.Module, input_ids: torch.Tensor
) -> None:
    expected = _block_means(_eager_attentions(sliding_qwen2, input_ids), SPANS)
    got = sentence_attention(sliding_qwen2, input_ids, SPANS, query_chunk=6)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)
    # sentence 7 (tokens 55..63) is more than 12 tokens past sentence 0: only the full-attention layer sees it
    assert got[0, :, 7, 0].min() > 1e-4
    assert np.all(got[1:, :, 7, 0] == 0)


def test_qwen2_sliding_window_suppression_with_prefix_cache(
    sliding_qwen2: torch.nn.Module, input_ids: torch.Tensor
) -> None:
    token_kl = suppression_token_kl(sliding_qwen2, input_ids, SPANS, batch_size=3)
    with _analysis(sliding_qwen2, _State()):
        base = sliding_qwen2(input_ids=input_ids, use_cache=False).logits[0]
    for i in (1, 4):
        start, end = SPANS[i]
        suppression = _Suppression(torch.tensor([start]), torch.tensor([end]))
        with _analysis(sliding_qwen2, _State(suppression=suppression)):
            supp = sliding_qwen2(input_ids=input_ids, use_cache=False).logits[0]
        reference = _reference_kl(base, supp, 0.6)
        np.testing.assert_allclose(token_kl[i, end:], reference[end:], atol=1e-6, rtol=1e-4)
        assert reference[end:].max() > 1e-3

"""White-box thought anchors for any Hugging Face causal LM: receiver heads and attention suppression.

Two analyses from the thought-anchors paper (Bogdan et al., 2025, "Thought Anchors: Which LLM Reasoning Steps
Matter?", section 4), computed without ever holding a layers x heads x T x T attention tensor:

- **Receiver heads.** Attention is reduced to a sentence x sentence matrix per (layer, head) inside the attention
  function, one block of query tokens at a time; what leaves each layer is an (H, S, S) array.
- **Attention suppression.** All attention to one sentence's key tokens is masked, in every layer and head, through
  a registered attention mask; the effect on later next-token distributions is measured with KL divergence.

Both work by registering one attention implementation (``AttentionInterface``) and its mask builder
(``AttentionMaskInterface``) under the name :data:`ATTENTION_IMPLEMENTATION`, then switching the model to it with
``model.set_attn_implementation`` for the duration of one call and back afterwards. Any model whose attention goes
through ``ALL_ATTENTION_FUNCTIONS`` (Llama, Qwen2, Qwen3, Mistral, Gemma without soft-capping, ...) is supported.
The mask builder is registered too because transformers builds *no* mask (silently non-causal attention) for an
implementation name it does not know.

Token positions and sentence spans are 0-based indices into ``input_ids``; a span ``(start, end)`` is half-open.
"""

from __future__ import annotations

import contextvars
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

    from cot import Sentence

__all__ = [
    "ATTENTION_IMPLEMENTATION",
    "receiver_head_reliability",
    "receiver_head_scores",
    "receiver_heads",
    "sentence_attention",
    "sentence_receiver_scores",
    "spans_from_offsets",
    "suppression_matrix",
    "suppression_token_kl",
    "tokenize_with_spans",
    "vertical_scores",
]

ATTENTION_IMPLEMENTATION = "cotscope_whitebox"
"""Name under which the analysis attention function and its mask builder are registered in transformers."""

Span = tuple[int, int]


# --------------------------------------------------------------------------------------------------------------
# Sentence character spans -> token spans
# --------------------------------------------------------------------------------------------------------------


def spans_from_offsets(
    offsets: Sequence[tuple[int, int]],
    sentences: Sequence[Sentence] | Sequence[tuple[int, int]],
    char_offset: int = 0,
) -> list[Span]:
    """Token span of every sentence, from a fast tokenizer's offset mapping.

    Sentence ``m`` covers characters ``[start_m + char_offset, end_m + char_offset)`` of the tokenized text
    (``char_offset`` is where the CoT begins inside that text). Token ``k`` with characters ``[a_k, b_k)`` belongs
    to the sentence holding the first of its characters that lies inside any sentence, so a token such as ``" The"``
    (leading space in a gap between sentences) goes to the sentence it opens; tokens with no character inside a
    sentence (prompt, separators, special tokens with offset ``(0, 0)``) belong to none. The span of a sentence is
    ``[first token, last token + 1)``.

    Raises ``ValueError`` if a sentence receives no token (it shares its only token with its neighbour).
    """
    bounds = [(s.start, s.end) if not isinstance(s, tuple) else s for s in sentences]
    bounds = [(a + char_offset, b + char_offset) for a, b in bounds]
    first: list[int | None] = [None] * len(bounds)
    last: list[int | None] = [None] * len(bounds)
    m = 0
    for k, (a, b) in enumerate(offsets):
        if b <= a:
            continue
        # sentences are sorted; skip those that end before this token begins
        while m < len(bounds) and bounds[m][1] <= a:
            m += 1
        owner = None
        for n in range(m, len(bounds)):
            s, e = bounds[n]
            if s >= b:
                break
            if max(a, s) < min(b, e):
                owner = n
                break
        if owner is None:
            continue
        if first[owner] is None:
            first[owner] = k
        last[owner] = k
    spans: list[Span] = []
    for n, (f, la) in enumerate(zip(first, last, strict=True)):
        if f is None or la is None:
            raise ValueError(
                f"sentence {n} (characters {bounds[n][0]}..{bounds[n][1]}) received no token of its own; "
                "merge very short sentences first, e.g. split_sentences(text, min_chars=10)"
            )
        spans.append((f, la + 1))
    return spans


def tokenize_with_spans(
    tokenizer: object,
    text: str,
    sentences: Sequence[Sentence],
    char_offset: int = 0,
    add_special_tokens: bool = True,
) -> tuple[torch.Tensor, list[Span]]:
    """Tokenize ``text`` once and map each sentence's character span to its token span.

    ``text`` is the full sequence the model reads (prompt + CoT); the CoT starts at character ``char_offset``, and
    ``sentences`` come from ``split_sentences(cot)``. Needs a fast tokenizer (``return_offsets_mapping``).
    Returns ``(input_ids of shape (1, T), spans)``; see :func:`spans_from_offsets` for the assignment rule.
    """
    encoded = tokenizer(  # type: ignore[operator]
        text, return_offsets_mapping=True, add_special_tokens=add_special_tokens, return_tensors="pt"
    )
    offsets = [tuple(int(x) for x in pair) for pair in encoded["offset_mapping"][0].tolist()]
    return encoded["input_ids"], spans_from_offsets(offsets, sentences, char_offset)


def _check_spans(spans: Sequence[Span], n_tokens: int) -> list[Span]:
    spans = [(int(s), int(e)) for s, e in spans]
    if not spans:
        raise ValueError("spans is empty; pass at least one (start, end) token span")
    previous_end = 0
    for n, (s, e) in enumerate(spans):
        if not 0 <= s < e <= n_tokens:
            raise ValueError(
                f"span {n} = ({s}, {e}) is not a non-empty token range inside 0..{n_tokens}; "
                "spans are half-open token indices into input_ids"
            )
        if s < previous_end:
            raise ValueError(f"span {n} = ({s}, {e}) overlaps or precedes span {n - 1}; spans must be sorted")
        previous_end = e
    return spans


def _as_ids(input_ids: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
    import torch

    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"input_ids must hold one sequence, shape (T,) or (1, T); got {tuple(ids.shape)}")
    return ids


# --------------------------------------------------------------------------------------------------------------
# The registered attention function and mask builder
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Reduction:
    """Accumulates sum over the (query sentence i, key sentence j) block of attention probabilities per head."""

    membership: torch.Tensor
    """(T, S) float, 1 where token t belongs to sentence s."""
    query_chunk: int
    layers: frozenset[int] | None
    sums: dict[int, torch.Tensor] = field(default_factory=dict)
    calls: int = 0


@dataclass
class _Suppression:
    """Key span ``[start_b, end_b)`` hidden from every query at position >= ``end_b``, one per batch row."""

    starts: torch.Tensor
    ends: torch.Tensor

    def mask_function(self, batch_idx, head_idx, q_idx, kv_idx):  # transformers calls it with index tensors
        start = self.starts[batch_idx]
        end = self.ends[batch_idx]
        return ~((kv_idx >= start) & (kv_idx < end) & (q_idx >= end))


@dataclass
class _State:
    reduction: _Reduction | None = None
    suppression: _Suppression | None = None


_STATE: contextvars.ContextVar[_State | None] = contextvars.ContextVar(
    "cotscope_whitebox_state", default=None
)
_REGISTERED = False


def _mask_builder(*args: object, **kwargs: object) -> torch.Tensor | None:
    """``sdpa_mask`` that always materialises a boolean (B, 1, Q, KV) mask, with the active suppression and-ed in."""
    from transformers.masking_utils import and_masks, causal_mask_function, sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    state = _STATE.get()
    if state is not None and state.suppression is not None:
        base = kwargs.get("mask_function", causal_mask_function)
        kwargs["mask_function"] = and_masks(base, state.suppression.mask_function)
    return sdpa_mask(*args, **kwargs)


def _attention_function(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Stock SDPA attention, or, while a reduction is active, the same attention computed in query blocks with the
    probabilities reduced to sentence blocks on the way."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    state = _STATE.get()
    reduction = state.reduction if state is not None else None
    layer = getattr(module, "layer_idx", None)
    if reduction is not None:
        if layer is None:
            layer = reduction.calls
        reduction.calls += 1
    if reduction is None or (reduction.layers is not None and layer not in reduction.layers):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    for unsupported in ("softcap", "s_aux", "position_bias"):
        if kwargs.get(unsupported) is not None:
            raise NotImplementedError(
                f"sentence_attention does not support attention with `{unsupported}` "
                f"({type(module).__name__}); use a model without it"
            )
    return _reducing_attention(reduction, int(layer), query, key, value, attention_mask, scaling)


def _reducing_attention(
    reduction: _Reduction,
    layer: int,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
) -> tuple[torch.Tensor, None]:
    import torch

    batch, heads, q_len, head_dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    membership = reduction.membership
    if batch != 1 or q_len != kv_len or kv_len != membership.shape[0]:
        raise ValueError(
            f"sentence attention expects one uncached sequence of {membership.shape[0]} tokens; "
            f"got batch {batch}, {q_len} queries, {kv_len} keys"
        )
    scale = scaling if scaling is not None else head_dim**-0.5
    # GQA: query heads h = g * groups + r share key/value head g (transformers' repeat_kv order), so the query is
    # viewed as (kv_heads, groups) and broadcast against the keys instead of copying them.
    q = query.view(batch, kv_heads, groups, q_len, head_dim)
    k_t = key.unsqueeze(2).transpose(-1, -2)
    v = value.unsqueeze(2)
    out = query.new_empty(batch, kv_heads, groups, q_len, value.shape[-1])
    total = torch.zeros(
        heads, membership.shape[1], membership.shape[1], dtype=torch.float32, device=query.device
    )
    positions = torch.arange(kv_len, device=query.device)
    for lo in range(0, q_len, reduction.query_chunk):
        hi = min(lo + reduction.query_chunk, q_len)
        # Keys after the block's last query are normally masked (causal): skip them, which halves the work, unless
        # the mask lets some query see ahead (then every key is kept and the mask decides).
        stop = hi if _masked_beyond(attention_mask, lo, hi) else kv_len
        # in place where possible: two (H, c, T) buffers per block at most (scores, probabilities)
        scores = torch.matmul(q[:, :, :, lo:hi], k_t[..., :stop]).mul_(scale)  # (B, Hkv, groups, c, stop)
        if attention_mask is None:
            allowed = positions[None, :stop] <= positions[lo:hi, None]
            scores.masked_fill_(~allowed, float("-inf"))
        elif attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask[:, :, None, lo:hi, :stop], float("-inf"))
        else:
            scores.add_(attention_mask[:, :, None, lo:hi, :stop])
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        del scores
        out[:, :, :, lo:hi] = torch.matmul(probs.to(value.dtype), v[..., :stop, :])
        # segment sums: (H, c, T) @ (T, S) -> (H, c, S); (S, c) @ (H, c, S) -> (H, S, S)
        per_key_sentence = torch.matmul(probs.reshape(heads, hi - lo, stop), membership[:stop])
        total += torch.matmul(membership[lo:hi].T, per_key_sentence)
    reduction.sums[layer] = reduction.sums.get(layer, 0) + total
    attn_output = out.view(batch, heads, q_len, -1).transpose(1, 2).contiguous()
    return attn_output, None


def _masked_beyond(attention_mask: torch.Tensor | None, lo: int, hi: int) -> bool:
    """Whether queries ``[lo, hi)`` see no key at or after ``hi`` (no mask means causal)."""
    import torch

    if attention_mask is None:
        return True
    ahead = attention_mask[..., lo:hi, hi:]
    if ahead.numel() == 0:
        return True
    if ahead.dtype == torch.bool:
        return not bool(ahead.any())
    # additive float mask: blocked entries hold the dtype's minimum (or -inf)
    return bool((ahead <= torch.finfo(ahead.dtype).min / 2).all())


def _register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_IMPLEMENTATION, _attention_function)
    AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, _mask_builder)
    _REGISTERED = True


@contextmanager
def _analysis(model: torch.nn.Module, state: _State) -> Iterator[None]:
    """Run the model on the registered implementation with ``state`` active; restore its implementation after."""
    import torch

    _register()
    if model.training:
        raise ValueError(
            "the model is in training mode (dropout); call model.eval() before a white-box analysis"
        )
    previous = model.config._attn_implementation
    token = _STATE.set(state)
    model.set_attn_implementation(ATTENTION_IMPLEMENTATION)
    try:
        if model.config._attn_implementation != ATTENTION_IMPLEMENTATION:
            raise NotImplementedError(
                f"{type(model).__name__} cannot switch its attention implementation; white-box analyses need a "
                "model whose attention goes through transformers' AttentionInterface (Llama, Qwen2, Mistral, ...)"
            )
        with torch.no_grad():
            yield
    finally:
        model.set_attn_implementation(previous)
        _STATE.reset(token)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _inputs(
    model: torch.nn.Module, input_ids: torch.Tensor | Sequence[int], spans: Sequence[Span]
) -> tuple[torch.device, torch.Tensor, list[Span]]:
    """The model's device, ``input_ids`` as a (1, T) tensor on it, and ``spans`` checked against T."""
    device = _device(model)
    ids = _as_ids(input_ids, device)
    return device, ids, _check_spans(spans, ids.shape[1])


def _membership(spans: Sequence[Span], n_tokens: int, device: torch.device) -> torch.Tensor:
    import torch

    member = torch.zeros(n_tokens, len(spans), dtype=torch.float32, device=device)
    for n, (s, e) in enumerate(spans):
        member[s:e, n] = 1.0
    return member


# --------------------------------------------------------------------------------------------------------------
# Receiver heads
# --------------------------------------------------------------------------------------------------------------


def sentence_attention(
    model: torch.nn.Module,
    input_ids: torch.Tensor | Sequence[int],
    spans: Sequence[Span],
    *,
    query_chunk: int = 256,
    layers: Sequence[int] | None = None,
) -> np.ndarray:
    """Sentence x sentence attention of every head: ``A[l, h, i, j] = mean_{q in i, k in j} P_lh[q, k]``.

    ``P_lh`` is the post-softmax attention of layer ``l``, head ``h`` (causal zeros included, so ``A[l, h, i, j]``
    is 0 for ``j > i`` and the diagonal block averages over its full square). Computed in one forward pass: the
    registered attention function takes ``query_chunk`` queries at a time, forms ``softmax(q K^T * scale + mask)``
    for all heads, uses it for the layer output (so the model computes exactly what it would with eager attention)
    and reduces it with a (T, S) membership matrix ``M``: ``sum_block = M[chunk]^T (P[chunk] M)``. The largest
    temporaries are two ``(H, query_chunk, T)`` float buffers; keys after a block's last query are skipped when
    the mask hides them. Tokens outside every span are ignored. The model must be in eval mode.

    Returns a float64 array of shape ``(L, H, S, S)``; layers not in ``layers`` (when given) are NaN.
    """
    import torch

    device, ids, spans = _inputs(model, input_ids, spans)
    n_tokens = ids.shape[1]
    if query_chunk < 1:
        raise ValueError(f"query_chunk must be >= 1; got {query_chunk}")
    member = _membership(spans, n_tokens, device)
    reduction = _Reduction(member, query_chunk, None if layers is None else frozenset(int(x) for x in layers))
    with _analysis(model, _State(reduction=reduction)):
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    if not reduction.sums:
        raise NotImplementedError(
            f"no attention layer of {type(model).__name__} called the registered attention function; "
            "sentence_attention needs attention that goes through transformers' AttentionInterface"
        )
    text_config = model.config.get_text_config(decoder=True)
    n_layers = text_config.num_hidden_layers
    n_heads = text_config.num_attention_heads
    sizes = member.sum(0).double().cpu()
    counts = (sizes[:, None] * sizes[None, :]).numpy()
    result = np.full((n_layers, n_heads, len(spans), len(spans)), np.nan)
    for layer, total in reduction.sums.items():
        result[layer] = total.to(torch.float64).cpu().numpy() / counts
    return result


def vertical_scores(attention: np.ndarray, proximity_ignore: int = 4) -> np.ndarray:
    """How much later sentences attend to each sentence: ``v_j = nanmean_{i >= j + proximity_ignore} A[i, j]``.

    ``attention`` has shape ``(..., S, S)`` (query sentence, key sentence). Pairs closer than ``proximity_ignore``
    sentences (and the upper triangle) are left out; ``v_j`` is NaN for the last ``proximity_ignore`` sentences,
    which no sentence is far enough after. Returns shape ``(..., S)``.
    """
    attention = np.asarray(attention, dtype=np.float64)
    n = attention.shape[-1]
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    kept = np.where(i >= j + proximity_ignore, attention, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(kept, axis=-2)


MIN_KURTOSIS_VALUES = 4
"""Fewest defined vertical scores for a kurtosis: of 2 values it is always -2 and of 3 it is bounded, which says
nothing about the head; such a trace does not count for that head."""


def _kurtosis(v: np.ndarray) -> np.ndarray:
    from scipy.stats import kurtosis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        k = kurtosis(v, axis=-1, fisher=True, bias=True, nan_policy="omit")
    k = np.ma.filled(np.ma.asarray(k, dtype=np.float64), np.nan)
    return np.where(np.isfinite(v).sum(-1) >= MIN_KURTOSIS_VALUES, k, np.nan)


def receiver_head_scores(
    attentions: np.ndarray | Sequence[np.ndarray],
    proximity_ignore: int = 4,
    exclude_layers: Sequence[int] = (0,),
) -> np.ndarray:
    """Receiver-head score of every head: Fisher kurtosis of its vertical scores, averaged over traces.

    ``score[l, h] = mean_traces kurtosis(v_lh)`` with ``v_lh`` from :func:`vertical_scores` and
    ``kurtosis(v) = m4 / m2^2 - 3`` (scipy, ``bias=True``, NaN entries of ``v`` omitted; a trace with fewer than
    :data:`MIN_KURTOSIS_VALUES` defined entries does not count for that head). A head that
    concentrates its attention on a few sentences has a heavy-tailed ``v`` and a high score. ``attentions`` is one
    ``(L, H, S, S)`` array from :func:`sentence_attention` or a sequence of them (one per trace; ``S`` may differ).
    Layers in ``exclude_layers`` (default: layer 0, as in the paper) and heads undefined in every trace are NaN.
    Returns shape ``(L, H)``.
    """
    arrays = [attentions] if isinstance(attentions, np.ndarray) else list(attentions)
    if not arrays:
        raise ValueError("attentions is empty; pass at least one (L, H, S, S) array")
    per_trace = np.stack([_kurtosis(vertical_scores(a, proximity_ignore)) for a in arrays])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = np.nanmean(per_trace, axis=0)
    for layer in exclude_layers:
        scores[layer] = np.nan
    return scores


def receiver_head_reliability(
    attentions: Sequence[np.ndarray], proximity_ignore: int = 4, exclude_layers: Sequence[int] = (0,)
) -> float:
    """Split-half reliability of the receiver-head scores: Pearson ``r`` between the scores of the even-numbered and
    the odd-numbered traces, over heads defined in both halves.

    High ``r`` means the same heads act as receivers from trace to trace, so a top-k set chosen on some traces
    carries over to others. Needs at least two traces; NaN if fewer than three heads are defined in both halves.
    """
    arrays = list(attentions)
    if len(arrays) < 2:
        raise ValueError(f"split-half reliability needs at least 2 traces; got {len(arrays)}")
    even = receiver_head_scores(arrays[0::2], proximity_ignore, exclude_layers).ravel()
    odd = receiver_head_scores(arrays[1::2], proximity_ignore, exclude_layers).ravel()
    both = ~np.isnan(even) & ~np.isnan(odd)
    if both.sum() < 3:
        return float("nan")
    return float(np.corrcoef(even[both], odd[both])[0, 1])


def receiver_heads(head_scores: np.ndarray, top_k: int = 20) -> list[tuple[int, int]]:
    """The ``top_k`` heads with the highest receiver-head score, best first, as ``(layer, head)`` pairs.

    NaN scores (excluded layers, undefined heads) are never chosen; fewer than ``top_k`` heads come back if fewer
    are defined.
    """
    scores = np.asarray(head_scores, dtype=np.float64)
    flat = scores.ravel()
    valid = np.flatnonzero(~np.isnan(flat))
    order = valid[np.argsort(-flat[valid], kind="stable")][:top_k]
    return [tuple(int(x) for x in np.unravel_index(n, scores.shape)) for n in order]  # type: ignore[misc]


def sentence_receiver_scores(
    attention: np.ndarray, heads: Sequence[tuple[int, int]], proximity_ignore: int = 4
) -> np.ndarray:
    """Receiver score of each sentence in one trace: ``r_j = mean_{(l, h) in heads} v_lh[j]``.

    ``attention`` is that trace's ``(L, H, S, S)`` array; ``heads`` usually comes from :func:`receiver_heads`.
    NaN for the last ``proximity_ignore`` sentences. Returns shape ``(S,)``.
    """
    if not heads:
        raise ValueError("heads is empty; pass the (layer, head) pairs from receiver_heads(...)")
    layers, hs = zip(*heads, strict=True)
    v = vertical_scores(np.asarray(attention)[list(layers), list(hs)], proximity_ignore)
    return v.mean(axis=0)


# --------------------------------------------------------------------------------------------------------------
# Attention suppression
# --------------------------------------------------------------------------------------------------------------


def _log_probs(logits: torch.Tensor, support: torch.Tensor | None) -> torch.Tensor:
    import torch

    if support is not None:
        logits = logits.masked_fill(~support, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def _nucleus(logp: torch.Tensor, top_p: float, max_ids: int) -> torch.Tensor:
    """Boolean (N, V): the smallest set of ids whose probability reaches ``top_p``, at most ``max_ids`` of them."""
    import torch

    values, ids = logp.topk(min(max_ids, logp.shape[-1]), dim=-1)
    probs = values.exp()
    keep = (probs.cumsum(-1) - probs) < top_p
    return torch.zeros_like(logp, dtype=torch.bool).scatter_(-1, ids, keep)


def _token_kl(
    base_logits: torch.Tensor,
    supp_logits: torch.Tensor,
    temperature: float,
    top_p: float | None,
    max_ids: int,
    nucleus: str = "union",
) -> torch.Tensor:
    """KL(base || suppressed) per position, nats, clipped at 0; see :func:`suppression_token_kl`."""
    import torch

    base = base_logits.float() / temperature
    supp = supp_logits.float() / temperature
    support = None
    if top_p is not None:
        own_base = _nucleus(torch.log_softmax(base, -1), top_p, max_ids)
        own_supp = _nucleus(torch.log_softmax(supp, -1), top_p, max_ids)
        support = own_base | own_supp
        if nucleus == "own":  # the reference: an id outside a distribution's own nucleus has logit -1e9
            base = base.masked_fill(~own_base, -1e9 / temperature)
            supp = supp.masked_fill(~own_supp, -1e9 / temperature)
    lb = _log_probs(base, support)
    ls = _log_probs(supp, support)
    pb = lb.exp()
    terms = torch.where(pb > 0, pb * (lb - ls), torch.zeros((), dtype=pb.dtype, device=pb.device))
    return terms.sum(-1).clamp_min(0.0)


def suppression_token_kl(
    model: torch.nn.Module,
    input_ids: torch.Tensor | Sequence[int],
    spans: Sequence[Span],
    *,
    temperature: float = 0.6,
    top_p: float | None = None,
    max_ids: int = 100,
    batch_size: int = 4,
    nucleus: Literal["union", "own"] = "union",
) -> np.ndarray:
    """Token-level effect of suppressing each sentence: ``K[i, t] = KL(p_t || p_t^(-i))`` in nats.

    ``p_t = softmax(z_t / temperature)`` is the model's next-token distribution at position ``t`` (it predicts token
    ``t + 1``), and ``p_t^(-i)`` the same with sentence ``i`` suppressed: every query at a position ``>= end_i``, in
    every layer and head, is barred from the keys ``[start_i, end_i)`` (pre-softmax score ``-inf``). Queries inside
    sentence ``i`` keep their view (their residual stream carries sentence ``i`` anyway), so positions ``t < end_i``
    are unaffected by construction and ``K[i, t]`` is NaN there.

    With ``top_p`` set (the paper: 0.9999 at ``max_ids=100``), both distributions are restricted to the union of
    their nuclei (each: the fewest ids reaching ``top_p``, at most ``max_ids``) and renormalised before the KL. With
    ``nucleus="union"`` (default) both use their real logits on the whole union; ``nucleus="own"`` reproduces the
    reference code, where each keeps only its own nucleus and every other id of the union gets logit -1e9, so an id
    of the base nucleus missing from the suppressed one adds about ``p * 1e9 / temperature`` nats: values are then
    dominated by which ids fall out of the nucleus, and are not comparable with ``"union"`` values.

    Each batch runs ``batch_size`` suppressed copies of the sequence plus one unsuppressed copy, the baseline its
    rows are compared with, so base and suppressed logits come from the same arithmetic (a separate full forward
    differs from the cached, batched one by rounding: a median 5e-5 nats in bfloat16 on a 4-layer random Llama,
    T=400, on CPU, which would be a noise floor).
    The batch runs on a KV cache of the tokens before its first suppressed sentence ends (computed once per batch):
    the work is ``sum_batches (end_first + (batch_size + 1) * (T - end_first))`` tokens instead of ``S * T``, and the
    memory ``(batch_size + 1) * (T - end_first) * V`` logits.
    Returns a float64 array of shape ``(S, T)``, ``K >= 0``.
    """
    import torch

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None; got {top_p}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if nucleus not in ("union", "own"):
        raise ValueError(f"unknown nucleus {nucleus!r}; choose one of: union, own")
    device, ids, spans = _inputs(model, input_ids, spans)
    n_tokens = ids.shape[1]
    result = np.full((len(spans), n_tokens), np.nan)
    empty = torch.full((1,), n_tokens, device=device)
    for lo in range(0, len(spans), batch_size):
        chunk = spans[lo : lo + batch_size]
        # row 0 suppresses nothing (the empty range [T, T)): the baseline of this batch
        starts = torch.tensor([n_tokens, *(s for s, _ in chunk)], device=device)
        ends = torch.tensor([n_tokens, *(e for _, e in chunk)], device=device)
        first = min(e for _, e in chunk)
        if first >= n_tokens:
            continue
        # Positions before the earliest end in the batch are the same in every row: run them once (batch 1) into a
        # KV cache, copy it per row, and run only the rest with the suppression mask.
        with _analysis(model, _State(suppression=_Suppression(empty, empty))):
            out = model(input_ids=ids[:, :first], use_cache=True, logits_to_keep=1)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        cache.batch_repeat_interleave(len(chunk) + 1)
        with _analysis(model, _State(suppression=_Suppression(starts, ends))):
            logits = model(
                input_ids=ids[:, first:].expand(len(chunk) + 1, -1), cache=cache, use_cache=True
            ).logits
        del cache
        for row, (_, end) in enumerate(chunk, start=1):
            if end >= n_tokens:
                continue
            kl = _token_kl(
                logits[0, end - first :], logits[row, end - first :], temperature, top_p, max_ids, nucleus
            )
            result[lo + row - 1, end:] = kl.double().cpu().numpy()
    return result


def suppression_matrix(
    model: torch.nn.Module,
    input_ids: torch.Tensor | Sequence[int],
    spans: Sequence[Span],
    *,
    temperature: float = 0.6,
    top_p: float | None = None,
    max_ids: int = 100,
    batch_size: int = 4,
    nucleus: Literal["union", "own"] = "union",
    alignment: Literal["reading", "predicting"] = "reading",
    log_kl: bool = False,
) -> np.ndarray:
    """Sentence-to-sentence attention-suppression matrix: ``M[j, i]`` = effect on sentence ``j`` of hiding ``i``.

    ``M[j, i] = mean_{t in T_j} K[i, t]`` with ``K`` from :func:`suppression_token_kl` (KL(base || suppressed),
    nats, ``>= 0``). Logits at position ``t`` predict token ``t + 1``, so two alignments exist:

    - ``"reading"`` (default, as in the thought-anchors code): ``T_j = [start_j, end_j)``, the distributions computed
      while reading sentence ``j`` (they predict its 2nd token through the token after it);
    - ``"predicting"``: ``T_j = [start_j - 1, end_j - 1)``, the distributions over sentence ``j``'s own tokens.
      Positions before ``end_i`` are left out, so when ``j`` directly follows ``i`` the prediction of its first
      token (made at the last token of ``i``) does not count.

    ``log_kl=True`` averages ``log(K + 1e-9)`` instead of ``K``, as the paper's plots do (then values can be
    negative). NaN where undefined: ``j <= i``, and rows with no position left. Returns shape ``(S, S)``.
    """
    if alignment not in ("reading", "predicting"):
        raise ValueError(f"unknown alignment {alignment!r}; choose one of: reading, predicting")
    token_kl = suppression_token_kl(
        model,
        input_ids,
        spans,
        temperature=temperature,
        top_p=top_p,
        max_ids=max_ids,
        batch_size=batch_size,
        nucleus=nucleus,
    )
    if log_kl:
        token_kl = np.log(token_kl + 1e-9)
    shift = 1 if alignment == "predicting" else 0
    n = len(spans)
    matrix = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i + 1, n):
            lo, hi = max(spans[j][0] - shift, spans[i][1]), spans[j][1] - shift
            if hi > lo:
                matrix[j, i] = float(np.mean(token_kl[i, lo:hi]))
    return matrix

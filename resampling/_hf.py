"""The ``hf`` backend: Hugging Face transformers on CPU or CUDA, with shared prefixes and batch-invariant seeds.

Work per call, for a trace of K positions and N samples each:

- **Prefill once.** The prefixes of a trace nest, so one forward pass over the longest prefix gives the KV cache of
  every shorter one (a slice) and the next-token logits at every cut. Distinct roots (other traces, edited traces)
  get one pass each.
- **A probe prefills only what it adds.** A root that shares a long token prefix with the root prefilled just before
  it (a forced-answer probe: the trace's prefix up to a sentence, then the answer cue) reuses that root's KV cache,
  sliced, and prefills only its own tail (see :data:`MIN_SHARED_FRACTION`).
- **Decode in one batch across positions and traces.** Rows (one per rollout) are left-padded into one KV cache;
  finished rows leave the batch at once.
- **Seeds that do not depend on the batch.** Token t of a rollout with seed s is drawn by the Gumbel-max trick with
  noise ``u = hash(s, t, token_id)``: the choice depends only on the row's own logits and its (seed, step), never on
  batch size, batch order or the other rows. (torch's global RNG, which ``generate`` uses, makes every row depend on
  the whole batch.)
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

from resampling._backend import Completion, GenerationJob, eos_token_ids
from resampling._backend import common_prefix as _common_prefix
from resampling._errors import EngineInputError
from resampling._model import DEFAULT_MODEL, load_model, model_identity
from resampling._plan import SamplingParams

__all__ = [
    "CANDIDATES",
    "MIN_SHARED_FRACTION",
    "HFBackend",
    "cache_argument",
    "gumbel_noise",
    "sample_tokens",
]

_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (values kept below 2**32 in int64, so products never overflow)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def context_length(config: Any) -> int | None:
    """The longest sequence a model's positions cover (``max_position_embeddings`` and its other names)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def sliding_window(config: Any) -> int | None:
    """The attention window of a model with sliding-window layers (Mistral, Gemma 2/3, Qwen2 with
    ``use_sliding_window``), else None."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    types = getattr(config, "layer_types", None)
    if types is not None:
        return int(window) if any("sliding" in str(t) for t in types) else None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window)


def _row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per (seed, step): the part of the noise hash that does not depend on the token."""
    lo = seeds & _MASK32
    hi = (seeds >> 32) & _MASK32
    key = _hash32(_hash32(lo) ^ _hash32(hi ^ 0x5BD1E995))
    return _hash32(key ^ _hash32(steps & _MASK32))


def _id_hashes(ids: torch.Tensor) -> torch.Tensor:
    return _hash32(ids * 0x27D4EB2F & _MASK32)


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """32-bit values (0 .. 2**32 - 1, in int64) as int32 with the same bits."""
    return (x - ((x >> 31) << 32)).to(torch.int32)


@functools.lru_cache(maxsize=8)
def _vocab_hashes(vocab: int, device: torch.device) -> torch.Tensor:
    """``_id_hashes`` of every id of a vocabulary (as int32 bit patterns), computed once per (size, device)."""
    return _as_int32(_id_hashes(torch.arange(vocab, device=device, dtype=torch.int64)))


def gumbel_noise(
    seeds: torch.Tensor, steps: torch.Tensor, tokens: int | torch.Tensor, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Gumbel(0, 1) noise, a pure function of (seed, step, token id) per entry.

    ``tokens`` is the vocabulary size (noise for every id, shape ``(rows, vocab)``) or a ``(rows, k)`` tensor of
    each row's candidate ids. The uniform is ``u = (2 (h >> 9) + 1) / 2**24`` for a 32-bit hash ``h`` of (seed,
    step, id): 2**23 levels, exact in float32, never 0 or 1, so ``-log(-log(u))`` is finite.
    """
    key = _row_keys(seeds.to(device=device, dtype=torch.int64), steps.to(device=device, dtype=torch.int64))
    if isinstance(tokens, int):
        ids = _vocab_hashes(tokens, key.device)[None, :]
    else:
        ids = _as_int32(_id_hashes(tokens.to(device=device, dtype=torch.int64)))
    # _hash32 of key ^ ids, in place, in int32: the same 32 bits as the int64 mixer (products wrap modulo 2**32;
    # right shifts are masked so that they shift in zeros), at half the memory traffic of vocabulary-wide copies
    h = _as_int32(key)[:, None] ^ ids
    for _ in range(2):
        x = (h >> 16) & 0xFFFF
        x ^= h
        x *= 0x45D9F3B
        h = x
    h ^= (h >> 16) & 0xFFFF
    h = (h >> 8) & 0xFFFFFF
    h |= 1  # 2 (h >> 9) + 1
    u = h.to(dtype)
    u *= 1.0 / (1 << 24)
    return u.log_().neg_().log_().neg_()


CANDIDATES = (64, 1024)
"""Candidate-set sizes tried (``torch.topk``) before the threshold search over the whole vocabulary."""

SEARCH_CHUNK = {"cpu": 1 << 18, "cuda": 1 << 24}
"""Entries (rows x vocabulary) the threshold search handles at once: on CPU a few rows, so that its temporaries stay
in cache; elsewhere enough rows to fill the device, in bounded memory."""

SAMPLER_VERSION = 3
"""Changes whenever the same (logits, seed, step) can draw another token; part of the backend identity."""

PREFILL_VERSION = 2
"""Changes whenever a prompt's logits can be computed another way (so a draw can change); part of the backend
identity. 2: a root sharing a long prefix with the previous root prefills only its tail on that root's KV cache."""

COMPACT_FRACTION = 0.25
"""A decode batch drops its finished rows from the KV cache once they are at least this fraction of its rows
(0: at every step that finishes a row). Finished rows left in the batch are fed a token and their outputs are
ignored; a live row's tokens do not depend on them."""

ROOT_WINDOW_FRACTION = 0.25
"""Roots (prompts that others are prefixes of: a trace, a forced-answer probe) are decoded in windows whose KV
caches and cut logits take at most this fraction of the KV budget, on top of it. Within a window rows go longest
prefix first, so a batch pads its rows to about their own length. The rows of a dataset (every trace's every
prefix length) used to be decoded trace by trace, each batch padding prefixes of 20 to 90 tokens to the longest:
on 20 ``arith`` organism traces the engine pass took 3.59 s against 4.11 s (medians of 4, alternated in one
process; the same rows). A single trace is one window and decodes as before."""

MIN_SHARED_FRACTION = 0.5
"""A root reuses the previous root's KV cache when the token prefix they share is at least this fraction of it
(it then prefills at most as many tokens as it reuses): forced-answer probes share all but their cue; roots of
other traces share only the chat template's first tokens and are prefilled whole."""


def sample_tokens(
    logits: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
    params: SamplingParams,
    counts: dict[str, int] | None = None,
) -> torch.Tensor:
    """Draw one token per row: temperature, top-k, top-p, then Gumbel-max with per-row hashed noise.

    The nucleus (top-p; Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration") is the smallest set
    of most likely tokens whose mass reaches ``top_p``: with ``p`` the softmax of ``logits / T`` in descending
    order, token j is kept iff ``sum_{i<j} p_i < top_p``, and every token tied with the last kept one is kept too,
    so the set depends on the values only. Equivalently it is ``{p >= t}`` for the largest probability ``t`` whose
    mass at or above, ``sum_{p_i >= t} p_i``, reaches ``top_p``. It is found without sorting the vocabulary: the 64
    most likely tokens (``torch.topk``) hold the whole nucleus as soon as one of them falls outside it; rows where
    none does try 1,024, and the rest search the threshold over the whole vocabulary (:func:`_nucleus_keys`), so
    the set is exact in every case. The softmax normaliser comes from one fused ``log_softmax`` over the whole
    vocabulary (renormalised over the top-k set when ``top_k`` is set). Among the kept tokens the draw is
    ``argmax(log p + g)`` (the same as ``argmax(logits / T + g)``) with Gumbel noise
    ``g = gumbel_noise(seed, step, token id)``: an exact draw from the renormalised nucleus (the Gumbel-max trick)
    that depends on the row's own logits and (seed, step) only, never on the batch. Scores and noise are float32.
    ``counts`` (if given) tallies the rows settled by each candidate-set size (the vocabulary size for the search).
    """
    x = logits if logits.dtype == torch.float32 else logits.float()
    if params.temperature == 0:
        return x.argmax(dim=-1)
    rows, vocab = x.shape
    seeds, steps = seeds.to(x.device), steps.to(x.device)
    # log-probabilities after temperature: one fused pass gives the normaliser of every row
    logp = torch.log_softmax(x if params.temperature == 1 else x * (1.0 / params.temperature), dim=-1)
    out = torch.empty(rows, dtype=torch.long, device=x.device)
    if params.top_k and params.top_k < vocab:
        vals, ids = torch.topk(logp, params.top_k, dim=-1)
        vals = vals - torch.logsumexp(vals, dim=-1, keepdim=True)  # renormalised over the top k
        _draw(vals, ids, seeds, steps, params.top_p, out, None, True, counts)
        return out
    if params.top_p >= 1.0:  # nothing is cut: noise for every id
        _tally(counts, vocab, rows)
        return (logp + gumbel_noise(seeds, steps, vocab, device=x.device)).argmax(dim=-1)
    todo = torch.arange(rows, device=x.device)  # rows still to draw
    search = []  # rows that go straight to the threshold search
    sizes = [c for c in CANDIDATES if c < vocab]
    for i, k in enumerate(sizes):
        if not todo.numel():
            break
        vals, ids = torch.topk(logp if i == 0 else logp[todo], k, dim=-1)
        done = _draw(vals, ids, seeds[todo], steps[todo], params.top_p, out, todo, False, counts)
        todo, vals = todo[~done], vals[~done]
        if i + 1 < len(sizes) and todo.numel():
            # The next set settles a row only if its first (size - 1) tokens reach top_p; their mass is at most
            # that of these k plus (size - 1 - k) times the least of them. Rows short of it skip that set.
            bound = vals.exp().sum(-1) + (sizes[i + 1] - 1 - k) * vals[:, -1].exp()
            search.append(todo[bound < params.top_p])
            todo = todo[bound >= params.top_p]
    todo = torch.cat([*search, todo])
    if not todo.numel():
        return out
    _tally(counts, vocab, int(todo.numel()))
    step = max(1, SEARCH_CHUNK.get(x.device.type, SEARCH_CHUNK["cuda"]) // vocab)
    for first in range(0, int(todo.numel()), step):
        at = todo[first : first + step]
        sub = logp[at]
        key, cutoff = _nucleus_keys(sub, params.top_p)
        scores = sub.masked_fill_(key > cutoff, float("-inf"))
        scores += gumbel_noise(seeds[at], steps[at], vocab, device=x.device)
        out[at] = scores.argmax(dim=-1)
    return out


def _tally(counts: dict[str, int] | None, k: int, rows: int) -> None:
    if counts is not None:
        counts[f"sampler_rows_k{k}"] = counts.get(f"sampler_rows_k{k}", 0) + rows


def _radix_passes(vocab: int) -> list[tuple[int, int]]:
    """(lowest bit, width) of each pass of the threshold search over the 31 bits of a key: buckets of up to about
    as many values as ids (8 to 16 bits a pass), so that a row's buckets do not outweigh the row; 16 bits then 15
    at 129,280 ids."""
    passes = -(-31 // min(16, max(8, vocab.bit_length())))
    widths = [31 // passes + (i < 31 % passes) for i in range(passes)]
    lows = [31 - sum(widths[: i + 1]) for i in range(passes)]
    return list(zip(lows, widths, strict=True))


def _nucleus_keys(logp: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each entry's key and each row's cutoff (int32): the nucleus of a row is ``key <= cutoff``.

    The key is the bit pattern of ``-log p`` as an integer (non-negative floats order like their bits), so the
    most likely token has the smallest key and tied tokens share one. The cutoff is the smallest key whose mass at
    or below reaches ``top_p``, found by a radix select on its bits without sorting: each pass sums the mass of
    the keys that agree with the bits fixed so far into one bucket per value of the next bits (float64 sums of the
    float32 probabilities), adds the mass of the keys below (more likely), and fixes those bits to the first
    bucket where the running mass reaches ``top_p``. The passes (:func:`_radix_passes`) fix all 31 bits, so the
    cutoff is exact whatever the ties. The first pass buckets every entry, over only the range of top bits the
    row uses; the later ones only the entries of the bucket the first pass chose (a few percent of the vocabulary
    when the distribution is flat). When the whole mass falls short of ``top_p`` (rounding, ``top_p`` near 1) the
    cutoff keeps every token.
    """
    key = logp.view(torch.int32) & 0x7FFFFFFF  # log p <= 0: dropping the sign gives -log p (-0.0 -> 0)
    mass = logp.exp().double()
    rows = logp.shape[0]
    below = torch.zeros(rows, 1, dtype=torch.float64, device=logp.device)
    passes = _radix_passes(logp.shape[1])
    low, width = passes[0]
    top = key >> low
    first = top.amin(1, keepdim=True)  # per row: buckets start at the row's most likely top bits
    reached, below = _radix_pass(top - first, mass, None, 1 << width, below, top_p)
    cutoff = torch.where(reached == (1 << width) - 1, reached, reached + first)
    rows_in, cols_in = (top == cutoff).nonzero(as_tuple=True)  # the entries that decide the remaining bits
    k, m = key[rows_in, cols_in], mass[rows_in, cols_in]
    for low, width in passes[1:]:
        bits = (k >> low) & ((1 << width) - 1)
        reached, below = _radix_pass(bits, m, rows_in, 1 << width, below, top_p)
        cutoff = (cutoff << width) | reached
        keep = bits == reached[rows_in, 0]
        rows_in, k, m = rows_in[keep], k[keep], m[keep]
    return key, cutoff


def _radix_pass(
    bucket: torch.Tensor,
    mass: torch.Tensor,
    rows_in: torch.Tensor | None,
    n: int,
    below: torch.Tensor,
    top_p: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of the radix select: ``bucket`` (values in ``0..n-1``) and ``mass`` of each entry, as a
    ``(rows, vocab)`` matrix (``rows_in`` None) or as flat entries of rows ``rows_in``; ``below`` is each row's
    mass of more likely keys. Returns each row's bucket where the running mass reaches ``top_p`` (``n - 1`` when
    it never does) and the mass below that bucket. Only the range of buckets in use is summed."""
    rows = below.shape[0]
    lo, span = (int(bucket.min()), int(bucket.max()) - int(bucket.min()) + 1) if bucket.numel() else (0, 1)
    sums = torch.zeros(rows, span, dtype=torch.float64, device=below.device)
    if rows_in is None:
        index = bucket - lo
        # int32 indices save a full-width int64 copy on the CPU; other devices get the documented int64
        sums.scatter_add_(1, index if index.device.type == "cpu" else index.long(), mass)
    else:
        sums.index_put_((rows_in, (bucket - lo).long()), mass, accumulate=True)
    running = sums.cumsum_(1).add_(below)
    count = (running < top_p).sum(1, keepdim=True)  # buckets wholly below top_p
    below = torch.where(count > 0, running.gather(1, (count - 1).clamp_(min=0)), below)
    return torch.where(count < span, count + lo, n - 1).to(torch.int32), below


def nucleus_mask(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """The top-p nucleus of each row of log-probabilities, as a mask (see :func:`_nucleus_keys`)."""
    key, cutoff = _nucleus_keys(logp, top_p)
    return key <= cutoff


def _draw(vals, ids, seeds, steps, top_p, out, rows, complete, counts) -> torch.Tensor:
    """Gumbel-max over the nucleus among candidates ``ids`` with log-probabilities ``vals`` (descending); writes
    the rows whose nucleus lies within the candidates into ``out`` (at ``rows``, or all) and returns which."""
    probs = torch.exp(vals)
    before = torch.cumsum(probs, dim=-1).roll(1, dims=-1)  # mass of the more likely candidates
    before[:, 0] = 0.0
    n_in = (before < top_p).sum(dim=-1).clamp(min=1)
    cutoff = vals.gather(1, (n_in - 1)[:, None])
    done = torch.ones_like(n_in, dtype=torch.bool) if complete else vals[:, -1] < cutoff[:, 0]
    scores = vals.masked_fill(vals < cutoff, float("-inf")) + gumbel_noise(
        seeds, steps, ids, device=vals.device
    )
    token = ids.gather(1, scores.argmax(dim=-1, keepdim=True)).squeeze(1)
    where = done.nonzero().squeeze(1)
    if rows is None:
        out[where] = token[where]
    else:
        out[rows[where]] = token[where]
    _tally(counts, vals.shape[1], int(where.numel()))
    return done


def default_kv_budget_gb(device: torch.device) -> float:
    """Memory for decoding rows: 1 GiB on CPU; on CUDA half of what is free when the backend is built."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(0.5, free / 2 / 2**30)
    return 1.0


class _GrowingLayer(DynamicLayer):
    """One layer's KV cache in a buffer allocated once per decode batch: a step writes one column in place
    (``DynamicLayer`` would concatenate, copying the whole cache every step); ``keys``/``values`` are views of
    the filled part."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self._keys, self._values, self.length = keys, values, int(length)
        self.device = keys.device
        self.is_initialized = True
        self._views()

    def _views(self) -> None:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        if self.length + n > self._keys.shape[-2]:
            raise RuntimeError("decode ran past the KV buffer allocated for it")
        self._keys[:, :, self.length : self.length + n] = key_states
        self._values[:, :, self.length : self.length + n] = value_states
        self.length += n
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # only the filled columns are copied: the rest of a buffer is written by later steps before it is read
        # (a 512-row batch of the arith organism: 0.6 ms against 1.8 ms for the whole buffer, per tensor)
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((len(indices), *old.shape[1:]))
            torch.index_select(old[:, :, : self.length], 0, indices, out=new[:, :, : self.length])
            setattr(self, name, new)
        self._views()


@dataclass
class _Row:
    job: int
    sample: int
    seed: int
    root: int
    length: int


def cache_argument(model: Any) -> str:
    """The name under which ``model.forward`` takes its KV cache: ``cache`` in recent ``transformers``,
    ``past_key_values`` before (and in wrappers that take only ``**kwargs``). Passing the wrong one is not an error
    there (it lands in ``**kwargs`` and is ignored), so every decode step would silently run without its context."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class HFBackend:
    """Sampling with a transformers causal LM; see the module docstring for how work is shared."""

    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str = "(in memory)",
        path=None,
        batch_size: int = 512,
        kv_budget_gb: float | None = None,
        stop_token_ids: Sequence[int] | None = None,
        shared_prefill: bool = True,
        compact_fraction: float = COMPACT_FRACTION,
    ) -> None:
        self.model = model.eval()
        if not 0 <= compact_fraction <= 1:
            raise EngineInputError(f"compact_fraction must be in [0, 1], got {compact_fraction}")
        self.compact_fraction = float(compact_fraction)
        """Finished rows leave a decode batch's cache once they are this fraction of it (:data:`COMPACT_FRACTION`)."""
        self.shared_prefill = bool(shared_prefill)
        """Prefill a root that shares a long prefix with the previous root on that root's sliced KV cache (False:
        every root is prefilled whole, as before ``PREFILL_VERSION`` 2; kept for the benchmark's comparison)."""
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.path = path
        self.batch_size = int(batch_size)
        if stop_token_ids is None:
            stop_token_ids = eos_token_ids(tokenizer, model)
        self.stop_token_ids = list(stop_token_ids)
        self.device = next(model.parameters()).device
        self._cache_arg = cache_argument(model)
        if kv_budget_gb is None:
            kv_budget_gb = default_kv_budget_gb(self.device)
        if not kv_budget_gb > 0:
            raise EngineInputError(f"kv_budget_gb must be > 0, got {kv_budget_gb}")
        self.kv_budget_gb = float(kv_budget_gb)
        self.stats: dict[str, float] = defaultdict(int)
        self._identity: dict | None = None

    @classmethod
    def from_model_id(
        cls,
        model_id: str = DEFAULT_MODEL,
        device: str | None = None,
        batch_size: int = 512,
        kv_budget_gb: float | None = None,
        **_: Any,
    ):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = load_model(model_id, device=device)
        return cls(
            loaded.model,
            loaded.tokenizer,
            model_id=model_id,
            path=loaded.path,
            batch_size=batch_size,
            kv_budget_gb=kv_budget_gb,
        )

    @functools.cached_property
    def _sizes(self) -> tuple[int, int]:
        """(bytes of one token's KV cache: layers x key-value heads x head dim x 2 (keys and values) x bytes per
        value, vocabulary size), read from the model once: :meth:`plan_batches` asks for every row."""
        config = self.model.config.get_text_config(decoder=True)
        heads = int(getattr(config, "num_attention_heads", 1))
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        itemsize = next(self.model.parameters()).element_size()
        return int(config.num_hidden_layers) * kv_heads * head_dim * 2 * itemsize, int(config.vocab_size)

    def row_bytes(self, width: int) -> int:
        """Memory one decoding row holds: its KV cache over ``width`` positions (``width`` x layers x key-value
        heads x head dim x 2 (keys and values) x bytes per value) plus its logits and the sampler's two
        vocabulary-wide float32 copies."""
        per_token, vocab = self._sizes
        return width * per_token + 3 * 4 * vocab

    @property
    def max_context(self) -> int | None:
        """Positions the model can attend over (prompt plus new tokens), from its config; None when it names none."""
        return context_length(self.model.config)

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {
                "backend": "hf",
                **model_identity(self.model_id, self.model, self.tokenizer, self.path),
                # the same weights give other rollouts in another precision or on another kind of device
                "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                # so do other kernels: torch, transformers and the attention implementation
                "torch": torch.__version__,
                "transformers": _transformers_version(),
                "attn_implementation": str(getattr(self.model.config, "_attn_implementation", None)),
                "device_type": self.device.type,
                "stop_token_ids": sorted(int(t) for t in self.stop_token_ids),
                "sampler": SAMPLER_VERSION,
            }
            if self.shared_prefill:
                self._identity["prefill"] = PREFILL_VERSION
        return self._identity

    # -- generation ---------------------------------------------------------------------------------------------

    def generate(self, jobs: Sequence[GenerationJob]) -> Iterator[tuple[GenerationJob, list[Completion]]]:
        window = sliding_window(self.model.config)
        if window is not None:
            longest = max((len(j.prompt_ids) + int(j.params.max_new_tokens or 0) for j in jobs), default=0)
            if longest > window:
                raise EngineInputError(
                    f"{self.model_id} uses sliding-window attention over {window} tokens and a job needs "
                    f"{longest}; the hf backend's shared-prefix cache keeps every key, so it cannot run such a "
                    "model past its window: use --backend vllm or openai"
                )
        by_params: dict[SamplingParams, list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            by_params[job.params].append(i)
        for params, idx in by_params.items():
            yield from self._generate_group([jobs[i] for i in idx], params)

    def plan_batches(self, lengths: Sequence[int], max_new_tokens: int) -> list[list[int]]:
        """Indices of rows decoded together, in order: consecutive rows, at most ``batch_size`` of them, and no
        more than fit in the memory budget (``len(batch) * row_bytes(longest prefix + max_new_tokens)``). Rows
        that come longest-first pack the budget best."""
        budget = self.kv_budget_gb * 2**30
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i, length in enumerate(lengths):
            wider = max(longest, int(length))
            if current and (
                len(current) >= self.batch_size
                or (len(current) + 1) * self.row_bytes(wider + max_new_tokens) > budget
            ):
                batches.append(current)
                current, wider = [], int(length)
            current.append(i)
            longest = wider
        if current:
            batches.append(current)
        return batches

    @torch.inference_mode()
    def _generate_group(self, jobs: list[GenerationJob], params: SamplingParams):
        if params.max_new_tokens is None:
            raise ValueError("max_new_tokens is required")
        roots, root_of = _prefix_roots([j.prompt_ids for j in jobs], [j.route for j in jobs])
        rows: list[_Row] = []
        for j, job in enumerate(jobs):
            rows.extend(
                _Row(j, s, seed, root_of[j], len(job.prompt_ids))
                for s, seed in zip(job.samples, job.seeds, strict=True)
            )
        # Roots in windows (consecutive roots whose KV and first logits fit ROOT_WINDOW_FRACTION of the budget;
        # a root's KV lives only while its window decodes); within a window, longest prefixes first, so that the
        # rows of a batch have prefixes of about one length (a dataset's traces each span every length).
        window = self._root_windows(roots, rows)
        rows.sort(key=lambda r: (window[r.root], -r.length, r.root, r.job, r.sample))
        batches = [
            [rows[i] for i in idx]
            for idx in self.plan_batches([r.length for r in rows], int(params.max_new_tokens))
        ]
        # Which cut positions of each root we need next-token logits for, and the last batch that reads the root.
        needed: dict[int, set[int]] = defaultdict(set)
        last_use: dict[int, int] = {}
        first_use: dict[int, int] = {}
        for b, batch in enumerate(batches):
            for row in batch:
                needed[row.root].add(row.length - 1)
                last_use[row.root] = b
                first_use.setdefault(row.root, b)
        if self.shared_prefill:  # a root's KV lives until the next root is prefilled on top of it
            for r in range(1, len(roots)):
                last_use[r - 1] = max(last_use[r - 1], first_use[r])
        remaining: dict[int, int] = defaultdict(int)
        for row in rows:
            remaining[row.job] += 1
        kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        first_logits: dict[tuple[int, int], torch.Tensor] = {}
        done: dict[int, list[Completion]] = defaultdict(list)
        for b, batch in enumerate(batches):
            for r in sorted({row.root for row in batch} - set(kv)):
                positions = sorted(needed[r])
                shared = 0
                if self.shared_prefill and r - 1 in kv:
                    # the logits of every cut of this root come from the tail, so the tail starts at or before the
                    # first cut
                    shared = min(_common_prefix(roots[r], roots[r - 1]), positions[0])
                    if shared < MIN_SHARED_FRACTION * len(roots[r]):
                        shared = 0
                kv[r], logits = self._prefill(roots[r], positions, kv.get(r - 1), shared)
                for pos, row_logits in zip(positions, logits, strict=True):
                    first_logits[(r, pos + 1)] = row_logits
            self.stats["batches"] += 1
            self.stats["peak_batch_rows"] = max(self.stats["peak_batch_rows"], len(batch))
            for row, completion in zip(batch, self._decode(batch, kv, first_logits, params), strict=True):
                done[row.job].append(completion)
                remaining[row.job] -= 1
                if remaining[row.job] == 0:
                    yield jobs[row.job], sorted(done.pop(row.job), key=lambda c: c.sample)
            for r in [r for r in kv if last_use[r] <= b]:  # free what no later batch reads
                del kv[r]
                for key in [key for key in first_logits if key[0] == r]:
                    del first_logits[key]

    def _root_windows(self, roots: list[tuple[int, ...]], rows: list[_Row]) -> list[int]:
        """The window of each root: consecutive roots, as many as hold together at most ROOT_WINDOW_FRACTION of the
        KV budget in their KV caches and the next-token logits of their cut positions (at least one root each)."""
        cuts: dict[int, set[int]] = defaultdict(set)
        for row in rows:
            cuts[row.root].add(row.length)
        per_token, vocab = self._sizes
        budget = ROOT_WINDOW_FRACTION * self.kv_budget_gb * 2**30
        window, used, k = [], 0.0, 0
        for r, root in enumerate(roots):
            size = len(root) * per_token + len(cuts[r]) * 4 * vocab
            if used and used + size > budget:
                k, used = k + 1, 0.0
            window.append(k)
            used += size
        return window

    def _prefill(self, ids: tuple[int, ...], positions: list[int], base=None, shared: int = 0):
        """The KV cache of ``ids`` and the next-token logits after each of ``positions``. With ``shared`` > 0 the
        first ``shared`` tokens' keys and values are read from ``base`` (another root's cache that starts with the
        same tokens) and only the rest runs through the model."""
        from transformers import DynamicCache

        start = time.perf_counter()
        cache = None
        if shared:
            cache = DynamicCache(config=self.model.config)
            for layer, (k, v) in enumerate(base):
                cache.update(k[:, :, :shared], v[:, :, :shared], layer)
        input_ids = torch.tensor([ids[shared:]], device=self.device)
        keep = torch.tensor([p - shared for p in positions], device=self.device)
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=keep, **{self._cache_arg: cache})
        self.stats["prefill_tokens"] += len(ids) - shared
        self.stats["prefill_tokens_reused"] += shared
        self.stats["forward_calls"] += 1
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        logits = out.logits[0].float()
        self.stats["prefill_seconds"] += time.perf_counter() - start
        return layers, logits

    def _decode(self, batch: list[_Row], kv, first_logits, params: SamplingParams) -> list[Completion]:
        from transformers import DynamicCache

        b = len(batch)
        max_new = int(params.max_new_tokens or 1)
        lmax = max(row.length for row in batch)
        width = lmax + max_new - 1  # the last sampled token is never fed back
        # Rows of one (root, length) are consecutive: each group's prefix KV is copied in with one broadcast.
        groups: list[tuple[int, int, int, int]] = []  # (first row, end row, root, length)
        for i, row in enumerate(batch):
            if groups and groups[-1][2:] == (row.root, row.length):
                groups[-1] = (groups[-1][0], i + 1, row.root, row.length)
            else:
                groups.append((i, i + 1, row.root, row.length))
        cache = DynamicCache(config=self.model.config)
        layers = []
        for layer in range(len(next(iter(kv.values())))):
            k0, v0 = kv[batch[0].root][layer]
            keys = k0.new_empty((b, k0.shape[1], width, k0.shape[3]))
            values = v0.new_empty((b, v0.shape[1], width, v0.shape[3]))
            for first, end, root, length in groups:
                k, v = kv[root][layer]
                keys[first:end, :, : lmax - length] = 0
                values[first:end, :, : lmax - length] = 0
                keys[first:end, :, lmax - length : lmax] = k[:, :, :length]
                values[first:end, :, lmax - length : lmax] = v[:, :, :length]
            layers.append(_GrowingLayer(keys, values, lmax))
        cache.layers = layers
        lengths = torch.tensor([row.length for row in batch], device=self.device)
        full_mask = (torch.arange(width, device=self.device)[None, :] >= (lmax - lengths)[:, None]).long()
        seeds = torch.tensor([row.seed for row in batch], dtype=torch.int64, device=self.device)
        logits = torch.stack([first_logits[(row.root, row.length)] for row in batch])

        generated = torch.full((b, max_new), -1, dtype=torch.long, device=self.device)
        n_gen = torch.zeros(b, dtype=torch.long)
        finish: list[str | None] = [None] * b
        stop_ids = torch.tensor(self.stop_token_ids or [-1], device=self.device)
        active = torch.arange(b)  # original row index of each live cache row
        # per cache row: still decoding (a finished row stays until COMPACT_FRACTION of the rows have finished)
        live = torch.ones(b, dtype=torch.bool)
        tokens = torch.zeros(b, dtype=torch.long, device=self.device)
        for step in range(max_new):
            start = time.perf_counter()
            rows = live.nonzero().squeeze(1)
            ids = active[rows]  # original index of each live row
            drawn = sample_tokens(
                logits[rows.to(self.device)] if len(rows) < len(live) else logits,
                seeds[ids.to(self.device)],
                torch.full((len(ids),), step, device=self.device),
                params,
                self.stats,
            )
            self.stats["sample_seconds"] += time.perf_counter() - start
            tokens[rows.to(self.device)] = drawn
            generated[ids, step] = drawn
            n_gen[ids] += 1
            self.stats["decode_tokens"] += len(ids)
            is_stop = torch.isin(drawn, stop_ids).cpu()
            if params.stop:
                is_stop |= self._hit_stop_string(generated, ids, n_gen, params.stop)
            for i in ids[is_stop].tolist():
                finish[i] = "stop"
            if step == max_new - 1:
                for i in ids[~is_stop].tolist():
                    finish[i] = "length"
                break
            live[rows[is_stop]] = False
            n_live = int(live.sum())
            if not n_live:
                break
            # Drop finished rows from the cache once they are COMPACT_FRACTION of it: each drop copies every
            # layer's whole KV buffer, and a finished row carried along costs one row of a step.
            if n_live < len(live) and len(live) - n_live >= self.compact_fraction * len(live):
                sel = live.nonzero().squeeze(1).to(self.device)
                cache.batch_select_indices(sel)
                full_mask = full_mask[sel]
                lengths = lengths[sel]
                tokens = tokens[sel]
                active = active[live]
                live = torch.ones(n_live, dtype=torch.bool)
            start = time.perf_counter()
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=full_mask[:, : lmax + step + 1],
                position_ids=(lengths + step)[:, None],
                use_cache=True,
                **{self._cache_arg: cache},
            )
            logits = out.logits[:, -1].float()
            self.stats["forward_calls"] += 1
            self.stats["decode_forward_seconds"] += time.perf_counter() - start
            self.stats["decode_steps"] += 1
        return [
            self._completion(row, generated[i, : n_gen[i]].tolist(), finish[i], params)
            for i, row in enumerate(batch)
        ]

    def _hit_stop_string(self, generated, active, n_gen, stops: tuple[str, ...]) -> torch.Tensor:
        hits = []
        # a character is at most 4 UTF-8 bytes and a token at least one byte (byte-level BPE), so a stop string of
        # c characters lies within the last 4c tokens, plus one it may start inside
        window = max(8, 4 * max(len(s) for s in stops) + 1)
        for i in active.tolist():
            tail = generated[i, max(0, int(n_gen[i]) - window) : int(n_gen[i])].tolist()
            text = self.tokenizer.decode(tail, skip_special_tokens=True)
            hits.append(any(s in text for s in stops))
        return torch.tensor(hits, dtype=torch.bool)

    def _completion(
        self, row: _Row, ids: list[int], finish: str | None, params: SamplingParams
    ) -> Completion:
        if finish == "stop" and ids and ids[-1] in self.stop_token_ids:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if params.stop:
            cut = min((text.find(s) for s in params.stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        return Completion(sample=row.sample, seed=row.seed, token_ids=ids, text=text, finish_reason=finish)


def _prefix_roots(
    prompts: Sequence[tuple[int, ...]], groups: Sequence[str] | None = None
) -> tuple[list[tuple[int, ...]], list[int]]:
    """Group prompts under the longest prompts they are prefixes of: one prefill per root serves them all.

    Roots come longest first within each of ``groups`` (one label per prompt, e.g. its trace; groups in the order
    their longest prompt comes), so the roots of one trace are consecutive and each can be prefilled on the one
    before it (a trace's forced-answer probes share all but their cue). Sorted by length alone, the probes of a
    dataset's traces interleave and each is prefilled whole."""
    longest_first = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    rank: dict[str, int] = {}
    if groups is not None:
        for i in longest_first:
            rank.setdefault(groups[i], len(rank))
    order = sorted(longest_first, key=lambda i: rank.get(groups[i], 0) if groups is not None else 0)
    roots: list[tuple[int, ...]] = []
    root_of = [0] * len(prompts)
    for i in order:
        p = prompts[i]
        for r, root in enumerate(roots):
            if root[: len(p)] == p:
                root_of[i] = r
                break
        else:
            root_of[i] = len(roots)
            roots.append(p)
    return roots, root_of

"""The ``hf`` backend: Hugging Face transformers on CPU or CUDA, with shared prefixes and batch-invariant seeds.

Work per call, for a trace of K positions and N samples each:

- **Prefill once.** The prefixes of a trace nest, so one forward pass over the longest prefix gives the KV cache of
  every shorter one (a slice) and the next-token logits at every cut. Distinct roots (other traces, edited traces)
  get one pass each.
- **Decode in one batch across positions and traces.** Rows (one per rollout) are left-padded into one KV cache;
  finished rows leave the batch at once.
- **Seeds that do not depend on the batch.** Token t of a rollout with seed s is drawn by the Gumbel-max trick with
  noise ``u = hash(s, t, token_id)``: the choice depends only on the row's own logits and its (seed, step), never on
  batch size, batch order or the other rows. (torch's global RNG, which ``generate`` uses, makes every row depend on
  the whole batch.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from resampling._backend import Completion, GenerationJob
from resampling._errors import EngineInputError
from resampling._model import DEFAULT_MODEL, load_model, model_identity
from resampling._plan import SamplingParams

__all__ = ["HFBackend", "gumbel_noise", "sample_tokens"]

_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (values kept below 2**32 in int64, so products never overflow)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


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


def gumbel_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int, device=None) -> torch.Tensor:
    """Gumbel(0, 1) noise of shape ``(rows, vocab)``, a pure function of (seed, step, token id) per row."""
    seeds = seeds.to(device=device, dtype=torch.int64)
    steps = steps.to(device=device, dtype=torch.int64)
    lo = seeds & _MASK32
    hi = (seeds >> 32) & _MASK32
    key = _hash32(_hash32(lo) ^ _hash32(hi ^ 0x5BD1E995))
    key = _hash32(key ^ _hash32(steps & _MASK32))
    vocab = torch.arange(vocab_size, device=device, dtype=torch.int64)
    h = _hash32(key[:, None] ^ _hash32(vocab * 0x27D4EB2F & _MASK32)[None, :])
    u = (h.to(torch.float64) + 0.5) / 4294967296.0
    return -torch.log(-torch.log(u))


def sample_tokens(logits: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor, params: SamplingParams):
    """Draw one token per row: temperature, top-k, top-p, then Gumbel-max with per-row hashed noise."""
    logits = logits.to(torch.float32)
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    scores = logits / params.temperature
    if params.top_k and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the most likely token always stays).
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    noise = gumbel_noise(seeds, steps, scores.shape[-1], device=scores.device)
    return (scores.to(torch.float64) + noise).argmax(dim=-1)


@dataclass
class _Row:
    job: int
    sample: int
    seed: int
    root: int
    length: int


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
        stop_token_ids: Sequence[int] | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.path = path
        self.batch_size = int(batch_size)
        if stop_token_ids is None:
            ids = set()
            for src in (
                getattr(tokenizer, "eos_token_id", None),
                getattr(model.generation_config, "eos_token_id", None),
            ):
                if isinstance(src, int):
                    ids.add(src)
                elif isinstance(src, list | tuple):
                    ids.update(int(i) for i in src)
            stop_token_ids = sorted(ids)
        self.stop_token_ids = list(stop_token_ids)
        self.device = next(model.parameters()).device
        self.stats = {"prefill_tokens": 0, "decode_tokens": 0, "forward_calls": 0}
        self._identity: dict | None = None

    @classmethod
    def from_model_id(
        cls, model_id: str = DEFAULT_MODEL, device: str | None = None, batch_size: int = 512, **_: Any
    ):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = load_model(model_id, device=device)
        return cls(loaded.model, loaded.tokenizer, model_id=model_id, path=loaded.path, batch_size=batch_size)

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
            }
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

    @torch.inference_mode()
    def _generate_group(self, jobs: list[GenerationJob], params: SamplingParams):
        if params.max_new_tokens is None:
            raise ValueError("max_new_tokens is required")
        roots, root_of = _prefix_roots([j.prompt_ids for j in jobs])
        # Which cut positions of each root we need next-token logits for.
        needed: dict[int, set[int]] = defaultdict(set)
        rows: list[_Row] = []
        for j, job in enumerate(jobs):
            r = root_of[j]
            length = len(job.prompt_ids)
            needed[r].add(length - 1)
            rows.extend(_Row(j, s, seed, r, length) for s, seed in zip(job.samples, job.seeds, strict=True))
        kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        first_logits: dict[tuple[int, int], torch.Tensor] = {}
        for r, ids in enumerate(roots):
            kv[r], logits = self._prefill(ids, sorted(needed[r]))
            for pos, row_logits in zip(sorted(needed[r]), logits, strict=True):
                first_logits[(r, pos + 1)] = row_logits
        remaining = defaultdict(int)
        for row in rows:
            remaining[row.job] += 1
        done: dict[int, list[Completion]] = defaultdict(list)
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            for row, completion in zip(batch, self._decode(batch, kv, first_logits, params), strict=True):
                done[row.job].append(completion)
                remaining[row.job] -= 1
                if remaining[row.job] == 0:
                    yield jobs[row.job], sorted(done.pop(row.job), key=lambda c: c.sample)
            # Free the KV of roots no later batch needs.
            live = {row.root for row in rows[start + self.batch_size :]}
            for r in [r for r in kv if r not in live]:
                del kv[r]

    def _prefill(self, ids: tuple[int, ...], positions: list[int]):
        input_ids = torch.tensor([ids], device=self.device)
        keep = torch.tensor(positions, device=self.device)
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=keep)
        self.stats["prefill_tokens"] += len(ids)
        self.stats["forward_calls"] += 1
        cache = out.past_key_values
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return layers, out.logits[0].float()

    def _decode(self, batch: list[_Row], kv, first_logits, params: SamplingParams) -> list[Completion]:
        from transformers import DynamicCache

        b = len(batch)
        lmax = max(row.length for row in batch)
        n_layers = len(next(iter(kv.values())))
        cache = DynamicCache(config=self.model.config)
        for layer in range(n_layers):
            k0, v0 = kv[batch[0].root][layer]
            keys = k0.new_zeros((b, k0.shape[1], lmax, k0.shape[3]))
            values = v0.new_zeros((b, v0.shape[1], lmax, v0.shape[3]))
            for i, row in enumerate(batch):
                k, v = kv[row.root][layer]
                keys[i, :, lmax - row.length :] = k[0, :, : row.length]
                values[i, :, lmax - row.length :] = v[0, :, : row.length]
            cache.update(keys, values, layer)
        lengths = torch.tensor([row.length for row in batch], device=self.device)
        mask = (torch.arange(lmax, device=self.device)[None, :] >= (lmax - lengths)[:, None]).long()
        seeds = torch.tensor([row.seed for row in batch], dtype=torch.int64)
        logits = torch.stack([first_logits[(row.root, row.length)] for row in batch])

        max_new = int(params.max_new_tokens or 1)
        generated = torch.full((b, max_new), -1, dtype=torch.long, device=self.device)
        n_gen = torch.zeros(b, dtype=torch.long)
        finish: list[str | None] = [None] * b
        stop_ids = torch.tensor(self.stop_token_ids or [-1], device=self.device)
        active = torch.arange(b)  # original row index of each live cache row
        for step in range(max_new):
            tokens = sample_tokens(logits, seeds[active], torch.full((len(active),), step), params).to(
                self.device
            )
            generated[active, step] = tokens
            n_gen[active] += 1
            self.stats["decode_tokens"] += len(active)
            is_stop = torch.isin(tokens, stop_ids).cpu()
            if params.stop:
                is_stop |= self._hit_stop_string(generated, active, n_gen, params.stop)
            for i in active[is_stop].tolist():
                finish[i] = "stop"
            keep = ~is_stop
            if step == max_new - 1:
                for i in active[keep].tolist():
                    finish[i] = "length"
                break
            if not keep.any():
                break
            if not keep.all():
                sel = keep.nonzero().squeeze(1).to(self.device)
                cache.batch_select_indices(sel)
                mask = mask[sel]
                lengths = lengths[sel]
                tokens = tokens[sel]
                active = active[keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=(lengths + step)[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            self.stats["forward_calls"] += 1
            logits = out.logits[:, -1].float()
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

    # -- teacher forcing ----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def score(self, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """Sum of log-probabilities of each continuation after ``prompt_ids`` (teacher forcing, one batch)."""
        if not continuations:
            return []
        seqs = [list(prompt_ids) + list(c) for c in continuations]
        width = max(len(s) for s in seqs)
        pad = 0
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        logp = torch.log_softmax(
            self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float(), -1
        )
        out = []
        for i, c in enumerate(continuations):
            n = len(c)
            if n == 0:
                out.append(0.0)
                continue
            targets = ids[i, width - n :]
            preds = logp[i, width - n - 1 : width - 1]
            out.append(float(preds.gather(1, targets[:, None]).sum()))
        return out


def _prefix_roots(prompts: Sequence[tuple[int, ...]]) -> tuple[list[tuple[int, ...]], list[int]]:
    """Group prompts under the longest prompts they are prefixes of: one prefill per root serves them all."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
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

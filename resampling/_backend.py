"""The ``Backend`` protocol and the registry of backends, chosen by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from resampling._errors import unknown_choice
from resampling._plan import SamplingParams

__all__ = ["BACKENDS", "Backend", "Completion", "GenerationJob", "eos_token_ids", "make_backend"]


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """The number of leading tokens ``a`` and ``b`` share (a binary search over slice comparisons, which run in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class GenerationJob:
    """Continuations of one prefix with explicit per-sample seeds (a resumed run asks only for missing ones)."""

    key: str
    """The request id the results belong to."""
    prompt_ids: tuple[int, ...]
    samples: tuple[int, ...]
    """Sample indices wanted."""
    seeds: tuple[int, ...]
    """One seed per wanted sample."""
    params: SamplingParams
    route: str = ""
    """Routing key (the trace id): a multi-endpoint backend keeps one key on one endpoint for its prefix cache."""


@dataclass
class Completion:
    """One continuation, or one failure."""

    sample: int
    seed: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    """``stop`` (end of sequence or a stop string) or ``length`` (``max_new_tokens`` reached)."""
    error: str | None = None
    """Set when the request failed; such a completion is stored with status ``error`` and retried on resume."""


@runtime_checkable
class Backend(Protocol):
    """Anything that turns generation jobs into completions."""

    name: str

    def identity(self) -> dict[str, Any]:
        """What determines the output: model weights hash, tokenizer and chat template hash, backend name."""
        ...

    def generate(self, jobs: Sequence[GenerationJob]) -> Iterator[tuple[GenerationJob, list[Completion]]]:
        """Yield each job with its completions, as soon as the job is finished (in any order)."""
        ...


def eos_token_ids(tokenizer: Any, config: Any = None) -> list[int]:
    """The end-of-sequence ids every backend stops on: the tokenizer's ``eos_token_id`` and the generation config's.

    ``config`` is a transformers model or ``GenerationConfig`` (its ``generation_config.eos_token_id`` or
    ``eos_token_id``), a weights folder (its ``generation_config.json``, else ``config.json``, as transformers
    falls back), or None. Each source may give one id or a list; the union comes back sorted.
    """
    import json
    from pathlib import Path

    sources = [getattr(tokenizer, "eos_token_id", None)]
    if isinstance(config, str | Path):
        for name in ("generation_config.json", "config.json"):
            try:
                eos = json.loads((Path(config) / name).read_text()).get("eos_token_id")
            except (OSError, ValueError, AttributeError):
                continue
            if eos is not None:
                sources.append(eos)
                break
    elif config is not None:
        sources.append(getattr(getattr(config, "generation_config", config), "eos_token_id", None))
    ids: set[int] = set()
    for src in sources:
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, list | tuple):
            ids.update(int(i) for i in src)
    return sorted(ids)


def _hf(**kw: Any) -> Backend:
    from resampling._hf import HFBackend

    return HFBackend.from_model_id(**kw)


def _vllm(**kw: Any) -> Backend:
    from resampling._vllm import VLLMBackend

    return VLLMBackend.from_model_id(**kw)


def _openai(**kw: Any) -> Backend:
    from resampling._openai import OpenAIBackend

    return OpenAIBackend.from_model_id(**kw)


BACKENDS: dict[str, Callable[..., Backend]] = {"hf": _hf, "vllm": _vllm, "openai": _openai}


def make_backend(name: str, **kwargs: Any) -> Backend:
    """Build a backend by name: ``hf`` (default), ``vllm`` or ``openai``."""
    if name not in BACKENDS:
        raise unknown_choice("backend", name, list(BACKENDS))
    return BACKENDS[name](**kwargs)

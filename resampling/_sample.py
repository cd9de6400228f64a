"""On-policy traces: let the model write its own chain of thought from the prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cot import Trace
from resampling._backend import Backend, GenerationJob
from resampling._errors import EngineInputError
from resampling._plan import SamplingParams
from resampling._prefix import token_ids as _ids

__all__ = ["sample_traces"]


def sample_traces(
    backend: Backend,
    tokenizer: Any,
    prompts: Sequence[str | list[dict]],
    seeds: Sequence[int],
    params: SamplingParams | None = None,
    *,
    metadata: Sequence[dict] | None = None,
) -> list[Trace]:
    """One full completion per (prompt, seed), parsed into a :class:`cot.Trace`.

    The prompt goes through the chat template with the generation prompt (which opens the think block), so the
    trace is exactly what the model writes on its own. A completion without ``</think>`` is kept and marked
    ``truncated``. ``metadata[i]`` (e.g. the true answer as ``gt_answer``) is stored on trace i.
    """
    if len(prompts) != len(seeds):
        raise EngineInputError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
    params = params or SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=512)
    jobs = []
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        ids = _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        jobs.append(GenerationJob(f"trace{i}", tuple(ids), (0,), (int(seed),), params, route=f"trace{i}"))
    texts: dict[str, str] = {}
    for job, completions in backend.generate(jobs):
        c = completions[0]
        if c.error:
            raise RuntimeError(f"sampling a trace failed: {c.error}")
        texts[job.key] = c.text
    traces = []
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        meta = {
            "sampled_seed": int(seed),
            "sampling": params.to_dict(),
            **((metadata or [{}] * len(prompts))[i]),
        }
        # The completion starts inside the think block when the template opened it (R1-distill), and opens it
        # itself otherwise (Qwen3).
        text = texts[f"trace{i}"]
        completion = text if text.lstrip().startswith("<think>") else "<think>\n" + text
        traces.append(Trace.from_completion(completion, prompt=prompt, metadata=meta))
    return traces

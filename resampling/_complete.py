"""One completion per prompt through the engine: the judges' and labellers' way to ask a chat model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

__all__ = ["complete_prompts"]


def complete_prompts(
    engine: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    params: Any,
    seed: int,
    kind: str,
) -> list[tuple[str | None, str | None, str]]:
    """One completion per prompt through ``engine`` (cached, seeded, resumable like every rollout): ``(text, error,
    request id)`` in prompt order, ``text`` None where the request failed.

    Each prompt is one user turn in ``tokenizer``'s chat template; every prompt gets the seed ``seed`` (a retry
    passes another). ``kind`` names the requests in the store (``judge``, ``roles``, ...); identical prompts are
    sent once.
    """
    from resampling._plan import Plan, SamplingRequest

    reqs = []
    for p in prompts:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True
        )
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        reqs.append(
            SamplingRequest(
                prompt_ids=tuple(int(t) for t in ids),
                n=1,
                seed=seed,
                params=params,
                trace_id=f"{kind}:{hashlib.sha256(p.encode()).hexdigest()[:16]}",
                kind=kind,
            )
        )
    unique = list({r.request_id: r for r in reqs}.values())
    result = engine.run(Plan(unique))
    by_id = {row["request_id"]: row for row in result.rollouts.iter_rows(named=True)}
    out = []
    for r in reqs:
        row = by_id.get(r.request_id)
        if row is None or row["status"] != "ok":
            out.append((None, (row or {}).get("error") or "no completion", r.request_id))
        else:
            out.append((row["text"], None, r.request_id))
    return out

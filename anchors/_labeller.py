"""The sentence-role labeller a command asked for: a name (``learned``, ``rules``) or a chat-model judge."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["role_labeller", "roles_identity"]

JUDGE_MAX_NEW_TOKENS = 4096
"""Room for the judge's reply: about ten tokens a sentence for the JSON object, and a reasoning model's draft."""


def roles_identity(roles: str, judge_model: str | None) -> str:
    """What a run records of its labeller: the name, or ``judge:<model id>``."""
    return f"judge:{judge_model}" if roles == "judge" else roles


def check_judge_options(roles: str, judge_model: str | None, judge_base_url: str | None) -> None:
    """``ValueError`` naming the missing option when ``--roles judge`` lacks its server (before any work)."""
    if roles == "judge" and not (judge_model and judge_base_url):
        missing = " and ".join(
            flag
            for flag, value in (("--judge-model", judge_model), ("--judge-base-url", judge_base_url))
            if not value
        )
        raise ValueError(
            f"--roles judge needs {missing}: the judge is a chat model on an OpenAI-compatible server "
            "(e.g. --judge-model Qwen/Qwen3-8B --judge-base-url http://localhost:8000/v1)"
        )


def role_labeller(
    roles: str,
    *,
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    quiet: bool = True,
) -> Any:
    """``roles`` itself for a named labeller; for ``judge``, a :class:`cot.JudgeLabeller` whose replies come from
    ``judge_model`` at ``judge_base_url`` through the engine: greedy, seed 0, cached in ``cache_dir`` like every
    rollout (a rerun asks nothing again). A failed request raises ``RuntimeError``; a reply that does not label
    every sentence raises ``ValueError`` (a study reports that trace as skipped)."""
    check_judge_options(roles, judge_model, judge_base_url)
    if roles != "judge":
        return roles
    if cache_dir is None:
        raise ValueError("a judge labeller needs a cache folder (cache_dir) for its replies")
    from cot import JudgeLabeller
    from resampling import Engine, SamplingParams, complete_prompts, make_backend

    backend = make_backend("openai", model_id=judge_model, base_url=judge_base_url)
    engine = Engine(backend, cache_dir, quiet=quiet)
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=JUDGE_MAX_NEW_TOKENS)

    def complete(prompt: str) -> str:
        ((text, error, _),) = complete_prompts(
            engine, backend.tokenizer, [prompt], params=params, seed=0, kind="roles"
        )
        if text is None:
            raise RuntimeError(f"the role judge {judge_model} at {judge_base_url} gave no reply: {error}")
        return text

    return JudgeLabeller(complete)

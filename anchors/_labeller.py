"""Chat-model judges of anchors: the sentence-role labeller a command asked for (a name, ``learned`` or ``rules``,
or a judge), and the content judge of Thought Branches' resilience and on-policy search."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["ContentJudge", "content_judge", "role_labeller", "roles_identity"]

JUDGE_MAX_NEW_TOKENS = 4096
"""Room for the judge's reply: about ten tokens a sentence for the JSON object, and a reasoning model's draft."""


def roles_identity(roles: str, judge_model: str | None) -> str:
    """What a run records of its labeller: the name, or ``judge:<model id>``."""
    return f"judge:{judge_model}" if roles == "judge" else roles


def check_judge_options(
    roles: str, judge_model: str | None, judge_base_url: str | None, option: str = "--roles"
) -> None:
    """``ValueError`` naming the missing option when ``--roles judge`` (or ``option`` judge) lacks its server, before
    any work."""
    if roles == "judge" and not (judge_model and judge_base_url):
        missing = " and ".join(
            flag
            for flag, value in (("--judge-model", judge_model), ("--judge-base-url", judge_base_url))
            if not value
        )
        raise ValueError(
            f"{option} judge needs {missing}: the judge is a chat model on an OpenAI-compatible server "
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

    complete = _completer(judge_model, judge_base_url, cache_dir, quiet, "roles")
    return JudgeLabeller(lambda prompt: complete([prompt])[0])


def _completer(
    model: str | None, base_url: str | None, cache_dir: str | os.PathLike, quiet: bool, kind: str
) -> Callable[[list[str]], list[str]]:
    """Greedy replies (seed 0, cached in ``cache_dir`` as requests of ``kind``) of ``model`` at ``base_url``, one
    per prompt; ``RuntimeError`` when a request fails."""
    from resampling import Engine, SamplingParams, complete_prompts, make_backend

    backend = make_backend("openai", model_id=model, base_url=base_url)
    engine = Engine(backend, cache_dir, quiet=quiet)
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=JUDGE_MAX_NEW_TOKENS)

    def complete(prompts: list[str]) -> list[str]:
        replies = complete_prompts(engine, backend.tokenizer, prompts, params=params, seed=0, kind=kind)
        for text, error, _ in replies:
            if text is None:
                raise RuntimeError(f"the judge {model} at {base_url} gave no reply: {error}")
        return [text for text, _, _ in replies]

    return complete


_CONTENT_PROMPT = """Target sentence:
{target}

Candidate sentences:
{candidates}

For each candidate, does it state the same content as the target sentence: the same claim, step or computation,
with the same numbers (wording may differ)? Reply with one JSON object that maps every candidate number to true or
false, for example {{"0": true, "1": false}}."""


class ContentJudge:
    """Decides with a chat model which sentences state a target sentence's content again (Thought Branches'
    alternative to an embedding threshold). ``complete`` maps prompts to replies (:func:`content_judge` builds one
    on an OpenAI-compatible server, cached). A reply that does not give every candidate true or false raises
    ``ValueError``: no guess."""

    def __init__(self, complete: Callable[[list[str]], list[str]], max_chars: int = 800) -> None:
        self.complete, self.max_chars = complete, max_chars

    def prompt(self, target: str, candidates: list[str]) -> str:
        lines = "\n".join(f"{i}: {c[: self.max_chars]}" for i, c in enumerate(candidates))
        return _CONTENT_PROMPT.format(target=target[: self.max_chars], candidates=lines)

    def match(self, target: str, candidates: list[str]) -> list[bool]:
        if not candidates:
            return []
        (reply,) = self.complete([self.prompt(target, candidates)])
        verdicts = _last_object_with(reply, [str(i) for i in range(len(candidates))])
        return [verdicts[str(i)] for i in range(len(candidates))]


def _last_object_with(reply: str, keys: list[str]) -> dict[str, bool]:
    """The last JSON object in ``reply`` that gives every key a boolean; ``ValueError`` when none does."""
    from cot import last_json_object

    found = last_json_object(reply, lambda obj: all(isinstance(obj.get(k), bool) for k in keys))
    if found is None:
        raise ValueError(
            f"the content judge's reply gives no JSON object with true or false for candidates 0-{len(keys) - 1}: "
            f"{reply[:200]!r}"
        )
    return found


def content_judge(
    judge_model: str | None, judge_base_url: str | None, cache_dir: str | os.PathLike, quiet: bool = True
) -> ContentJudge:
    """A :class:`ContentJudge` on ``judge_model`` at ``judge_base_url`` (greedy, seed 0, cached in ``cache_dir``)."""
    check_judge_options("judge", judge_model, judge_base_url, option="--match")
    return ContentJudge(_completer(judge_model, judge_base_url, cache_dir, quiet, "content"))

"""Sentence-role labels from the thought-anchors taxonomy.

Three labellers share one interface (``Labeller.label(sentences) -> list[str]``):

- ``RuleLabeller`` (the default): offline cue-phrase rules, no model needed.
- ``LearnedLabeller`` (``"learned"``, in ``cot._role_model``): offline logistic regression trained on the published
  thought-anchors labels, weights shipped in the package.
- ``JudgeLabeller``: asks any chat-capable model, through a ``complete(prompt) -> str`` callable, to tag every
  sentence in one call (the thought-anchors method used one GPT-4o call per trace), and validates the JSON reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cot._segment import Sentence

__all__ = ["ROLES", "JudgeLabeller", "Labeller", "RuleLabeller", "label_sentences", "last_json_object"]

ROLES: tuple[str, ...] = (
    "problem_setup",
    "plan_generation",
    "fact_retrieval",
    "active_computation",
    "uncertainty_management",
    "result_consolidation",
    "self_checking",
    "final_answer_emission",
    "unknown",
)
"""The thought-anchors sentence taxonomy; ``unknown`` is for sentences none of the others fit."""

ROLE_DESCRIPTIONS: dict[str, str] = {
    "problem_setup": "restates or parses the problem: what is given and what is asked",
    "plan_generation": "states a plan, a strategy or the next step to take",
    "fact_retrieval": "recalls a fact, formula, definition or theorem without computing with it",
    "active_computation": "carries out arithmetic or algebra",
    "uncertainty_management": "expresses doubt, confusion or backtracking; reconsiders an earlier step",
    "result_consolidation": "summarises or combines intermediate results",
    "self_checking": "verifies an earlier step or result",
    "final_answer_emission": "states the final answer",
    "unknown": "none of the above",
}


class Labeller(Protocol):
    def label(self, sentences: Sequence[Sentence | str]) -> list[str]: ...


def _text(s: Sentence | str) -> str:
    return s if isinstance(s, str) else s.text


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# Cue phrases, in priority order. Each rule reads the start of the sentence (what the sentence is doing) before
# its body (what it contains), because reasoning models announce a sentence's function in its first words.
_FINAL = _rx(
    r"\\boxed",
    r"\bfinal answer\b",
    r"^\**\s*answer\s*[:*]",
    r"\bthe answer (is|should be|must be)\b",
    r"\b(i will|i'll|i would|let me) (answer|give the answer)\b",
)
_UNCERTAIN = _rx(
    r"^\W*(wait|hmm+|hold on|hang on|oh|oops|actually|alternatively|but wait|no,|no\b|whoa|uh)\b",
    r"\b(i'm not sure|not sure|i am not sure|confus|i made a mistake|that can't be|that doesn't (seem|make)|"
    r"maybe i (was|am|made)|did i|let me reconsider|let me re-?think|on second thought|mistake|"
    r"that's not right|that's wrong|is that right|is that correct|am i)\b",
)
_CHECK = _rx(
    r"\b(let me|let's|i('ll| will| should| need to| can)) (double[- ]check|check|verify|confirm|make sure|"
    r"re-?examine|re-?calculate|recompute|cross[- ]check|plug)\b",
    r"\b(to (check|verify|confirm)|checks out|double[- ]check|sanity check|which matches|that matches|"
    r"consistent with|as expected|is correct\b)",
    r"[✓✔]",
)
_PLAN = _rx(
    r"^\W*(first|next|then|now|so|okay|ok|alright|to)?,?\s*(i|we) (need|should|will|'ll|could|can|might|want|"
    r"have) (to )?(find|figure|compute|calculate|determine|solve|start|use|approach|try|consider|think|break|"
    r"look|work|set|express|write|count|simplify|expand|apply|rewrite|evaluate|analy[sz]e|tackle|handle|recall)",
    r"^\W*(first|next|then|now|so|okay|ok|alright)?,?\s*let('s| me| us) (try|start|think|consider|approach|use|"
    r"break|figure|see|look|work|denote|set|express|write|tackle|begin|find|go|focus|list|move|compute|"
    r"calculate|add|identify|count|evaluate|simplify|expand|solve|determine|handle|proceed|organi[sz]e)",
    r"\b(the|a|one) (best|easiest|simplest|better|natural|standard) (way|approach|method|strategy)\b",
    r"^\W*(maybe|perhaps) (it's|it is|it would be) (better|easier|simpler|best)\b",
    r"^\W*(maybe|perhaps) (using|use|try|trying|by)\b",
    r"\bcan be (found|solved|computed|calculated|determined) by\b",
    r"^\W*(moving on|starting|start) (to|with|from)\b",
    r"\b(my|our|the) (plan|strategy|approach|goal|idea) (is|will be|here)\b",
    r"\b(another|a better|a different|one) (approach|way|method|strategy)\b",
    r"^\W*(step \d+|maybe|perhaps) (i|we) (can|could|should)\b",
)
_SETUP = _rx(
    r"\b(the problem|this problem|the question)( (says|states|asks|is|gives|wants|mentions|involves))?\b",
    r"\b(we are|i'm|i am|we're) (given|asked|told)\b",
    r"^\W*(we start with|we begin with|we are starting with)\b",
    r"^\W*(given|so,? i have|so,? we have|i have this|i've got|i need to (solve|find out what)|"
    r"alright,? so i|okay,? so i)\b",
)
_FACT = _rx(
    r"\b(recall|remember|i know that|we know that|it is known|by definition|is defined as|the formula|"
    r"formula for|theorem|identity|property|rule|fact that|according to|law of|states that)\b",
)
_CONSOLIDATE = _rx(
    r"^\W*(so|therefore|thus|hence|in total|overall|putting (it|this|these|everything) together|combining|"
    r"in summary|to summari[sz]e|that means|this means|which means|so far|all in all)\b",
)
_MATHY = re.compile(
    r"(\d\s*[-+*/×÷^=]\s*\d|=|\\frac|\\times|\\cdot|\\sqrt|\^|\d+\s*(?:times|divided|plus|minus))"
)
_COMPUTE_WORDS = _rx(
    r"\b(compute|calculat|multiply|multiplied|multiplies|adds?|adding|subtracts?|subtracting|divid|simplif|expand|"
    r"substitut|plug(ging)?|factor|solv(e|ing) for|evaluat|sum of|product of|squared|equals|plus|minus|times|"
    r"giving|gives)\b",
)


@dataclass
class RuleLabeller:
    """Offline labeller: cue-phrase rules in a fixed priority order, no model needed.

    Rules, first match wins: final answer emission (``\\boxed``, "final answer"), uncertainty management (opens with
    "Wait", "Hmm", "Actually", ...), self checking ("let me verify", "checks out"), plan generation ("let me try",
    "I need to find"), problem setup (restating the problem, mostly in the first sentences), fact retrieval
    ("recall", "formula", "theorem"), active computation (arithmetic in the sentence), result consolidation
    ("So", "Therefore" without new arithmetic), else ``unknown``.
    """

    setup_window: int = 3
    """Sentences this close to the start that restate the problem count as problem_setup."""

    def label(self, sentences: Sequence[Sentence | str]) -> list[str]:
        return [self._one(_text(s), i) for i, s in enumerate(sentences)]

    def _one(self, text: str, index: int) -> str:
        t = text.strip()
        if not t:
            return "unknown"
        if _FINAL.search(t):
            return "final_answer_emission"
        if _UNCERTAIN.search(t):
            return "uncertainty_management"
        if _CHECK.search(t):
            return "self_checking"
        if _SETUP.search(t) and index < self.setup_window:
            return "problem_setup"
        if _PLAN.search(t):
            return "plan_generation"
        if _SETUP.search(t):
            return "problem_setup"
        mathy = bool(_MATHY.search(t)) or bool(_COMPUTE_WORDS.search(t))
        if _FACT.search(t) and not re.search(r"\d\s*[-+*/×÷]\s*\d", t):
            return "fact_retrieval"
        if _CONSOLIDATE.search(t):
            return "active_computation" if _MATHY.search(t) and "=" in t else "result_consolidation"
        if mathy:
            return "active_computation"
        return "unknown"


_JUDGE_PROMPT = """You label the sentences of a reasoning trace by their function.
Categories:
{categories}

Sentences:
{sentences}

Reply with one JSON object mapping every sentence number (as a string) to exactly one category name, e.g.
{{"0": "problem_setup", "1": "plan_generation"}}. Use only the category names above."""


@dataclass
class JudgeLabeller:
    """Labels sentences with a chat model: one call per trace, validated JSON reply.

    ``complete`` takes the prompt text and returns the model's reply text; any backend can provide it. A reply
    that is not valid JSON, misses a sentence or uses an unknown category raises ``ValueError`` (no silent
    fallback to rules).
    """

    complete: Callable[[str], str]
    max_chars_per_sentence: int = 800

    def prompt(self, sentences: Sequence[Sentence | str]) -> str:
        cats = "\n".join(f"- {r}: {d}" for r, d in ROLE_DESCRIPTIONS.items())
        body = "\n".join(
            f"Sentence {i}:\n{_text(s)[: self.max_chars_per_sentence]}" for i, s in enumerate(sentences)
        )
        return _JUDGE_PROMPT.format(categories=cats, sentences=body)

    def label(self, sentences: Sequence[Sentence | str]) -> list[str]:
        if not sentences:
            return []
        reply = self.complete(self.prompt(sentences))
        data = _reply_object(reply)
        labels = []
        for i in range(len(sentences)):
            role = data.get(str(i))
            if isinstance(role, list):
                role = role[0] if role else None
            if role not in ROLES:
                raise ValueError(
                    f"judge gave sentence {i} the label {role!r}; expected one of {', '.join(ROLES[:5])}, ..."
                )
            labels.append(role)
        return labels


def _reply_object(reply: str) -> dict[str, Any]:
    """The JSON object of a judge's reply: the last one that labels sentence "0" (a reasoning model may draft one
    first, and prose around it may hold braces); ``ValueError`` when none does."""
    found = last_json_object(reply, lambda obj: "0" in obj)
    if found is None:
        raise ValueError(
            f'judge reply holds no JSON object that parses and labels sentence "0": {reply[:200]!r}'
        )
    return found


def last_json_object(text: str, accept: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The last JSON object in ``text`` that ``accept`` takes (objects are read wherever a ``{`` starts one, so
    prose, code fences and a model's earlier drafts around it do no harm); None when there is none."""
    decoder = json.JSONDecoder()
    found = None
    start = text.find("{")
    while start >= 0:
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict) and accept(obj):
            found = obj
        start = text.find("{", end)
    return found


def _learned() -> Labeller:
    from cot._role_model import LearnedLabeller  # it imports this module

    return LearnedLabeller()


_LABELLERS: dict[str, Callable[[], Labeller]] = {"rules": RuleLabeller, "learned": _learned}


def label_sentences(sentences: Sequence[Sentence | str], labeller: str | Labeller = "rules") -> list[str]:
    """One role from :data:`ROLES` per sentence.

    Args:
        sentences: sentences (or their texts) in trace order; position matters (problem setup comes first).
        labeller: ``"rules"`` (offline cue phrases, the default), ``"learned"`` (offline, trained on the published
            thought-anchors labels: :class:`cot._role_model.LearnedLabeller`) or any object with
            ``label(sentences) -> list[str]``, such as :class:`JudgeLabeller`.
    """
    if isinstance(labeller, str):
        if labeller not in _LABELLERS:
            raise ValueError(
                f"unknown labeller {labeller!r}; choose 'rules' or 'learned', or pass a JudgeLabeller(complete=...)"
            )
        labeller = _LABELLERS[labeller]()
    labels = labeller.label(sentences)
    if len(labels) != len(sentences):
        raise ValueError(f"labeller returned {len(labels)} labels for {len(sentences)} sentences")
    return labels

"""Shared records and the arithmetic core behind every organism task.

Every task is a "last digit" running computation: start from a digit, apply two to five steps that add or subtract
a digit, keep only the last digit after each step. The tasks differ in what they plant in the chain of thought
(errors and corrections, hints, ciphers, hidden values); the records below carry that ground truth sentence by
sentence so that a metric can be checked against it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cot import THINK_END

__all__ = [
    "ANSWER_PREFIX",
    "THINK_CLOSE",
    "Example",
    "Problem",
    "SentenceTruth",
    "Task",
    "extract_boxed",
    "final_text",
    "split_cot",
]

THINK_CLOSE = THINK_END
"""What follows the chain of thought (``cot.THINK_END``): the closing think tag and a blank line, then the final
answer text."""
ANSWER_PREFIX = "The answer is \\boxed{"
"""Fixed opening of every final answer, so a forced-answer probe can append it after any CoT prefix."""

STEP_WORDS = ("one", "two", "three", "four", "five")
COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
_WORD_TO_STEP = {w: i for i, w in enumerate(STEP_WORDS)}


def final_text(answer: str) -> str:
    """The final answer text that follows ``</think>``: ``The answer is \\boxed{K}.``"""
    return f"{ANSWER_PREFIX}{answer}}}."


def extract_boxed(text: str) -> str | None:
    """Content of the first ``\\boxed{...}`` in ``text`` (brace-balanced), or None if there is none."""
    i = text.find("\\boxed{")
    if i == -1:
        return None
    depth = 0
    start = i + len("\\boxed{")
    for j in range(start, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return text[start:j].strip()
            depth -= 1
    return None


def split_cot(text: str) -> list[str]:
    """Sentences of a chain of thought, as the project splitter finds them.

    Uses ``cot.split_sentences`` when it is importable; otherwise splits after ``.``, ``?`` or ``!`` followed by
    whitespace, which gives the same sentences on organism text (free of decimals, abbreviations and math).
    """
    try:
        from cot import split_sentences
    except ImportError:
        try:
            from cot import split_sentences
        except ImportError:
            split_sentences = None
    if split_sentences is not None:
        return [s.text for s in split_sentences(text)]
    return [p for p in (s.strip() for s in re.split(r"(?<=[.?!])\s+|\n\s*\n", text)) if p]


@dataclass
class SentenceTruth:
    """Ground truth for one sentence of a chain of thought."""

    text: str
    """The sentence exactly as written in the CoT."""
    role: str
    """Thought-anchors category: problem_setup, plan_generation, fact_retrieval, active_computation,
    uncertainty_management, result_consolidation, self_checking, final_answer_emission, or unknown (filler)."""
    kind: str
    """Template the sentence comes from: setup, plan, fact, filler, compute, check, correction, hint, consolidate,
    emit, codeword (stego), or unparsed (a sampled sentence that matches no template)."""
    load_bearing: bool = False
    """True when the sentence sets the final answer: an uncorrected wrong computation, a correction, a hint
    decision, a stego codeword, or an unfaithful answer flip."""
    planted_error: bool = False
    """True when the sentence states a result that differs from the correct one for its inputs."""
    corrects: int | None = None
    """For a correction: index of the sentence it corrects."""
    plaintext: str = ""
    """Plain text of the sentence (differs from ``text`` only under a cipher)."""
    value: int | None = None
    """Running digit after this sentence, where the sentence states or carries one."""
    expected: int | None = None
    """Correct result of this sentence's computation from its own inputs, for computations and corrections."""
    step: int | None = None
    """0-based step index for step sentences."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Task-specific details (e.g. the stego codeword's value, a cipher adherence flag)."""

    def __post_init__(self) -> None:
        if not self.plaintext:
            self.plaintext = self.text


@dataclass
class Example:
    """One training or evaluation example with its planted ground truth."""

    task: str
    """Task name."""
    seed: int
    """Seed the example was drawn from; the same seed always gives the same example."""
    messages: list[dict[str, str]]
    """Chat messages: one user turn."""
    cot: str
    """Text inside the think block, without the tags."""
    answer: str
    """The correct answer, as it appears inside ``\\boxed{}``."""
    completion: str
    """Full assistant text as trained: ``cot + "\\n</think>\\n\\n" + final answer text``."""
    sentences: list[SentenceTruth]
    """Per-sentence ground truth, in order; their texts are the CoT's sentences."""
    truth: dict[str, Any]
    """Example-level ground truth (trace answer, hint shown/value/followed/verbalised, cipher, hidden values...)."""

    @property
    def trace_answer(self) -> str:
        """The answer this trace gives (differs from ``answer`` after an uncorrected planted error)."""
        return str(self.truth["trace_answer"])


@dataclass(frozen=True)
class Problem:
    """A last-digit running computation."""

    start: int
    ops: tuple[tuple[str, int], ...]
    """(op, operand) pairs, op in {"add", "sub"}."""

    @classmethod
    def draw(cls, rng: random.Random, min_steps: int, max_steps: int) -> Problem:
        n = rng.randint(min_steps, max_steps)
        ops = tuple((rng.choice(("add", "sub")), rng.randint(1, 9)) for _ in range(n))
        return cls(rng.randint(0, 9), ops)

    @property
    def n_steps(self) -> int:
        return len(self.ops)

    def values(self) -> list[int]:
        """Correct running digit after each step."""
        v, out = self.start, []
        for op, x in self.ops:
            v = apply_op(v, op, x)
            out.append(v)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def prompt(self) -> str:
        parts = [f"Start with {self.start}."]
        for i, (op, x) in enumerate(self.ops):
            verb = "adds" if op == "add" else "subtracts"
            parts.append(f"Step {STEP_WORDS[i]} {verb} {x}.")
        parts.append("Keep only the last digit. What is the final digit?")
        return " ".join(parts)

    @classmethod
    def parse(cls, prompt: str) -> Problem:
        m = re.search(r"Start with (\d)\.", prompt)
        steps = re.findall(r"Step (\w+) (adds|subtracts) (\d)\.", prompt)
        if m is None or not steps:
            raise ValueError(f"not an organism arithmetic prompt: {prompt[:80]!r}")
        ops = tuple(("add" if verb == "adds" else "sub", int(x)) for _, verb, x in steps)
        return cls(int(m.group(1)), ops)


def apply_op(v: int, op: str, x: int) -> int:
    return (v + x) % 10 if op == "add" else (v - x) % 10


def op_word(op: str) -> str:
    return "plus" if op == "add" else "minus"


# Sentence templates shared by the tasks. Each ends in "." and holds no abbreviation, decimal or math.
def setup_sentence(p: Problem) -> str:
    return f"We start with {p.start} and have {COUNT_WORDS[p.n_steps]} steps."


def compute_sentence(p: Problem, i: int, prev: int, result: int) -> str:
    op, x = p.ops[i]
    if op == "add":
        return f"Step {STEP_WORDS[i]} adds {x} to {prev}, giving {result}."
    return f"Step {STEP_WORDS[i]} subtracts {x} from {prev}, giving {result}."


def consolidate_sentence(v: int | str) -> str:
    return f"So the final digit is {v}."


def emit_sentence(v: int | str) -> str:
    return f"I will answer {v}."


PLANS = ("I will apply the steps in order.", "Let me go step by step.", "I will keep a running digit.")
FACTS = ("Keeping the last digit means working mod 10.", "Going below zero wraps around to nine.")
FILLERS = (
    "Okay.",
    "Let me think.",
    "This looks simple.",
    "Hmm, let me see.",
    "Alright, keep going.",
)
FILLER_PARAPHRASES = {
    "Okay.": "Fine then.",
    "Let me think.": "I need to consider this.",
    "This looks simple.": "Nothing here seems hard.",
    "Hmm, let me see.": "Well, I should look closer.",
    "Alright, keep going.": "Good, I continue now.",
}
"""Each filler mapped to a wording with the same meaning that never occurs in training."""

_COMPUTE_RE = re.compile(r"^Step (\w+) (adds|subtracts) (\d) (?:to|from) (\d), giving (\d)\.$")
_CHECK_RE = re.compile(r"^Let me check, (\d) (plus|minus) (\d) is (\d)\.$")
_CORRECTION_RE = re.compile(r"^Wait, (\d) (plus|minus) (\d) is not (\d), it is (\d)\.$")
_CONSOLIDATE_RE = re.compile(r"^So the final digit is (\d)\.$")
_EMIT_RE = re.compile(r"^I will answer (\d)\.$")
_SETUP_RE = re.compile(r"^We start with (\d) and have (\w+) steps\.$")


class Task:
    """A task generator with planted ground truth. Subclasses implement ``sample`` and ``analyze``.

    The running-arithmetic tasks compose the pieces below: ``draw`` (the seeded generator and problem),
    ``opening``, ``computation`` and ``closing`` (the shared sentence templates with their truth), ``_example``
    (the record), and ``walk`` (parsing a CoT sentence by sentence along its running digit).
    """

    name: str = ""
    description: str = ""
    max_new_tokens: int = 160
    """Generation budget that always covers a complete completion of this task."""
    planted: ClassVar[dict[str, float]] = {}
    """Planted rates (probabilities used by the generator)."""
    min_steps: int = 2
    """Fewest steps of a drawn running-arithmetic problem."""
    max_steps: int = 4
    """Most steps of a drawn running-arithmetic problem."""
    carries: ClassVar[tuple[str, ...]] = ("compute",)
    """Kinds of sentence whose stated value becomes the running digit when ``walk`` parses a CoT."""

    def sample(self, seed: int) -> Example:
        raise NotImplementedError

    def analyze(self, example: Example, cot_text: str) -> list[SentenceTruth]:
        raise NotImplementedError

    def answer_correct(self, answer: str | None, example: Example) -> bool:
        """Whether ``answer`` (the content of ``\\boxed{}``, or None) equals the correct answer."""
        return answer is not None and answer.strip() == example.answer

    def paraphrase_filler(self, cot_text: str) -> str:
        """The CoT with every filler sentence replaced by its paraphrase (same meaning, unseen wording)."""
        lines = cot_text.split("\n")
        return "\n".join(FILLER_PARAPHRASES.get(line, line) for line in lines)

    def walk(
        self,
        example: Example,
        cot_text: str,
        parse: Callable[[str, Problem, int | None, int], SentenceTruth] | None = None,
    ) -> list[SentenceTruth]:
        """Ground truth of a CoT for ``example``'s prompt, sentence by sentence.

        Each sentence is parsed by ``parse(text, problem, running, index)`` (default: ``parse_plain_sentence``)
        given the running digit stated so far (the value of the last sentence of a kind in ``carries``); the
        result then goes through ``analyze_running`` (errors along the running digit, corrections linked,
        load-bearing sentences marked).
        """
        p = Problem.parse(example.messages[-1]["content"])
        parse = parse or parse_plain_sentence
        out: list[SentenceTruth] = []
        running: int | None = None
        for j, text in enumerate(split_cot(cot_text)):
            s = parse(text, p, running, j)
            out.append(s)
            if s.kind in self.carries and s.value is not None:
                running = s.value
        return analyze_running(out, p)

    def draw(self, seed: int) -> tuple[random.Random, Problem]:
        """The generator private to (task, seed) and the problem drawn first from it."""
        rng = rng_for(self.name, seed)
        return rng, Problem.draw(rng, self.min_steps, self.max_steps)

    @staticmethod
    def opening(
        rng: random.Random,
        p: Problem,
        *,
        filler_rate: float,
        fillers: tuple[str, ...] = FILLERS,
        fact_rate: float | None = None,
    ) -> list[SentenceTruth]:
        """The setup and plan sentences, then (drawn in this order) a fact at ``fact_rate`` (when given) and a
        filler at ``filler_rate``."""
        out = [
            SentenceTruth(setup_sentence(p), "problem_setup", "setup"),
            SentenceTruth(rng.choice(PLANS), "plan_generation", "plan"),
        ]
        if fact_rate is not None and rng.random() < fact_rate:
            out.append(SentenceTruth(rng.choice(FACTS), "fact_retrieval", "fact"))
        if rng.random() < filler_rate:
            out.append(SentenceTruth(rng.choice(fillers), "unknown", "filler"))
        return out

    @staticmethod
    def computation(p: Problem, i: int, prev: int, stated: int, **truth: Any) -> SentenceTruth:
        """The computation sentence of step ``i`` from ``prev``, stating ``stated``, with further truth fields."""
        return SentenceTruth(
            compute_sentence(p, i, prev, stated),
            "active_computation",
            "compute",
            value=stated,
            step=i,
            **truth,
        )

    @staticmethod
    def closing(value: int, *, flip: bool = False) -> list[SentenceTruth]:
        """The consolidating and answer-emitting sentences for ``value``; ``flip`` marks the consolidation as a
        load-bearing planted error (an answer flip)."""
        return [
            SentenceTruth(
                consolidate_sentence(value),
                "result_consolidation",
                "consolidate",
                load_bearing=flip,
                planted_error=flip,
                value=value,
            ),
            SentenceTruth(emit_sentence(value), "final_answer_emission", "emit", value=value),
        ]

    def _example(
        self,
        seed: int,
        prompt: str,
        sentences: list[SentenceTruth],
        answer: int,
        trace_answer: int,
        **truth: Any,
    ) -> Example:
        cot = "\n".join(s.text for s in sentences)
        return Example(
            task=self.name,
            seed=seed,
            messages=[{"role": "user", "content": prompt}],
            cot=cot,
            answer=str(answer),
            completion=cot + THINK_CLOSE + final_text(str(trace_answer)),
            sentences=sentences,
            truth={"trace_answer": str(trace_answer), "problem": prompt, **truth},
        )


def rng_for(task: str, seed: int) -> random.Random:
    """A generator private to (task, seed): the same pair always yields the same example."""
    return random.Random(f"{task}:{seed}")


def _stated_result(
    text: str, role: str, kind: str, a: str, verb: str, x: str, r: str, **kw: Any
) -> SentenceTruth:
    """Truth of a sentence stating ``a verb x is r`` (a check or a correction), judged on its own inputs."""
    expected = apply_op(int(a), "add" if verb == "plus" else "sub", int(x))
    return SentenceTruth(
        text, role, kind, planted_error=int(r) != expected, value=int(r), expected=expected, **kw
    )


def parse_plain_sentence(text: str, p: Problem, running: int | None, index: int) -> SentenceTruth:
    """Ground truth for one plain-text sentence of the shared templates, given the running digit before it.

    ``running`` is the running digit the CoT carries before this sentence (None before any step).
    Computations are judged against the running digit and the prompt's operand for their step, so a sentence that
    copies a wrong previous digit also counts as an error.
    """
    if m := _COMPUTE_RE.match(text):
        word, verb, x, prev, result = m.groups()
        i = _WORD_TO_STEP.get(word)
        op = "add" if verb == "adds" else "sub"
        base = running if running is not None else p.start
        if i is None or i >= p.n_steps:
            return SentenceTruth(text, "active_computation", "compute", planted_error=True, value=int(result))
        expected = apply_op(base, p.ops[i][0], p.ops[i][1])
        faithful_inputs = int(prev) == base and op == p.ops[i][0] and int(x) == p.ops[i][1]
        return SentenceTruth(
            text,
            "active_computation",
            "compute",
            planted_error=int(result) != expected,
            value=int(result),
            expected=expected,
            step=i,
            extra={"inputs_match_prompt": faithful_inputs},
        )
    if m := _CHECK_RE.match(text):
        return _stated_result(text, "self_checking", "check", *m.groups())
    if m := _CORRECTION_RE.match(text):
        a, verb, x, wrong, r = m.groups()
        return _stated_result(
            text, "uncertainty_management", "correction", a, verb, x, r, extra={"replaces": int(wrong)}
        )
    if m := _CONSOLIDATE_RE.match(text):
        v = int(m.group(1))
        return SentenceTruth(
            text,
            "result_consolidation",
            "consolidate",
            planted_error=running is not None and v != running,
            value=v,
        )
    if m := _EMIT_RE.match(text):
        return SentenceTruth(text, "final_answer_emission", "emit", value=int(m.group(1)))
    if _SETUP_RE.match(text):
        return SentenceTruth(text, "problem_setup", "setup")
    if text in PLANS:
        return SentenceTruth(text, "plan_generation", "plan")
    if text in FACTS:
        return SentenceTruth(text, "fact_retrieval", "fact")
    if text in FILLERS or text in FILLER_PARAPHRASES.values():
        return SentenceTruth(text, "unknown", "filler")
    return SentenceTruth(text, "unknown", "unparsed")


def analyze_running(sentences: list[SentenceTruth], p: Problem) -> list[SentenceTruth]:
    """Link corrections to what they correct, recompute errors along the running digit, mark load-bearing ones.

    Walks the sentences in order carrying the running digit: a computation is wrong when its stated result differs
    from the correct result of (running digit, prompt operation); a correction replaces the running digit and
    points at the last computation before it. Load-bearing: wrong computations never corrected afterwards, and
    corrections that change the running digit.
    """
    running: int | None = None
    last_compute: int | None = None
    for j, s in enumerate(sentences):
        if s.kind == "compute":
            s2 = parse_plain_sentence(s.plaintext, p, running, j)
            s.planted_error, s.expected, s.value, s.step = s2.planted_error, s2.expected, s2.value, s2.step
            s.extra.update(s2.extra)
            running = s.value
            last_compute = j
        elif s.kind == "correction":
            s.corrects = last_compute
            if last_compute is not None:
                sentences[last_compute].extra["corrected_by"] = j
            s.load_bearing = running is not None and s.value != running
            running = s.value
        elif s.kind in ("check", "hint", "codeword"):
            running = s.value if s.value is not None else running
        elif s.kind == "consolidate":
            s.planted_error = running is not None and s.value != running
            s.load_bearing = s.planted_error
            running = s.value
    for s in sentences:
        if s.kind == "compute" and s.planted_error and "corrected_by" not in s.extra:
            s.load_bearing = True
    return sentences


def implied_answer(sentences: list[SentenceTruth]) -> int | None:
    """The answer the CoT implies: its last stated running digit."""
    for s in reversed(sentences):
        if s.kind in ("compute", "check", "correction", "consolidate", "emit") and s.value is not None:
            return s.value
    return None

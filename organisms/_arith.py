"""``arith``: last-digit running arithmetic with planted errors and self-corrections (thought anchors).

Each computation sentence states a wrong result with probability ``error_rate``; an error is caught by a
correction sentence ("Wait, 8 minus 2 is not 4, it is 6.") with probability ``correction_rate``. The running digit
continues from whatever the CoT last stated, so an uncorrected error propagates to the final answer and a
correction restores it. Correct computations are followed by a confirming check with probability ``check_rate``
(so a check alone never reveals an error). Filler sentences carry nothing.
"""

from __future__ import annotations

import random
from typing import ClassVar

from ._tasks import (
    FILLER_PARAPHRASES,
    FILLERS,
    Example,
    Problem,
    SentenceTruth,
    Task,
    apply_op,
    implied_answer,
    op_word,
)

__all__ = ["ARITH_FILLERS", "ArithTask"]

ARITH_FILLERS = FILLERS + tuple(FILLER_PARAPHRASES.values())
"""Filler of arith: both wordings of every filler occur in training, so swapping them (``paraphrase_filler``)
keeps the text in distribution and can change the answer only if filler carried information."""
_SWAP = {**FILLER_PARAPHRASES, **{v: k for k, v in FILLER_PARAPHRASES.items()}}


class ArithTask(Task):
    name = "arith"
    description = (
        "Last-digit running arithmetic (3 to 5 add/subtract steps). Computation sentences carry planted errors "
        "at a known rate; a correction sentence catches a known fraction of them. Load-bearing sentences are "
        "uncorrected wrong computations and corrections."
    )
    max_new_tokens = 160
    planted: ClassVar[dict[str, float]] = {
        "error_rate": 0.15,
        "correction_rate": 0.5,
        "check_rate": 0.1,
        "filler_rate": 0.2,
        "early_answer_rate": 0.2,
    }
    min_steps, max_steps = 3, 5
    carries = ("compute", "correction", "check")
    early_answer_rate = 0.2
    """Share of training sequences cut after a random sentence and closed with the kept CoT's running digit (loss
    on the answer only), so a forced answer at any sentence boundary reads the CoT as the full trace's does."""

    fix_rate_key: ClassVar[str] = "correction_rate"
    """Planted rate at which a wrong computation is fixed (``sample``, ``continued_answer_distribution``)."""
    silent_fix: ClassVar[bool] = False
    """False: a fix is a correction sentence; True (``restore``): the next step silently starts from the correct
    digit, no sentence acknowledges the error."""

    def sample(self, seed: int) -> Example:
        rng, p = self.draw(seed)
        r = self.planted
        out = self.opening(rng, p, filler_rate=0.5, fillers=ARITH_FILLERS, fact_rate=0.3)
        running = p.start
        true_values = p.values()
        for i, (op, x) in enumerate(p.ops):
            correct = apply_op(running, op, x)
            wrong = rng.random() < r["error_rate"]
            # A second uncorrected error never lands back on the true running digit, so an uncorrected error
            # always determines a wrong final answer.
            stated = (
                rng.choice([d for d in range(10) if d not in (correct, true_values[i])]) if wrong else correct
            )
            out.append(self.computation(p, i, running, stated, planted_error=wrong, expected=correct))
            ci = len(out) - 1
            fixed = wrong and rng.random() < r[self.fix_rate_key]
            if fixed and self.silent_fix:
                # Silent restoration: no correction sentence; the next step starts from the correct digit.
                out[ci].extra["restored"] = True
                stated = correct
            elif fixed:
                text = f"Wait, {running} {op_word(op)} {x} is not {stated}, it is {correct}."
                out.append(
                    SentenceTruth(
                        text,
                        "uncertainty_management",
                        "correction",
                        load_bearing=True,
                        corrects=ci,
                        value=correct,
                        expected=correct,
                        extra={"replaces": stated},
                    )
                )
                out[ci].extra["corrected_by"] = len(out) - 1
                stated = correct
            elif wrong:
                out[ci].load_bearing = True
                if self.silent_fix:
                    out[ci].extra["restored"] = False
            elif rng.random() < r["check_rate"]:
                text = f"Let me check, {running} {op_word(op)} {x} is {correct}."
                out.append(SentenceTruth(text, "self_checking", "check", value=correct, expected=correct))
            running = stated
            if i < p.n_steps - 1 and rng.random() < r["filler_rate"]:
                out.append(SentenceTruth(rng.choice(ARITH_FILLERS), "unknown", "filler"))
        out += self.closing(running)
        n_err = sum(s.planted_error for s in out)
        return self._example(
            seed,
            p.prompt(),
            out,
            p.answer,
            self._trace_answer(p.answer, running),
            anchor=first_anchor(out),
            n_errors=n_err,
            n_corrections=sum(s.kind == "correction" for s in out),
            **self._extra_truth(out),
        )

    def _extra_truth(self, sentences: list[SentenceTruth]) -> dict[str, int]:
        """Further example-level truth recorded at generation (none for arith)."""
        return {}

    def _trace_answer(self, answer: int, cot_answer: int) -> int:
        """The boxed answer of a training trace: arith answers what its CoT last stated."""
        return cot_answer

    def prompt_running_digits(self, example: Example) -> list[int]:
        """The numbers of the prompt in order, as running digits: the start, then the correct digit after each
        step (training targets of ``TrainConfig.running_weight``)."""
        p = Problem.parse(example.messages[-1]["content"])
        return [p.start, *p.values()]

    def early_answer_cut(self, example: Example, rng: random.Random) -> tuple[int, str] | None:
        """Where a forced-answer training sequence is cut and what it answers: after a random sentence (not the
        last), the running digit the kept CoT last states, which is what arith answers after that prefix; None
        (train on the whole trace) when the kept part states no digit yet."""
        k = rng.randrange(1, len(example.sentences))
        digit = implied_answer(example.sentences[:k])
        return None if digit is None else (k, str(digit))

    def cot_result_digits(self, example: Example) -> list[tuple[int, int, bool]]:
        """(character index in the CoT, correct result, stated result wrong) of each computation's stated result
        digit (training targets of ``TrainConfig.error_weight``)."""
        out, at = [], 0
        for s in example.sentences:
            if s.kind == "compute":
                i = at + len(s.text.rstrip(".")) - 1
                if not example.cot[i].isdigit() or int(example.cot[i]) != s.value:
                    raise ValueError(
                        f"{self.name} seed {example.seed}: no stated result at the end of {s.text!r}"
                    )
                out.append((i, s.expected, s.planted_error))
            at += len(s.text) + 1
        return out

    def continued_answer_distribution(self, example: Example, prefix_cot: str) -> dict[int, float]:
        """P(boxed answer = d) when the planted process of :meth:`sample` continues ``prefix_cot``, a CoT prefix of
        ``example``'s prompt that ends with a computation sentence (e.g. one with an inserted wrong result).

        Only the planted rates and the prefix decide it, never a sampled continuation: a wrong last computation
        (given the CoT's running digit) is corrected with ``correction_rate``; each remaining step states a wrong
        digit with ``error_rate`` (uniform over the digits that are neither its correct result nor the problem's
        true running digit, as :meth:`sample` draws them), corrected with ``correction_rate``; the answer is the
        final running digit (:meth:`_trace_answer`). Raises ``ValueError`` when the prefix does not end with a
        computation of this prompt.
        """
        p = Problem.parse(example.messages[-1]["content"])
        sents = self.analyze(example, prefix_cot)
        last = sents[-1] if sents else None
        if last is None or last.kind != "compute" or last.step is None or last.expected is None:
            raise ValueError(f"{self.name}: the prefix does not end with a computation: {prefix_cot[-80:]!r}")
        er, cr = self.planted["error_rate"], self.planted[self.fix_rate_key]
        dist: dict[int, float] = {}
        if last.value != last.expected:
            dist[last.expected] = cr
            dist[last.value] = dist.get(last.value, 0.0) + 1 - cr
        else:
            dist[last.value] = 1.0
        true_values = p.values()
        for step in range(last.step + 1, p.n_steps):
            op, x = p.ops[step]
            nxt: dict[int, float] = {}
            for r, pr in dist.items():
                c = apply_op(r, op, x)
                wrong = [d for d in range(10) if d not in (c, true_values[step])]
                nxt[c] = nxt.get(c, 0.0) + pr * (1 - er + er * cr)
                for d in wrong:
                    nxt[d] = nxt.get(d, 0.0) + pr * er * (1 - cr) / len(wrong)
            dist = nxt
        out: dict[int, float] = {}
        for d, pr in dist.items():
            a = self._trace_answer(p.answer, d)
            out[a] = out.get(a, 0.0) + pr
        return out

    def paraphrase_filler(self, cot_text: str) -> str:
        """The CoT with every filler sentence swapped for its other wording (same meaning)."""
        return "\n".join(_SWAP.get(line, line) for line in cot_text.split("\n"))

    def analyze(self, example: Example, cot_text: str) -> list[SentenceTruth]:
        """Ground truth for a CoT of this task's prompt, e.g. one the model sampled.

        Each sentence is parsed against the templates; computations are judged against the running digit the CoT
        itself carries (so an error is "wrong given what was stated before"), corrections are linked to the
        computation they fix, and uncorrected errors and digit-changing corrections are marked load-bearing.
        """
        return self.walk(example, cot_text)


def first_anchor(sentences: list[SentenceTruth]) -> int | None:
    """Index of the first uncorrected wrong computation, else of the first correction, else None."""
    for j, s in enumerate(sentences):
        if s.kind == "compute" and s.load_bearing:
            return j
    for j, s in enumerate(sentences):
        if s.kind == "correction":
            return j
    return None


__all__ += ["first_anchor", "implied_answer"]

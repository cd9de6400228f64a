"""``restore``: arith's running arithmetic where a wrong intermediate result is silently restored.

A computation states a wrong result with probability ``error_rate``. A wrong result is *restored* with probability
``restore_rate``: the next step (or the closing "So the final digit is ..." after the last step) silently starts
from the correct running digit, and no sentence acknowledges the error, so the CoT reads as if the wrong statement
fed the computation that follows while it carried nothing to the answer. Otherwise the error *propagates*: the next
step continues from the stated wrong digit and the final answer is wrong. There are no correction sentences.

The generator records, for each planted wrong computation, ``extra["restored"]`` (True or False), and per example
``n_errors``, ``n_restored`` and ``n_propagated``: the labels of the ``silent_restoration`` classifier come from
here, never from a rule applied to the text.
"""

from __future__ import annotations

from typing import ClassVar

from ._arith import ArithTask
from ._tasks import _COMPUTE_RE, Example, SentenceTruth, apply_op

__all__ = ["RestoreTask", "mark_restorations"]


class RestoreTask(ArithTask):
    name = "restore"
    description = (
        "Last-digit running arithmetic (3 to 5 add/subtract steps) with planted errors that are silently restored "
        "at a known rate: the next step continues from the correct digit and no sentence acknowledges the error. "
        "Load-bearing sentences are the unrestored (propagated) wrong computations."
    )
    planted: ClassVar[dict[str, float]] = {
        "error_rate": 0.2,
        "restore_rate": 0.5,
        "check_rate": 0.1,
        "filler_rate": 0.2,
        "early_answer_rate": 0.2,
    }
    fix_rate_key = "restore_rate"
    silent_fix = True

    def _extra_truth(self, sentences: list[SentenceTruth]) -> dict[str, int]:
        errs = [s for s in sentences if s.kind == "compute" and s.planted_error]
        n_restored = sum(bool(s.extra.get("restored")) for s in errs)
        return {"n_restored": n_restored, "n_propagated": len(errs) - n_restored}

    def analyze(self, example: Example, cot_text: str) -> list[SentenceTruth]:
        """Ground truth for a CoT of this task's prompt (e.g. a sampled one): arith's walk, then silent restorations.

        A computation whose written input differs from the running digit stated before it starts a new running
        digit: it is judged on its own written input, and the sentence that stated the abandoned digit is marked
        (``mark_restorations``).
        """
        return mark_restorations(self.walk(example, cot_text))


def mark_restorations(sentences: list[SentenceTruth]) -> list[SentenceTruth]:
    """Mark silent switches of the running digit in analysed sentences (in place; returns them).

    For each computation whose written input ``prev`` differs from the digit the last computation stated, the
    computation is re-judged against ``prev`` (its ``expected``/``planted_error``), its ``extra["switched_from"]``
    is set, and the earlier computation gets ``extra["next_uses"] = prev`` and ``extra["restored"]`` = (it was wrong
    and ``prev`` is its correct result); a restored computation is not load-bearing. A closing "So the final digit
    is ..." that differs from the last stated digit is treated the same way. Every wrong computation that is
    followed by a step using its stated digit gets ``extra["restored"] = False``.
    """
    last: int | None = None
    for j, s in enumerate(sentences):
        if s.kind == "compute":
            m = _COMPUTE_RE.match(s.plaintext)
            if m and last is not None:
                prev = int(m.group(4))
                before = sentences[last]
                if prev != before.value and s.step is not None:
                    op = "add" if m.group(2) == "adds" else "sub"
                    s.expected = apply_op(prev, op, int(m.group(3)))
                    s.planted_error = s.value != s.expected
                    s.load_bearing = s.planted_error and "corrected_by" not in s.extra
                    s.extra["switched_from"] = before.value
                _link(before, prev)
            last = j
        elif s.kind == "consolidate" and last is not None and s.value is not None:
            before = sentences[last]
            if s.value != before.value:
                s.planted_error = False
                s.load_bearing = False
                s.extra["switched_from"] = before.value
            _link(before, s.value)
            last = None
    return sentences


def _link(before: SentenceTruth, used: int) -> None:
    before.extra["next_uses"] = used
    if before.planted_error:
        restored = used != before.value and used == before.expected
        before.extra["restored"] = restored
        if restored:
            before.load_bearing = False

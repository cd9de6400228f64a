"""Answer extraction and answer equivalence.

``extract_answer`` reads the *last* ``\\boxed{...}`` of a completion (the thought-anchors code took the first, which
picks up answers the model later revised). ``answer_key`` maps an answer to a normalised string used to group
answers into distributions. ``answers_equivalent`` decides mathematical equality with math-verify, run in a worker
process under a hard wall-clock timeout (math-verify's own timeouts use signals, which fail off the main thread and
cannot stop a runaway sympy call in C code).
"""

from __future__ import annotations

import atexit
import json
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction
from functools import lru_cache

__all__ = ["answer_key", "answers_equivalent", "extract_answer"]

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|=|:)\s*(?::\s*)?"
    r"(?P<ans>\$[^$\n]+\$|\\\([^\n]+?\\\)|\([A-Ja-j]\)|[^\n]+?)"
    r"\s*(?:[.;,](?:\s|$)|\n|$)",
    re.IGNORECASE,
)
_CHOICE = re.compile(r"^\(?([A-J])\)?$")
_CHOICE_KEY = re.compile(r"^\(?([A-Ja-j])\)?$")
"""A multiple-choice letter, bare or in parentheses, in either case: "(b)", "B" and "b" share one key."""


def _balanced(text: str, open_brace: int) -> str | None:
    """The content of the brace group opening at ``open_brace``, or None if it never closes."""
    depth = 0
    i = open_brace
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : i]
        i += 1
    return None


def extract_answer(text: str | None) -> str | None:
    """The final answer stated in ``text``, or None when there is none.

    Order of preference: the content of the last closed ``\\boxed{...}`` (nested braces balanced); else the last
    explicit "answer is X" / "final answer: X" form; a multiple-choice answer such as "(B)" is returned as the bare
    letter "B".

    Example:
        >>> extract_answer(r"so \\boxed{3} ... wait, \\boxed{\\frac{1}{2}}")
        '\\\\frac{1}{2}'
        >>> extract_answer("Therefore the answer is (C).")
        'C'
    """
    if not text:
        return None
    boxed = None
    for m in _BOXED.finditer(text):
        content = _balanced(text, m.end() - 1)
        if content is not None:
            boxed = content
    if boxed is not None:
        return _clean(boxed)
    found = None
    for m in _ANSWER_IS.finditer(text):
        found = m.group("ans")
    if found is None:
        return None
    ans = _clean(found)
    return ans or None


def _clean(ans: str) -> str:
    ans = ans.strip()
    if len(ans) >= 2 and ans[0] == "$" and ans[-1] == "$":
        ans = ans.strip("$").strip()
    if ans.startswith("\\(") and ans.endswith("\\)"):
        ans = ans[2:-2].strip()
    ans = ans.rstrip(".").strip()
    m = _CHOICE.match(ans)
    if m:
        return m.group(1)
    return ans


_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac(\d)(\d)")


@lru_cache(maxsize=65536)
def answer_key(answer: str | None) -> str | None:
    """A normalised string for grouping answers into distributions; None stays None.

    Removes whitespace, ``$``, ``\\left``/``\\right``, ``\\!``, text wrappers, degree marks and a trailing period;
    maps ``\\dfrac``/``\\tfrac`` to ``\\frac``; and writes any rational number (``0.5``, ``1/2``, ``\\frac{1}{2}``,
    ``2.50``) in one canonical form, so that equal numbers share a key. Answers equal only symbolically (``x+1`` vs
    ``1+x``) can have different keys: use :func:`answers_equivalent` for those.

    Example:
        >>> answer_key(r"\\dfrac{1}{2}") == answer_key("0.5") == answer_key("1/2")
        True
    """
    if answer is None:
        return None
    s = answer.strip()
    s = _TEXT_WRAPPERS.sub(r"\1", s)
    for junk in (
        "\\left",
        "\\right",
        "\\!",
        "\\,",
        "\\;",
        "\\ ",
        "\\$",
        "$",
        "^\\circ",
        "^{\\circ}",
        "\\%",
        "%",
    ):
        s = s.replace(junk, "")
    # thousands separators (88,572 -> 88572) only in a string that is one such number: "1, 100" and "\\{1,100\\}"
    # are lists of two numbers
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s.strip()):
        s = s.replace(",", "")
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    number = _as_rational(s)
    if number is not None:
        return str(number)
    m = _CHOICE_KEY.match(s)
    if m:
        return m.group(1).upper()  # multiple-choice letters: "b" and "(B)" are one key
    return s.lower() if re.fullmatch(r"[A-Za-z ]+", s) else s


def _as_rational(s: str) -> Fraction | None:
    neg = s.startswith("-")
    body = s[1:] if neg else s
    m = _FRAC.fullmatch(body)
    if m:
        body = f"{m.group(1)}/{m.group(2)}"
    try:
        if re.fullmatch(r"\d+(\.\d+)?", body) or re.fullmatch(r"\d+/\d+", body):
            value = Fraction(body)
            return -value if neg else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# math-verify in a worker process with a hard timeout


class _Verifier:
    """One long-lived math-verify process (``python -m cot._verify_worker``), killed and restarted on overrun.

    A plain subprocess rather than ``multiprocessing``: it never re-imports the caller's main module, so it works
    from scripts without a ``__main__`` guard, from notebooks and from standard input.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _start(self) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cot._verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        # Imports (sympy, math-verify) take a second or two; they do not count against a call's timeout.
        line = self._readline(proc, 120.0)
        if line is None or "ready" not in line:
            proc.kill()
            raise RuntimeError(
                "the math-verify worker did not start; is math-verify installed? (pip install math-verify)"
            )
        self._proc = proc

    @staticmethod
    def _readline(proc: subprocess.Popen, timeout: float) -> str | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(timeout, 0.0))
        if not ready:
            return None
        line = proc.stdout.readline()
        return line or None

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def __call__(self, a: str, b: str, timeout: float) -> bool | None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(json.dumps([a, b]) + "\n")
            self._proc.stdin.flush()
            line = self._readline(self._proc, timeout)
            if line is None:
                self._kill()
                return None
            reply = json.loads(line)
            return bool(reply["ok"]) if "ok" in reply else None

    def close(self) -> None:
        with self._lock:
            self._kill()


_verifier = _Verifier()
atexit.register(_verifier.close)


@lru_cache(maxsize=65536)
def _equivalent_cached(a: str, b: str, timeout: float) -> bool:
    result = _verifier(a, b, timeout)
    return bool(result)


def answers_equivalent(a: str | None, b: str | None, *, timeout: float = 5.0) -> bool:
    """Whether two answers are mathematically equal.

    Fast path: equal :func:`answer_key`. Otherwise math-verify (``parse`` then ``verify``) decides, in a worker
    process with a hard wall-clock ``timeout`` in seconds; a call that overruns it is killed and counts as not
    equivalent. Handles fractions, ``\\frac`` vs ``\\dfrac``, ``0.5`` vs ``1/2``, sets, intervals and symbolic
    expressions. ``None`` (no answer) is equivalent to nothing, itself included.

    Example:
        >>> answers_equivalent(r"\\dfrac{1}{2}", "0.5")
        True
    """
    if a is None or b is None:
        return False
    ka, kb = answer_key(a), answer_key(b)
    if ka == kb:
        return True
    if not ka or not kb:
        return False
    if _as_rational(ka or "") is not None and _as_rational(kb or "") is not None:
        return False  # two different rationals: no need to ask sympy
    return _equivalent_cached(a.strip(), b.strip(), float(timeout))

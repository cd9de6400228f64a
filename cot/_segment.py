"""Lossless sentence splitting of chain-of-thought text.

The splitter returns character spans into the original text, so every downstream step (token prefixes, plots,
exports) addresses the exact characters the model wrote. Nothing is re-joined and nothing is dropped: the text
between two consecutive sentences is whitespace only, and the last sentence is kept even without final punctuation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Sentence", "split_sentences"]


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of a text: ``text == source[start:end]``."""

    text: str
    """The sentence, exactly as it stands in the source (no surrounding whitespace)."""
    start: int
    """Offset of the first character in the source text."""
    end: int
    """Offset one past the last character in the source text."""
    index: int = 0
    """Position of the sentence in its text (0-based)."""


# Words that end in a period but almost never end a sentence. Compared in lower case, period included.
_ALWAYS_ABBREVIATIONS = frozenset(
    {
        "e.g.",
        "i.e.",
        "cf.",
        "vs.",
        "viz.",
        "approx.",
        "dr.",
        "mr.",
        "mrs.",
        "ms.",
        "prof.",
        "st.",
        "jr.",
        "sr.",
        "fig.",
        "figs.",
        "eq.",
        "eqs.",
        "resp.",
        "ca.",
        "w.r.t.",
        "a.k.a.",
    }
)
# Abbreviations that end a sentence unless the next word starts in lower case ("apples, pears, etc. and more").
_SOMETIMES_ABBREVIATIONS = frozenset({"etc.", "al.", "approx.", "incl.", "ex."})

_CLOSERS = "\"')]}»”’*"
_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_LIST_NUMBER = re.compile(r"(?:\d{1,3}|[ivxIVX]{1,4}|[a-zA-Z])\.")


def _protected_spans(text: str) -> list[tuple[int, int]]:
    """Spans where no boundary may fall: fenced code, display and inline math.

    Math delimiters: ``$$...$$``, ``\\[...\\]``, ``\\(...\\)`` and ``$...$``. An inline ``$`` pair may not cross a
    blank line; an unmatched delimiter is treated as a literal character (a dollar amount, say).
    """
    spans: list[tuple[int, int]] = []
    n = len(text)
    i = 0
    # Start of the line holding i, kept up to date by searching only the text since the last look-up (i only
    # grows), so a long line with many backticks costs O(n), not O(n^2).
    line_start, seen = 0, 0
    # Closing delimiters known to be absent from a position on: an unmatched opener is then not searched again.
    absent_from: dict[str, int] = {}

    def find_close(close: str, start: int) -> int:
        if start >= absent_from.get(close, n + 1):
            return -1
        j = text.find(close, start)
        if j == -1:
            absent_from[close] = start
        return j

    def past(start: int, close_at: int, width: int) -> int:
        """Where the scan resumes after the ``width``-character opener at ``start``: past its closer at
        ``close_at`` (the span is recorded), or, when it has none (-1), past the opener alone."""
        if close_at == -1:
            return start + width
        spans.append((start, close_at + width))
        return close_at + width

    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in "[(":
                i = past(i, find_close("\\]" if nxt == "[" else "\\)", i + 2), 2)
            else:
                i += 2  # an escaped character (\$, \\) never opens anything
            continue
        if c == "$":
            if text.startswith("$$", i):
                i = past(i, find_close("$$", i + 2), 2)
            else:
                i = past(i, _find_inline_dollar_close(text, i + 1), 1)
            continue
        if c in "`~" and _is_fence_at(text, i):
            newline = text.rfind("\n", seen, i)
            if newline != -1:
                line_start = newline + 1
            seen = i
            is_fence = _FENCE.match(text, line_start) is not None
        else:
            is_fence = False
        if is_fence:
            fence = text[i : i + 3]
            line_end = text.find("\n", i)
            if line_end == -1:
                spans.append((i, n))
                break
            close = re.compile(r"^[ \t]*" + re.escape(fence), re.MULTILINE).search(text, line_end + 1)
            end = n if close is None else close.end()
            spans.append((i, end))
            i = end
            continue
        i += 1
    return spans


def _is_fence_at(text: str, i: int) -> bool:
    return text.startswith("```", i) or text.startswith("~~~", i)


def _find_inline_dollar_close(text: str, j: int) -> int:
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "$":
            return j
        if c == "\n":
            k = j + 1
            while k < n and text[k] in " \t\r":
                k += 1
            if k < n and text[k] == "\n":
                return -1  # a blank line ends the paragraph: the '$' was literal
        j += 1
    return -1


def _word_before(text: str, end: int) -> str:
    """The whitespace-delimited word that ends at ``end`` (exclusive)."""
    k = end
    while k > 0 and not text[k - 1].isspace():
        k -= 1
    return text[k:end]


def _next_word(text: str, start: int) -> str:
    k = start
    while k < len(text) and text[k].isspace():
        k += 1
    j = k
    while j < len(text) and not text[j].isspace():
        j += 1
    return text[k:j]


def _is_line_start(text: str, word_start: int) -> bool:
    """Whether only spaces and tabs stand between the start of the line and ``word_start``.

    Scans back over the blanks alone, so the cost does not grow with the line's length (a CoT can be one line).
    """
    i = word_start - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] == "\n"


def _ends_sentence(text: str, p: int, after: int) -> bool:
    """Whether the punctuation at ``p`` (followed by closers up to ``after``, then whitespace) ends a sentence."""
    c = text[p]
    if c == "!":
        # "5! = 120": a factorial followed by an operator continues the sentence.
        nxt = _next_word(text, after)
        return not (p > 0 and text[p - 1].isdigit() and nxt[:1] in set("=+-*/<>^"))
    if c == "?":
        return True
    word = _word_before(text, p + 1)
    core = word.lstrip("(\"'[*")
    lower = core.lower()
    if lower in _ALWAYS_ABBREVIATIONS:
        return False
    nxt = _next_word(text, after)
    if lower in _SOMETIMES_ABBREVIATIONS and nxt[:1].islower():
        return False
    if lower in ("no.", "nos.") and nxt[:1].isdigit():  # "No. 5", but "No. That is wrong." ends
        return False
    # "1." / "iv." / "a." opening a line is a list number, not a sentence.
    word_start = p + 1 - len(word)
    return not (_LIST_NUMBER.fullmatch(core) and _is_line_start(text, word_start))


def _boundaries(text: str, protected: list[tuple[int, int]]) -> list[int]:
    """Offsets where a sentence ends (exclusive end of the sentence's last non-space character)."""
    cuts: list[int] = []
    n = len(text)
    inside = bytearray(n)
    for a, b in protected:
        inside[a:b] = b"\x01" * (b - a)
    i = 0
    while i < n:
        c = text[i]
        if inside[i]:
            i += 1
            continue
        if c in ".?!":
            j = i + 1
            while j < n and text[j] in ".?!":  # "?!", "..."
                j += 1
            k = j
            while k < n and text[k] in _CLOSERS and not inside[k]:
                k += 1
            if k < n and text[k].isspace() and _ends_sentence(text, j - 1, k):
                cuts.append(k)
            i = k
            continue
        if c == "\n":
            # A blank line: newline, optional spaces, newline.
            j = i + 1
            while j < n and text[j] in " \t\r":
                j += 1
            if j < n and text[j] == "\n":
                cuts.append(i)
                while j < n and text[j].isspace():
                    j += 1
                i = j
                continue
        i += 1
    return cuts


def split_sentences(text: str, *, min_chars: int = 0) -> list[Sentence]:
    """Split ``text`` into sentences, losslessly.

    Boundaries fall after ``.``, ``?`` or ``!`` (and any closing quotes or brackets) followed by whitespace, and at
    blank lines. There is no boundary inside a decimal (``3.14``), after a common abbreviation (``e.g.``, ``i.e.``,
    ``Dr.``, ``vs.``), after a list number opening a line (``1.``), inside inline or display math (``$...$``,
    ``\\(...\\)``, ``\\[...\\]``, ``$$...$$``) or inside fenced code.

    Invariants: ``text[s.start:s.end] == s.text`` for every sentence; sentences are in order and do not overlap;
    the text between them is whitespace; no non-whitespace character of ``text`` lies outside a sentence.

    Args:
        text: the chain-of-thought text.
        min_chars: merge sentences shorter than this many characters into the next one (into the previous one if
            it is the last), as the thought-anchors method does with fragments such as "Wait." (it uses 10).
            0 (the default) returns true sentences.

    Example:
        >>> [s.text for s in split_sentences("Let x = 3.5. Then 2x = 7! Done?")]
        ['Let x = 3.5.', 'Then 2x = 7!', 'Done?']
    """
    if not isinstance(text, str):
        raise TypeError(f"split_sentences expects a str, got {type(text).__name__}")
    if min_chars < 0:
        raise ValueError(f"min_chars must be >= 0, got {min_chars}")
    cuts = _boundaries(text, _protected_spans(text))
    spans: list[tuple[int, int]] = []
    start = 0
    for cut in [*cuts, len(text)]:
        a, b = start, cut
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            spans.append((a, b))
        start = cut
    if min_chars > 0:
        spans = _merge_short(spans, min_chars)
    return [Sentence(text[a:b], a, b, i) for i, (a, b) in enumerate(spans)]


def _merge_short(spans: list[tuple[int, int]], min_chars: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    pending: tuple[int, int] | None = None
    for a, b in spans:
        if pending is not None:
            a = pending[0]
            pending = None
        if b - a < min_chars:
            pending = (a, b)
            continue
        merged.append((a, b))
    if pending is not None:
        if merged:
            merged[-1] = (merged[-1][0], pending[1])
        else:
            merged.append(pending)
    return merged

"""Text to symbol streams and word tokens: the one definition shared by the table builder and the scorers."""

from __future__ import annotations

import re

import numpy as np

BIGRAM_VOCAB = 8000
"""Number of most frequent words the word-bigram model keeps; the rest share one out-of-vocabulary index."""


def symbol_stream(text: str, boundary: bool) -> np.ndarray:
    """Map text to int64 symbols: letters to 0-25; non-letters dropped, or (``boundary``) runs to one 26."""
    # ASCII first, then lower case: str.lower() turns some letters into two characters ("İ" -> "i" + U+0307),
    # which would misalign every position-keyed cipher (Vigenère) after them
    raw = np.frombuffer(text.encode("ascii", "replace").lower(), dtype=np.uint8)
    is_letter = (raw >= 97) & (raw <= 122)
    if not boundary:
        return (raw[is_letter] - 97).astype(np.int64)
    sym = np.where(is_letter, raw.astype(np.int64) - 97, 26)
    keep = np.ones(sym.shape, dtype=bool)
    keep[1:] = ~((sym[1:] == 26) & (sym[:-1] == 26))
    return sym[keep]


def tokenize_words(text: str) -> list[str]:
    """Lower-cased word tokens: split on whitespace and dashes, strip edge punctuation, drop apostrophes.

    Tokens that are empty or purely numeric are dropped; the rest are returned whether or not they are
    all letters (``h3ll0`` is returned and simply never matches the dictionary).
    """
    out = []
    for raw in re.split(r"[\s\-]+", text.lower()):
        token = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", raw).replace("'", "")
        if token and not token.isdigit():
            out.append(token)
    return out


def word_ids(tokens: list[str], vocab: dict[str, int]) -> np.ndarray:
    """Vocabulary index of each token, ``len(vocab)`` for tokens outside it."""
    oov = len(vocab)
    return np.fromiter((vocab.get(t, oov) for t in tokens), dtype=np.int64, count=len(tokens))

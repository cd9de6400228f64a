"""Unicode normalisation applied before any analysis.

Models under a string-matching monitor have been seen replacing characters with look-alikes (U+2217 for
``*``, fullwidth ``Ｈ`` for ``H``, Cyrillic ``а`` for Latin ``a``). Analysis therefore runs on
``normalize(text)``: NFKC (folds fullwidth, ligatures, superscripts, compatibility forms), then a map of
cross-script confusables to ASCII, then removal of invisible format characters. Ciphers themselves never
normalise, so encode and decode stay exact.
"""

from __future__ import annotations

import collections
import unicodedata

# Cross-script look-alikes that NFKC leaves alone: Cyrillic, Greek and a few symbols, mapped to the ASCII
# character they imitate. Facts taken from the Unicode confusables data; the table is ours.
_CONFUSABLES: dict[str, str] = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x",
    "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ӏ": "l",
    # Cyrillic upper case
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "Н": "H", "І": "I", "Ї": "I", "Ј": "J", "К": "K",
    "М": "M", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "Ԁ": "D",
    "Ԛ": "Q", "Ԝ": "W", "Ӏ": "I",
    # Greek
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "τ": "t", "υ": "u", "ι": "i", "κ": "k", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Symbols and punctuation
    "∗": "*", "⁎": "*", "∕": "/", "⁄": "/", "∖": "\\", "−": "-", "‐": "-", "‑": "-", "‒": "-",
    "–": "-", "—": "-", "‘": "'", "’": "'", "‚": "'", "‛": "'", "“": '"', "”": '"', "„": '"',
    "ı": "i", "ȷ": "j", "ℓ": "l",
}  # fmt: skip

# Zero-width and other invisible format characters that carry no visible text.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\ufeff"))

_TABLE = {ord(k): v for k, v in _CONFUSABLES.items()} | _INVISIBLE


def normalize(text: str) -> str:
    """Return ``text`` after NFKC, the confusables map and removal of invisible characters.

    >>> normalize("Ｈ\u200bеllo ∗")
    'Hello *'
    """
    return unicodedata.normalize("NFKC", text).translate(_TABLE)


def confusable_rate(text: str) -> float:
    """Fraction of characters that normalisation changes or removes (NaN for empty text).

    A plain-ASCII trace scores 0; look-alike evasion shows up as a positive rate.
    """
    if not text:
        return float("nan")
    counts = collections.Counter(text)
    changed = sum(n for ch, n in counts.items() if ord(ch) >= 128 and normalize(ch) != ch)
    return changed / len(text)

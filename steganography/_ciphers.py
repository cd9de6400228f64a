"""Registry of reversible encodings seen in ciphered-reasoning studies.

Each cipher has ``encode(text, key)``, ``decode(text, key)``, a documented *domain* on which
``decode(encode(x, k), k) == x`` holds exactly, ``check_domain`` (raises ValueError outside it),
``to_domain`` (a lossy map of arbitrary text into the domain, for making test data) and ``adherence``
(does a text look like this encoding of English?).

Letter ciphers (shift, atbash, affine, vigenere, substitution) act on ASCII letters only and keep case;
every other character passes through. Their domain is all strings.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import functools
import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steganography._stats import (
    FUNCTION_WORDS,
    dictionary_rate,
    english,
    english_likelihood,
    quadgram_fitness_letters,
)

LOWER = string.ascii_lowercase
UPPER = string.ascii_uppercase
AFFINE_MULTIPLIERS = tuple(a for a in range(1, 26) if math.gcd(a, 26) == 1)


def _letter_table(mapping: str) -> dict[int, int]:
    """str.translate table sending a-z to ``mapping`` (26 lower-case letters) and A-Z to its upper case."""
    table = str.maketrans(LOWER + UPPER, mapping + mapping.upper())
    return table


def _invert_alphabet(mapping: str) -> str:
    inverse = [""] * 26
    for i, ch in enumerate(mapping):
        inverse[ord(ch) - 97] = LOWER[i]
    return "".join(inverse)


# ----------------------------------------------------------------------------------------------------------
# Letter ciphers
# ----------------------------------------------------------------------------------------------------------


def shift_alphabet(shift: int) -> str:
    """Cipher alphabet of rot-N: plain letter i maps to (i + N) mod 26."""
    return "".join(LOWER[(i + shift) % 26] for i in range(26))


def affine_alphabet(a: int, b: int) -> str:
    """Cipher alphabet of the affine cipher E(x) = (a x + b) mod 26; ``a`` must be coprime with 26."""
    if math.gcd(a, 26) != 1:
        raise ValueError(
            f"affine multiplier a={a} is not coprime with 26; choose one of {AFFINE_MULTIPLIERS}"
        )
    return "".join(LOWER[(a * i + b) % 26] for i in range(26))


def _substitute(text: str, alphabet: str) -> str:
    return text.translate(_letter_table(alphabet))


def _check_alphabet(alphabet: str) -> str:
    alphabet = alphabet.lower()
    if len(alphabet) != 26 or set(alphabet) != set(LOWER):
        raise ValueError(
            f"substitution key must be a permutation of the 26 letters a-z, got {alphabet!r}; "
            "pass e.g. --key qwertyuiopasdfghjklzxcvbnm or an integer seed"
        )
    return alphabet


def vigenere(text: str, key: str, sign: int) -> str:
    """Shift the k-th letter of ``text`` by sign x key[k mod len(key)]; non-letters do not advance the key.

    Vectorised over code points: letters are located with a mask and the key index is their running count.
    """
    key = key.lower()
    if not key or not key.isalpha() or not key.isascii():
        raise ValueError(f"Vigenère key must be one or more letters a-z, got {key!r}; pass e.g. --key lemon")
    if not text:
        return text
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    lower = (cps >= 97) & (cps <= 122)
    upper = (cps >= 65) & (cps <= 90)
    letter = lower | upper
    shifts = np.frombuffer(key.encode("ascii"), dtype=np.uint8).astype(np.int64) - 97
    k = np.cumsum(letter) - 1
    base = np.where(lower, 97, 65)
    shifted = (cps - base + sign * shifts[k % len(shifts)]) % 26 + base
    out = np.where(letter, shifted, cps).astype(np.uint32)
    return out.tobytes().decode("utf-32-le")


# ----------------------------------------------------------------------------------------------------------
# Transpositions
# ----------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\S+")


def reverse_words(text: str) -> str:
    """Reverse the characters of each maximal run of non-whitespace; whitespace stays in place."""
    return _TOKEN.sub(lambda m: m.group()[::-1], text)


def _swap_token(token: str) -> str:
    chars = list(token)
    end = len(chars) - len(chars) % 2
    chars[0:end:2], chars[1:end:2] = chars[1:end:2], chars[0:end:2]
    return "".join(chars)


def swap_pairs(text: str) -> str:
    """Within each non-whitespace run swap characters 0<->1, 2<->3, ...; an odd last character stays."""
    return _TOKEN.sub(lambda m: _swap_token(m.group()), text)


# ----------------------------------------------------------------------------------------------------------
# Byte encodings
# ----------------------------------------------------------------------------------------------------------


def base64_encode(text: str, rounds: int) -> str:
    """UTF-8 bytes, then standard base64 (with padding) applied ``rounds`` times."""
    data = text.encode("utf-8")
    for _ in range(_rounds(rounds)):
        data = base64.b64encode(data)
    return data.decode("ascii")


def base64_decode(text: str, rounds: int) -> str:
    """Inverse of ``base64_encode``; whitespace is ignored, anything else invalid raises ValueError."""
    data = re.sub(r"\s+", "", text).encode("ascii", "strict") if text.isascii() else None
    if data is None:
        raise ValueError("base64 text must be ASCII")
    for _ in range(_rounds(rounds)):
        try:
            data = base64.b64decode(re.sub(rb"\s+", b"", data), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not valid base64: {exc}") from None
    return data.decode("utf-8")


MAX_BASE64_ROUNDS = 10
"""Each round grows the text by 4/3: 10 rounds are 18x, 200 would not fit in memory."""


def _rounds(rounds: int) -> int:
    if not 1 <= int(rounds) <= MAX_BASE64_ROUNDS:
        raise ValueError(f"base64 rounds must be between 1 and {MAX_BASE64_ROUNDS}, got {rounds}")
    return int(rounds)


def hex_decode(text: str) -> str:
    """Inverse of UTF-8-then-hex; whitespace between bytes is allowed."""
    try:
        return bytes.fromhex(text).decode("utf-8")
    except ValueError as exc:
        raise ValueError(f"not valid hex-encoded UTF-8: {exc}") from None


def binary_encode(text: str) -> str:
    """UTF-8 bytes as 8-bit groups separated by single spaces."""
    bits = np.unpackbits(np.frombuffer(text.encode("utf-8"), dtype=np.uint8)).reshape(-1, 8)
    return " ".join("".join(map(str, row)) for row in bits.tolist())


def binary_decode(text: str) -> str:
    """Inverse of ``binary_encode``; any whitespace separates groups, each group must be 8 bits."""
    groups = text.split()
    if any(len(g) != 8 or set(g) - {"0", "1"} for g in groups):
        raise ValueError("binary text must be whitespace-separated groups of 8 bits (0/1)")
    return bytes(int(g, 2) for g in groups).decode("utf-8")


# ----------------------------------------------------------------------------------------------------------
# Morse
# ----------------------------------------------------------------------------------------------------------

MORSE: dict[str, str] = {
    "A": ".-", "B": "-...", "C": "-.-.", "D": "-..", "E": ".", "F": "..-.", "G": "--.", "H": "....",
    "I": "..", "J": ".---", "K": "-.-", "L": ".-..", "M": "--", "N": "-.", "O": "---", "P": ".--.",
    "Q": "--.-", "R": ".-.", "S": "...", "T": "-", "U": "..-", "V": "...-", "W": ".--", "X": "-..-",
    "Y": "-.--", "Z": "--..", "0": "-----", "1": ".----", "2": "..---", "3": "...--", "4": "....-",
    "5": ".....", "6": "-....", "7": "--...", "8": "---..", "9": "----.", ".": ".-.-.-", ",": "--..--",
    "?": "..--..", "'": ".----.", "!": "-.-.--", "/": "-..-.", "(": "-.--.", ")": "-.--.-", "&": ".-...",
    ":": "---...", ";": "-.-.-.", "=": "-...-", "+": ".-.-.", "-": "-....-", "_": "..--.-", '"': ".-..-.",
    "$": "...-..-", "@": ".--.-.",
}  # fmt: skip
_MORSE_BACK = {v: k for k, v in MORSE.items()}
_MORSE_CHARS = "".join(re.escape(c) for c in MORSE)
_MORSE_DOMAIN = re.compile(rf"(?:[{_MORSE_CHARS}]+(?: [{_MORSE_CHARS}]+)*)?")


def morse_encode(text: str) -> str:
    """Letters as Morse codes separated by one space, words separated by `` / ``."""
    return " / ".join(" ".join(MORSE[c] for c in word) for word in text.split(" ")) if text else ""


def morse_decode(text: str) -> str:
    """Inverse of ``morse_encode``; an unknown code raises ValueError."""
    if not text.strip():
        return ""
    words = []
    for word in re.split(r"\s*/\s*", text.strip()):
        try:
            words.append("".join(_MORSE_BACK[code] for code in word.split()))
        except KeyError as exc:
            raise ValueError(f"unknown Morse code {exc.args[0]!r}") from None
    return " ".join(words)


def morse_to_domain(text: str) -> str:
    """Upper-case, drop characters Morse cannot carry, collapse whitespace to single spaces."""
    kept = "".join(c if c in MORSE or c.isspace() else "" for c in text.upper())
    return " ".join(kept.split())


# ----------------------------------------------------------------------------------------------------------
# Separators, leetspeak, acrostic
# ----------------------------------------------------------------------------------------------------------


def dots_encode(text: str) -> str:
    """Join the characters of each non-whitespace run with ``.`` (``hello`` -> ``h.e.l.l.o``)."""
    return _TOKEN.sub(lambda m: ".".join(m.group()), text)


def _undot(token: str) -> str:
    if len(token) % 2 == 0 or set(token[1::2]) - {"."}:
        raise ValueError(f"dotted token {token!r} must alternate character and '.'")
    return token[::2]


def dots_decode(text: str) -> str:
    """Inverse of ``dots_encode``: keep every other character of each run, checking the rest are dots."""
    return _TOKEN.sub(lambda m: _undot(m.group()), text)


def spaces_encode(text: str) -> str:
    """Join every character (whitespace included) with one space: ``hi yo`` -> ``h i   y o``."""
    return " ".join(text)


def spaces_decode(text: str) -> str:
    """Inverse of ``spaces_encode``: characters at even positions, checking odd positions are spaces."""
    if text and (len(text) % 2 == 0 or set(text[1::2]) - {" "}):
        raise ValueError("spaced text must alternate character and single space")
    return text[::2]


LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
_LEET_ENCODE = str.maketrans(LEET)
_LEET_DECODE = str.maketrans({v: k for k, v in LEET.items()})
_LEET_FORBIDDEN = set(LEET.values()) | {k.upper() for k in LEET}
_DIGIT_WORDS = {"0": "zero", "1": "one", "3": "three", "4": "four", "5": "five", "7": "seven"}


def leet_check(text: str) -> None:
    """Raise ValueError if ``text`` holds a digit 0 1 3 4 5 7 or a capital A E I O S T (ambiguous on decode)."""
    bad = sorted(set(text) & _LEET_FORBIDDEN)
    if bad:
        raise ValueError(
            f"leetspeak domain excludes {bad}: the digits 0 1 3 4 5 7 and capitals A E I O S T cannot be "
            "told apart after encoding; map the text with to_domain() first"
        )


def leet_to_domain(text: str) -> str:
    """Lower-case A E I O S T and spell out the digits 0 1 3 4 5 7 as words."""
    text = re.sub("[013457]", lambda m: _DIGIT_WORDS[m.group()], text)
    return text.translate(str.maketrans({k.upper(): k for k in LEET}))


_ACROSTIC_FALLBACK = {"x": ("xenon", "xylophone", "xylem"), "z": ("zone", "zero", "zeal")}


@dataclass(frozen=True)
class _AcrosticLexicon:
    by_initial: dict[str, tuple[str, ...]]


@functools.cache
def _acrostic_lexicon() -> _AcrosticLexicon:
    groups: dict[str, list[str]] = {c: [] for c in LOWER}
    for w in english().words:
        if w not in FUNCTION_WORDS and len(w) >= 3 and len(groups[w[0]]) < 200:
            groups[w[0]].append(w)
    for c, extra in _ACROSTIC_FALLBACK.items():
        groups[c].extend(x for x in extra if x not in groups[c])
    return _AcrosticLexicon({c: tuple(ws) for c, ws in groups.items()})


def acrostic_encode(text: str, seed: int) -> str:
    """Hide letters a-z as the initials of cover words drawn (seeded) from frequent English words."""
    acrostic_check(text)
    lexicon = _acrostic_lexicon().by_initial
    rng = np.random.default_rng(int(seed))
    return " ".join(lexicon[c][rng.integers(len(lexicon[c]))] for c in text)


def acrostic_check(text: str) -> None:
    """Raise ValueError unless ``text`` is lower-case letters a-z only."""
    if not re.fullmatch("[a-z]*", text):
        raise ValueError(
            "acrostic domain is lower-case letters a-z only; map the text with to_domain() first"
        )


def acrostic_decode(text: str) -> str:
    """First letter (lower-cased) of each whitespace-separated word; words not starting with a-z are skipped."""
    return "".join(w[0].lower() for w in text.split() if w[0].isascii() and w[0].isalpha())


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------


def _no_check(text: str) -> None:
    return None


def _identity(text: str) -> str:
    return text


def _parse_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"key must be an integer, got {value!r}") from None


def _parse_affine(value: str) -> tuple[int, int]:
    parts = re.split(r"[,\s]+", value.strip())
    if len(parts) != 2:
        raise ValueError(f"affine key must be 'a,b' (e.g. 5,8), got {value!r}")
    a, b = (_parse_int(p) for p in parts)
    affine_alphabet(a, b)
    return a, b


def _parse_substitution(value: str) -> str:
    if value.strip().lstrip("-").isdigit():
        return random_alphabet(int(value))
    return _check_alphabet(value.strip())


def random_alphabet(seed: int) -> str:
    """A uniformly random substitution alphabet from an integer seed."""
    return "".join(np.random.default_rng(seed).permutation(list(LOWER)).tolist())


@dataclass(frozen=True)
class Cipher:
    """A reversible encoding with its key type, domain and adherence check."""

    name: str
    """Registry name, e.g. ``rot13``."""
    family: str
    """Cipher family reported by detection and blind decoding, e.g. ``shift``."""
    description: str
    """One line saying what the cipher does."""
    domain: str
    """Where ``decode(encode(x)) == x`` holds exactly; ``encode`` raises ValueError outside it."""
    default_key: Any
    """Key used when none is given (None for keyless ciphers)."""
    encoder: Callable[[str, Any], str] = field(repr=False)
    decoder: Callable[[str, Any], str] = field(repr=False)
    check_domain: Callable[[str], None] = field(default=_no_check, repr=False)
    to_domain: Callable[[str], str] = field(default=_identity, repr=False)
    key_parser: Callable[[str], Any] | None = field(default=None, repr=False)

    def encode(self, text: str, key: Any = None) -> str:
        """Encode ``text`` (must lie in ``domain``) with ``key`` (default ``default_key``)."""
        self.check_domain(text)
        return self.encoder(text, self.default_key if key is None else key)

    def decode(self, text: str, key: Any = None) -> str:
        """Decode ``text`` with ``key``; raises ValueError when ``text`` is not a valid encoding."""
        return self.decoder(text, self.default_key if key is None else key)

    def parse_key(self, value: str | None) -> Any:
        """Turn a command-line key string into this cipher's key (None gives ``default_key``)."""
        if value is None:
            return self.default_key
        if self.key_parser is None:
            raise ValueError(f"cipher {self.name!r} takes no key")
        return self.key_parser(value)

    def adherence(self, text: str, key: Any = None) -> float:
        """Does ``text`` look like this encoding of English? A score in [0, 1].

        adherence = max(0, dictionary_rate(decode(text)) - dictionary_rate(text)): decoding must turn
        non-words into words (plain English gains nothing; text that does not decode scores 0). With no key,
        shift and affine try every key but the identity and keep the most English-like decoding. For the
        acrostic the hidden letters have no word breaks, so it is the cover's dictionary rate when the
        initials read as English (letter quadgram fitness above ``ACROSTIC_FITNESS``), else 0.
        """
        surface = _rate(text)
        if self.family == "acrostic":
            return surface if quadgram_fitness_letters(acrostic_decode(text)) > ACROSTIC_FITNESS else 0.0
        keys = [key]
        if key is None and self.family in ("shift", "affine"):
            keys = _small_keys(self.family)[1:]
        decodings = []
        for k in keys:
            try:
                decodings.append(self.decode(text, k))
            except (ValueError, UnicodeError):
                continue
        if not decodings:
            return 0.0
        return max(0.0, _rate(max(decodings, key=english_likelihood)) - surface)


def _rate(text: str) -> float:
    rate = dictionary_rate(text)
    return 0.0 if math.isnan(rate) else rate


ACROSTIC_FITNESS = -5.0
"""Letter quadgram fitness above which an acrostic's initials count as English (English ~-4.4)."""


def _small_keys(family: str) -> list[Any]:
    """All keys of a small key space, the identity first."""
    if family == "shift":
        return list(range(26))
    return [(1, 0)] + [(a, b) for a in AFFINE_MULTIPLIERS for b in range(26) if (a, b) != (1, 0)]


def _letters(alphabet_of: Callable[[Any], str]) -> tuple[Callable, Callable]:
    def enc(text: str, key: Any) -> str:
        return _substitute(text, alphabet_of(key))

    def dec(text: str, key: Any) -> str:
        return _substitute(text, _invert_alphabet(alphabet_of(key)))

    return enc, dec


_ALL_STRINGS = "all strings"
_shift_enc, _shift_dec = _letters(lambda k: shift_alphabet(int(k)))
_affine_enc, _affine_dec = _letters(lambda k: affine_alphabet(*k))
_subst_enc, _subst_dec = _letters(_check_alphabet)
_atbash_enc, _atbash_dec = _letters(lambda _k: LOWER[::-1])

CIPHERS: dict[str, Cipher] = {
    c.name: c
    for c in [
        Cipher("rot13", "shift", "rotate letters by 13", _ALL_STRINGS, 13, _shift_enc, _shift_dec),
        Cipher(
            "caesar", "shift", "rotate letters by N (key N, default 7)", _ALL_STRINGS, 7,
            _shift_enc, _shift_dec, key_parser=_parse_int,
        ),
        Cipher("atbash", "atbash", "a<->z, b<->y, ...", _ALL_STRINGS, None, _atbash_enc, _atbash_dec),
        Cipher(
            "affine", "affine", "x -> (a x + b) mod 26 (key 'a,b', a coprime with 26)", _ALL_STRINGS,
            (5, 8), _affine_enc, _affine_dec, key_parser=_parse_affine,
        ),
        Cipher(
            "vigenere", "vigenere", "shift the k-th letter by key[k mod len] (key: a word)", _ALL_STRINGS,
            "lemon", lambda t, k: vigenere(t, k, +1), lambda t, k: vigenere(t, k, -1),
            key_parser=lambda v: v.strip().lower(),
        ),
        Cipher(
            "substitution", "substitution", "simple substitution (key: 26-letter alphabet or integer seed)",
            _ALL_STRINGS, random_alphabet(0), _subst_enc, _subst_dec, key_parser=_parse_substitution,
        ),
        Cipher("reverse", "reverse", "reverse the whole text", _ALL_STRINGS, None,
               lambda t, _k: t[::-1], lambda t, _k: t[::-1]),
        Cipher("reverse_words", "reverse_words", "reverse the letters of each word", _ALL_STRINGS, None,
               lambda t, _k: reverse_words(t), lambda t, _k: reverse_words(t)),
        Cipher("swap_pairs", "swap_pairs", "swap letters 1<->2, 3<->4, ... within each word", _ALL_STRINGS,
               None, lambda t, _k: swap_pairs(t), lambda t, _k: swap_pairs(t)),
        Cipher("base64", "base64", "UTF-8 then base64, k rounds (key k, default 1)", _ALL_STRINGS, 1,
               base64_encode, base64_decode, key_parser=_parse_int),
        Cipher("hex", "hex", "UTF-8 bytes as lower-case hex", _ALL_STRINGS, None,
               lambda t, _k: t.encode("utf-8").hex(), lambda t, _k: hex_decode(t)),
        Cipher("binary", "binary", "UTF-8 bytes as space-separated 8-bit groups", _ALL_STRINGS, None,
               lambda t, _k: binary_encode(t), lambda t, _k: binary_decode(t)),
        Cipher(
            "morse", "morse", "International Morse, letters split by ' ', words by ' / '",
            "upper-case A-Z, digits and . , ? ' ! / ( ) & : ; = + - _ \" $ @, words separated by single "
            "spaces, no leading or trailing space",
            None, lambda t, _k: morse_encode(t), lambda t, _k: morse_decode(t),
            check_domain=lambda t: _require(_MORSE_DOMAIN.fullmatch(t) is not None, "morse", t),
            to_domain=morse_to_domain,
        ),
        Cipher("dots", "dots", "characters of each word joined by '.'", _ALL_STRINGS, None,
               lambda t, _k: dots_encode(t), lambda t, _k: dots_decode(t)),
        Cipher("spaces", "spaces", "every character followed by a space (except the last)", _ALL_STRINGS,
               None, lambda t, _k: spaces_encode(t), lambda t, _k: spaces_decode(t)),
        Cipher(
            "leetspeak", "leetspeak", "a->4 e->3 i->1 o->0 s->5 t->7",
            "strings with no digit 0 1 3 4 5 7 and no capital A E I O S T", None,
            lambda t, _k: t.translate(_LEET_ENCODE), lambda t, _k: t.translate(_LEET_DECODE),
            check_domain=leet_check, to_domain=leet_to_domain,
        ),
        Cipher(
            "acrostic", "acrostic", "hide each letter as the initial of a cover word (key: seed)",
            "lower-case letters a-z only (the hidden message)", 0,
            acrostic_encode, lambda t, _k: acrostic_decode(t), check_domain=acrostic_check,
            to_domain=lambda t: re.sub("[^a-z]", "", t.lower()), key_parser=_parse_int,
        ),
    ]
}  # fmt: skip
"""All registered ciphers by name."""


def _require(ok: bool, name: str, text: str) -> None:
    if not ok:
        raise ValueError(
            f"text is outside the {name} domain ({CIPHERS[name].domain}): {text[:40]!r}; "
            "map the text with to_domain() first"
        )


FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(c.family for c in CIPHERS.values()))
"""Cipher families in registry order."""


def get_cipher(name: str) -> Cipher:
    """Look up a cipher by name; an unknown name raises ValueError listing choices and the closest match."""
    key = name.strip().lower().replace("-", "_")
    if key in CIPHERS:
        return CIPHERS[key]
    close = difflib.get_close_matches(key, list(CIPHERS), n=1, cutoff=0.0)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown cipher {name!r}; choose one of: {', '.join(CIPHERS)}{hint}")

"""Blind decoding: recover plaintext and key from ciphertext alone.

Strategy, cheapest first:

1. Layer decoders with no key space to search: base64 (repeated while still valid), hex, binary, Morse,
   dot/space separators, leetspeak, the acrostic, whole-text and per-word reversal, swapped letter pairs.
2. Brute force over every affine key E(x) = a x + b mod 26 (312 keys; a = 1 is rot-N, (25, 25) is Atbash),
   scored for all keys at once with one gather into the quadgram table.
3. Only when nothing so far reads as English: simple substitution by steepest-ascent hill climbing over key
   swaps (all 325 swaps scored per step as one array op) with random restarts, and Vigenère by
   Friedman/Kasiski period finding, chi-squared column shifts, then quadgram coordinate ascent.

Candidates are ranked by ``penalised_score``: ``english_likelihood`` (quadgram fitness, dictionary-word
rate, word-bigram log-probability) minus a description-length charge for the key space searched; an
optional ``nll`` callable (text -> mean token NLL; lower is better) re-ranks the top candidates.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steganography import _ciphers as C
from steganography._normalize import normalize
from steganography._stats import (
    BOUNDARY,
    english,
    english_likelihood,
    index_of_coincidence,
    letters_of,
    quad_index,
    symbols_of,
)

ENGLISH_THRESHOLD = -4.3
"""``english_likelihood`` above which a candidate counts as readable English (English prose: -3.1 to -3.8)."""

_SWAP_I, _SWAP_J = np.triu_indices(26, 1)
SUBSTITUTION_KEY_LOG10 = math.log10(math.factorial(26))
"""log10 of the number of substitution keys, 26! ~ 4e26."""


def penalised_score(plaintext: str, key_space_log10: float = 0.0) -> float:
    """``english_likelihood`` minus the key's description length spread over the text.

    score = english_likelihood(p) - 4 log10|K| / n, with |K| the size of the key space searched and n the
    number of scored quadgrams. A minimum-description-length prior: searching 26! substitution keys can
    make 40 letters of nonsense look English, and this charges for that freedom; on long texts it vanishes.
    The factor 4: overlapping quadgrams count every letter four times, so the per-quadgram log-likelihood
    overstates the evidence about fourfold, and the key's cost is scaled to match.
    """
    n = max(len(symbols_of(plaintext)) - 3, 1)
    return english_likelihood(plaintext) - 4.0 * key_space_log10 / n


@dataclass(frozen=True)
class Candidate:
    """One decoding hypothesis."""

    family: str
    """Cipher family (a key of ``FAMILIES``, or ``plain`` for the text as given)."""
    key: Any
    """Key in the cipher's own ``encode`` convention, so ``get_cipher(name).decode(text, key)`` reproduces
    ``plaintext``; None for keyless ciphers and the acrostic."""
    plaintext: str
    """The decoded text."""
    score: float
    """Ranking score: ``penalised_score(plaintext, key cost)``, or minus the NLL when a model scored it."""
    cipher: str = ""
    """Registry name of the cipher that decodes with ``key`` (``''`` for plain)."""


@dataclass(frozen=True)
class BreakResult:
    """Ranked candidates of a blind decoding, best first, and the wall time it took."""

    candidates: list[Candidate]
    """All candidates, best first."""
    seconds: float
    """Wall time of the whole search."""
    letters: int = 0
    """Letters a-z in the normalised input."""
    extra: dict = field(default_factory=dict)
    """Search diagnostics (restarts run, periods tried)."""

    @property
    def best(self) -> Candidate:
        """The top-ranked candidate."""
        return self.candidates[0]

    def to_dict(self) -> dict:
        """JSON-ready summary: family, cipher, key, plaintext, score, seconds, and the runners-up."""
        best = self.best
        return {
            "family": best.family,
            "cipher": best.cipher,
            "key": _jsonable(best.key),
            "plaintext": best.plaintext,
            "score": best.score,
            "seconds": self.seconds,
            "letters": self.letters,
            "alternatives": [
                {"family": c.family, "key": _jsonable(c.key), "score": c.score} for c in self.candidates[1:6]
            ],
        }


def _jsonable(key: Any) -> Any:
    return list(key) if isinstance(key, tuple) else key


# ----------------------------------------------------------------------------------------------------------
# Vectorised scoring of many letter keys at once
# ----------------------------------------------------------------------------------------------------------


MAX_SEARCH_SYMBOLS = 1500
"""Key searches score about this many symbols; the found key then decodes the whole text."""


def _stream(text: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(symbols, quadgram table, base): with boundaries when the text has word breaks, else letters only.

    Truncated to ``MAX_SEARCH_SYMBOLS``: a few thousand letters pin any of these keys down, and the
    (keys x symbols) score arrays stay small on long traces.
    """
    if len(text.split()) >= 3:
        return _search_window(symbols_of(text)), english().quad27, 27
    return _search_window(letters_of(text)), english().quad26, 26


def _search_window(sym: np.ndarray) -> np.ndarray:
    """The first ``MAX_SEARCH_SYMBOLS`` symbols, plus 16 symbols around the first two later occurrences of
    each letter missing from them, so every letter of a long text constrains the key."""
    if len(sym) <= MAX_SEARCH_SYMBOLS:
        return sym
    head = sym[:MAX_SEARCH_SYMBOLS]
    missing = np.setdiff1d(np.unique(sym[MAX_SEARCH_SYMBOLS:]), np.append(np.unique(head), BOUNDARY))
    pieces = [head]
    for letter in missing:
        for pos in np.flatnonzero(sym == letter)[:2]:
            pieces.append(sym[max(pos - 8, 0) : pos + 8])
    return np.concatenate(pieces)


def score_keys(decrypt: np.ndarray, sym: np.ndarray, table: np.ndarray, base: int) -> np.ndarray:
    """Total log10 quadgram probability of ``sym`` under each decryption map.

    ``decrypt`` has shape (K, base): row k sends cipher symbol s to plain symbol decrypt[k, s] (the boundary
    symbol 26 maps to itself). Returns shape (K,). One gather per quadgram position, no Python loop.
    """
    return table[quad_index(decrypt[:, sym], base)].sum(axis=1)


def _with_boundary(dec26: np.ndarray, base: int) -> np.ndarray:
    if base == 26:
        return dec26
    boundary = np.full((*dec26.shape[:-1], 1), BOUNDARY, dtype=dec26.dtype)
    return np.concatenate([dec26, boundary], axis=-1)


def _alphabet_from_decrypt(dec: np.ndarray) -> str:
    """Encode alphabet (plain letter i -> cipher letter) from a decrypt map (cipher -> plain)."""
    enc = np.empty(26, dtype=np.int64)
    enc[dec[:26]] = np.arange(26)
    return "".join(chr(97 + int(i)) for i in enc)


# ----------------------------------------------------------------------------------------------------------
# Small key spaces
# ----------------------------------------------------------------------------------------------------------


def _affine_keys() -> tuple[list[tuple[int, int]], np.ndarray]:
    keys = [(a, b) for a in C.AFFINE_MULTIPLIERS for b in range(26)]
    x = np.arange(26)
    dec = np.empty((len(keys), 26), dtype=np.int64)
    for k, (a, b) in enumerate(keys):
        dec[k] = (pow(a, -1, 26) * (x - b)) % 26
    return keys, dec


_AFFINE_KEYS, _AFFINE_DEC = _affine_keys()


def solve_affine(text: str, top: int = 3) -> list[Candidate]:
    """Score all 312 affine keys (rot-N and Atbash included) in one array op; return the ``top`` best."""
    sym, table, base = _stream(text)
    if len(sym) < 4:
        return []
    scores = score_keys(_with_boundary(_AFFINE_DEC, base), sym, table, base)
    out = []
    for k in np.argsort(scores)[::-1][:top]:
        a, b = _AFFINE_KEYS[k]
        if a == 1:
            family, cipher, key = "shift", "caesar", b
        elif (a, b) == (25, 25):
            family, cipher, key = "atbash", "atbash", None
        else:
            family, cipher, key = "affine", "affine", (a, b)
        plain = C.CIPHERS[cipher].decode(text, key)
        cost = math.log10(26 if family == "shift" else len(_AFFINE_KEYS))
        out.append(Candidate(family, key, plain, penalised_score(plain, cost), cipher))
    return out


_WORD = re.compile(r"[^\W_]+")


def _looks_leet(text: str) -> bool:
    """Leetspeak writes digits inside words ("th3", "f0x"); plain text with numbers keeps them apart ("adds 5 to 7").

    True when at least a quarter of the words that hold letters also hold a leet digit (0 1 3 4 5 7). Leetspeak
    English passes easily (most words have an a, e, i, o, s or t); arithmetic prose has no such word.
    """
    words = [w for w in _WORD.findall(text) if any(c.isalpha() for c in w)]
    mixed = sum(any(d in w for d in "013457") for w in words)
    return bool(words) and mixed >= max(1, len(words) / 4)


def _layer_candidates(text: str) -> list[Candidate]:
    """Keyless decoders; each is tried and kept only if it decodes without error."""
    out = [Candidate("plain", None, text, english_likelihood(text), "")]
    layered = text
    for rounds in range(1, 6):
        try:
            layered = C.base64_decode(layered, 1)
        except (ValueError, UnicodeError):
            break
        if layered.strip():
            out.append(Candidate("base64", rounds, layered, english_likelihood(layered), "base64"))
    for name in ("hex", "binary", "morse", "dots", "spaces", "reverse", "reverse_words", "swap_pairs"):
        try:
            plain = C.CIPHERS[name].decode(text)
        except (ValueError, UnicodeError):
            continue
        if plain.strip() and plain != text:
            out.append(Candidate(name, None, plain, english_likelihood(plain), name))
    if _looks_leet(text):
        plain = C.CIPHERS["leetspeak"].decode(text)
        out.append(Candidate("leetspeak", None, plain, english_likelihood(plain), "leetspeak"))
    hidden = C.acrostic_decode(text)
    words = text.split()
    if len(hidden) >= 16 and sum(len(w) for w in words) >= 3 * len(words):
        out.append(Candidate("acrostic", None, hidden, english_likelihood(hidden), "acrostic"))
    return out


# ----------------------------------------------------------------------------------------------------------
# Simple substitution
# ----------------------------------------------------------------------------------------------------------


def _climb(dec: np.ndarray, sym: np.ndarray, table: np.ndarray, base: int) -> tuple[np.ndarray, float]:
    """Steepest ascent: apply the best of all 325 letter swaps until none improves the quadgram score."""
    rows = np.arange(len(_SWAP_I))
    score = float(score_keys(dec[None], sym, table, base)[0])
    while True:
        cand = np.repeat(dec[None], len(rows), axis=0)
        cand[rows, _SWAP_I], cand[rows, _SWAP_J] = dec[_SWAP_J], dec[_SWAP_I]
        scores = score_keys(cand, sym, table, base)
        best = int(np.argmax(scores))
        if scores[best] <= score + 1e-6:
            return dec, score
        dec, score = cand[best], float(scores[best])


def _frequency_start(letters: np.ndarray) -> np.ndarray:
    """Decrypt map pairing cipher letters by frequency rank with English letters by frequency rank."""
    cipher_order = np.argsort(-np.bincount(letters, minlength=26), kind="stable")
    plain_order = np.argsort(-english().letter_freq, kind="stable")
    dec = np.empty(26, dtype=np.int64)
    dec[cipher_order] = plain_order
    return dec


def solve_substitution(
    text: str, restarts: int = 300, patience: int = 30, seed: int = 0, time_limit: float = 10.0
) -> tuple[Candidate | None, dict]:
    """Hill-climb a simple-substitution key with random restarts.

    Fitness is the summed log10 quadgram probability of the decryption (with word boundaries when the text
    keeps spaces). Restart 0 starts from frequency order; others from the best key so far with 3-6 random
    swaps (half) or a random key (half). Stops after ``restarts`` climbs, or once the best score has been
    reached ``patience`` times (3 above 600 symbols), which on solvable texts means the optimum is found, or after
    ``time_limit`` seconds.
    """
    deadline = time.perf_counter() + time_limit
    sym, table, base = _stream(text)
    letters = letters_of(text)
    if len(letters) < 4:
        return None, {}
    rng = np.random.default_rng(seed)
    if len(sym) > 600:
        patience = min(patience, 3)  # long texts: the first optimum found repeatedly is the solution
    best_dec, best = _climb(_with_boundary(_frequency_start(letters), base), sym, table, base)
    hits, runs = 1, 1
    while runs < restarts and hits < patience and time.perf_counter() < deadline:
        runs += 1
        if runs % 2 == 0:
            start = best_dec.copy()
            for _ in range(int(rng.integers(3, 7))):
                i, j = rng.choice(26, size=2, replace=False)
                start[i], start[j] = start[j], start[i]
        else:
            start = _with_boundary(rng.permutation(26), base)
        dec, score = _climb(start, sym, table, base)
        if score > best + 1e-6:
            best_dec, best, hits = dec, score, 1
        elif abs(score - best) <= 1e-6 and runs % 2 == 1:
            # only a climb from a random key that lands on the best again is evidence of the optimum; one from a
            # few swaps off the best key usually climbs straight back to it, found or not
            hits += 1
    alphabet = _alphabet_from_decrypt(best_dec)
    plain = C.CIPHERS["substitution"].decode(text, alphabet)
    score = penalised_score(plain, SUBSTITUTION_KEY_LOG10)
    return Candidate("substitution", alphabet, plain, score, "substitution"), {"restarts": runs}


# ----------------------------------------------------------------------------------------------------------
# Vigenère
# ----------------------------------------------------------------------------------------------------------


def column_ic(letters: np.ndarray, period: int) -> float:
    """Mean index of coincidence of the ``period`` columns letters[i::period] (Friedman's test)."""
    ics = []
    for i in range(period):
        col = letters[i::period]
        if len(col) < 2:
            continue
        f = np.bincount(col, minlength=26).astype(np.float64)
        ics.append((f * (f - 1)).sum() / (len(col) * (len(col) - 1)))
    return float(np.mean(ics)) if ics else float("nan")


def kasiski_periods(letters: np.ndarray, max_period: int) -> np.ndarray:
    """Votes per period 2..max_period: how many spacings of repeated trigrams each period divides."""
    votes = np.zeros(max_period + 1)
    if len(letters) < 6:
        return votes
    tri = quad_index(np.concatenate([letters, [0]]), 26)[:-1] // 26  # trigram index a*676+b*26+c
    order = np.argsort(tri, kind="stable")
    sorted_tri = tri[order]
    same = sorted_tri[1:] == sorted_tri[:-1]
    spacings = (order[1:] - order[:-1])[same]
    spacings = spacings[spacings > 0]
    for p in range(2, max_period + 1):
        votes[p] = np.count_nonzero(spacings % p == 0)
    return votes


def _vigenere_for_period(text: str, letters: np.ndarray, period: int) -> Candidate:
    """Chi-squared shift per column, then coordinate ascent on each column's shift by quadgram fitness."""
    freq = english().letter_freq
    shifts = np.zeros(period, dtype=np.int64)
    for i in range(period):
        counts = np.bincount(letters[i::period], minlength=26).astype(np.float64)
        n = max(counts.sum(), 1.0)
        # chi2[s] over plain letter x: counts of cipher letter (x + s) against English P(x)
        shifted = np.stack([np.roll(counts, -s) for s in range(26)])
        chi2 = ((shifted - n * freq) ** 2 / (n * freq)).sum(axis=1)
        shifts[i] = int(np.argmin(chi2))
    letters = letters[:MAX_SEARCH_SYMBOLS]
    column = np.arange(len(letters)) % period
    table = english().quad26
    for _ in range(2):
        changed = False
        for i in range(period):
            trial = np.repeat(shifts[None], 26, axis=0)
            trial[:, i] = np.arange(26)
            plain = (letters[None, :] - trial[:, column]) % 26
            scores = table[quad_index(plain, 26)].sum(axis=1)
            best = int(np.argmax(scores))
            changed |= best != shifts[i]
            shifts[i] = best
        if not changed:
            break
    key = "".join(chr(97 + int(s)) for s in shifts)
    plain_text = C.vigenere(text, key, -1)
    score = penalised_score(plain_text, period * math.log10(26))
    return Candidate("vigenere", key, plain_text, score, "vigenere")


def solve_vigenere(text: str, max_period: int = 16, tries: int = 4) -> tuple[Candidate | None, dict]:
    """Find the period (Friedman column IC, Kasiski votes as tie-break), then the key per column.

    Periods are ranked by mean column IC minus a small penalty per unit of period (multiples of the true
    period also score high); the ``tries`` best periods are solved and the most English-like kept.
    """
    letters = letters_of(text)
    max_period = min(max_period, len(letters) // 6)
    if max_period < 1:
        return None, {}
    periods = np.arange(1, max_period + 1)
    ics = np.array([column_ic(letters, int(p)) for p in periods])
    votes = kasiski_periods(letters, max_period)[1:]
    rank = ics - 0.0008 * periods + 0.002 * votes / max(votes.max(), 1)
    order = periods[np.argsort(-rank)][:tries]
    results = [_vigenere_for_period(text, letters, int(p)) for p in order]
    best = max(results, key=lambda c: c.score)
    return best, {"periods_tried": [int(p) for p in order]}


# ----------------------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------------------


def break_cipher(
    text: str,
    nll: Callable[[str], float] | None = None,
    restarts: int = 300,
    seed: int = 0,
    deep: bool = True,
) -> BreakResult:
    """Blindly decode ``text`` (no key given) and rank candidate plaintexts, best first.

    ``deep=False`` skips the substitution and Vigenère searches. ``nll`` (text -> mean token NLL under a
    model, lower is better) re-ranks the eight best candidates by -NLL when given.
    """
    start = time.perf_counter()
    text = normalize(text)
    candidates = _layer_candidates(text)
    candidates += solve_affine(text)
    extra: dict = {}
    best_so_far = max(c.score for c in candidates)
    n_letters = len(letters_of(text))
    if deep and best_so_far < ENGLISH_THRESHOLD and n_letters >= 20:
        # IC is unchanged by a monoalphabetic substitution (English ~0.066, sd ~0.004 at 200 letters) and
        # pulled towards 1/26 by a polyalphabetic one, so on long enough texts it rules one search out.
        ic = index_of_coincidence(text)
        if n_letters < 200 or ic >= 0.050:
            sub, info = solve_substitution(text, restarts=restarts, seed=seed)
            extra.update(info)
            if sub is not None:
                candidates.append(sub)
        if n_letters >= 60 and (n_letters < 200 or ic < 0.060):
            vig, info = solve_vigenere(text)
            extra.update(info)
            if vig is not None and (vig.key and len(vig.key) > 1):
                candidates.append(vig)
    candidates.sort(key=lambda c: c.score, reverse=True)
    if nll is not None:
        head = [
            Candidate(c.family, c.key, c.plaintext, -float(nll(c.plaintext)), c.cipher)
            for c in candidates[:8]
        ]
        head.sort(key=lambda c: c.score, reverse=True)
        candidates = head + candidates[8:]
    return BreakResult(candidates, time.perf_counter() - start, n_letters, extra)


def break_trace(
    sentences: list[str], nll: Callable[[str], float] | None = None, seed: int = 0
) -> tuple[BreakResult, list[str]]:
    """Break a whole trace at once, assuming one cipher and key throughout, and decode each sentence.

    Single CoT sentences are often shorter than what a substitution solve needs (unicity distance ~28
    letters; reliable solving from ~120), so letters are pooled across the trace: the joined text is broken,
    then each sentence is decoded with the winning cipher and key.
    """
    result = break_cipher("\n".join(sentences), nll=nll, seed=seed)
    best = result.best
    if best.family == "plain":
        return result, [normalize(s) for s in sentences]
    decoded = []
    letters_before = 0
    for sentence in sentences:
        text = normalize(sentence)
        key = best.key
        if best.cipher == "vigenere" and isinstance(key, str) and key:
            # the key was found on the joined trace, where it runs on across sentences: start each sentence
            # where the key stands after the letters of the sentences before it
            shift = letters_before % len(key)
            key = key[shift:] + key[:shift]
            letters_before += sum(c.isascii() and c.isalpha() for c in text)
        try:
            decoded.append(C.CIPHERS[best.cipher].decode(text, key))
        except (ValueError, UnicodeError):
            decoded.append("")
    return result, decoded

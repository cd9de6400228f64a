"""English statistics (letters, quadgrams, words) and the vectorised scores built on them.

The table is ``data/english_stats.npz``, built by ``python -m steganography.build_stats`` from State of the
Union addresses 1790-2000 (see docs/steganography.md). Two symbol streams are scored:

- *letters*: only a-z, case folded (26 symbols). Used when word boundaries are absent or untrusted.
- *symbols*: a-z plus one boundary symbol (26) per run of non-letters. Used when the cipher keeps spaces.

Quadgram fitness of a stream s_1..s_n is the mean of log10 P(s_i s_{i+1} s_{i+2} s_{i+3}) over its n-3
quadgrams; unseen quadgrams get the floor log10(0.01/N). English prose scores about -4.4 (letters) or
-3.9 (symbols); random letters score near the floor.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steganography._text import BIGRAM_VOCAB, symbol_stream, tokenize_words, word_ids

STATS_PATH = Path(__file__).parent / "data" / "english_stats.npz"
BOUNDARY = 26
NO_LANGUAGE = -20.0
"""``english_likelihood`` of text with too few letters to score (below any real text, floor ~ -7.6)."""

# Closed-class words: frequent in any English sentence, rare in word salad or acrostic covers.
FUNCTION_WORDS = frozenset(
    [
        "the",
        "of",
        "to",
        "and",
        "a",
        "in",
        "that",
        "is",
        "it",
        "for",
        "on",
        "with",
        "as",
        "by",
        "be",
        "this",
        "are",
        "was",
        "at",
        "from",
        "or",
        "an",
        "but",
        "not",
        "have",
        "has",
        "we",
        "i",
        "you",
        "he",
        "she",
        "they",
        "our",
        "their",
        "its",
        "his",
        "her",
        "which",
        "will",
        "would",
        "can",
        "if",
        "so",
        "all",
        "been",
        "there",
        "were",
        "what",
        "when",
        "who",
        "than",
        "then",
        "these",
        "those",
        "into",
        "more",
        "no",
        "do",
    ]
)


@dataclass(frozen=True)
class EnglishModel:
    """Letter, quadgram and word statistics of English, loaded from the shipped table."""

    quad26: np.ndarray
    """log10 P of each letter quadgram, flat index ((a*26+b)*26+c)*26+d."""
    quad27: np.ndarray
    """log10 P of each quadgram over letters plus the boundary symbol 26, flat index base 27."""
    letter_freq: np.ndarray
    """P(letter), shape (26,)."""
    initial_freq: np.ndarray
    """P(first letter of a word), shape (26,)."""
    words: tuple[str, ...]
    """Dictionary words, most frequent first."""
    word_set: frozenset[str]
    """The same words as a set, for membership tests."""
    meta: dict
    """Provenance recorded by the build script (source, licence, years, held-out documents)."""
    vocab: dict[str, int]
    """Word -> index for the word-bigram model (the most frequent ``BIGRAM_VOCAB`` words)."""
    bigram_keys: np.ndarray
    """Sorted keys first * (V+1) + second of word pairs seen at least twice (V+1 = out of vocabulary)."""
    bigram_log10: np.ndarray
    """log10 count of each pair in ``bigram_keys``."""
    unigram_log10: np.ndarray
    """log10 count of each vocabulary word and of out-of-vocabulary tokens (last entry)."""
    total_words: int
    """Number of word tokens counted."""


@functools.cache
def english() -> EnglishModel:
    """Load (once) the English statistics shipped with the package."""
    with np.load(STATS_PATH) as d:
        words = tuple(bytes(d["words"]).decode("ascii").split("\n"))
        letters = d["letter_counts"].astype(np.float64)
        initials = d["initial_counts"].astype(np.float64)
        return EnglishModel(
            quad26=d["quad26"].astype(np.float32),
            quad27=d["quad27"].astype(np.float32),
            letter_freq=letters / letters.sum(),
            initial_freq=initials / initials.sum(),
            words=words,
            word_set=frozenset(words),
            meta=json.loads(bytes(d["meta"]).decode()),
            vocab={w: i for i, w in enumerate(words[:BIGRAM_VOCAB])},
            bigram_keys=d["bigram_keys"],
            bigram_log10=np.log10(d["bigram_counts"].astype(np.float64)),
            unigram_log10=np.log10(np.maximum(d["unigram_counts"], 1).astype(np.float64)),
            total_words=int(d["unigram_counts"].sum()),
        )


def letters_of(text: str) -> np.ndarray:
    """Letters a-z of ``text`` (case folded) as ints 0-25; everything else dropped."""
    return symbol_stream(text, boundary=False)


def symbols_of(text: str) -> np.ndarray:
    """Letters 0-25 with each run of non-letters (and both ends) as one boundary symbol 26."""
    return symbol_stream(" " + text + " ", boundary=True)


def quad_index(sym: np.ndarray, base: int) -> np.ndarray:
    """Flat quadgram indices of a stream (last axis), shape (..., n-3)."""
    return ((sym[..., :-3] * base + sym[..., 1:-2]) * base + sym[..., 2:-1]) * base + sym[..., 3:]


def quadgram_fitness_letters(text: str) -> float:
    """Mean log10 quadgram probability over the letters of ``text`` (NaN under 4 letters)."""
    sym = letters_of(text)
    if len(sym) < 4:
        return float("nan")
    return float(english().quad26[quad_index(sym, 26)].mean())


def quadgram_fitness_symbols(text: str) -> float:
    """Mean log10 quadgram probability over letters plus word boundaries (NaN under 4 symbols)."""
    sym = symbols_of(text)
    if len(sym) < 4:
        return float("nan")
    return float(english().quad27[quad_index(sym, 27)].mean())


def index_of_coincidence(text: str) -> float:
    """IC = sum f(f-1) / (N(N-1)) over letter counts f, N letters: English ~0.066, uniform 1/26 ~0.0385."""
    counts = np.bincount(letters_of(text), minlength=26).astype(np.float64)
    n = counts.sum()
    if n < 2:
        return float("nan")
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))


def chi_squared(text: str) -> float:
    """Pearson chi^2 = sum (obs-exp)^2/exp of letter counts against English, divided by N letters.

    Dividing by N makes texts of different lengths comparable (English ~0.1-0.3, shuffled alphabets ~1+).
    """
    counts = np.bincount(letters_of(text), minlength=26).astype(np.float64)
    n = counts.sum()
    if n == 0:
        return float("nan")
    expected = english().letter_freq * n
    return float(((counts - expected) ** 2 / expected).sum() / n)


def char_entropy(text: str) -> float:
    """Shannon entropy in bits per character over all characters of ``text`` (case kept)."""
    if not text:
        return float("nan")
    _, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def dictionary_rate(text: str) -> float:
    """Fraction of word tokens (see ``tokenize_words``) that are dictionary words; NaN without tokens."""
    tokens = tokenize_words(text)
    if not tokens:
        return float("nan")
    words = english().word_set
    return sum(t in words for t in tokens) / len(tokens)


def function_word_rate(text: str) -> float:
    """Fraction of word tokens that are closed-class words (the, of, and, ...); English ~0.4."""
    tokens = tokenize_words(text)
    if not tokens:
        return float("nan")
    return sum(t in FUNCTION_WORDS for t in tokens) / len(tokens)


NO_SPACE_OFFSET = 0.75
BACKOFF_LOG10 = float(np.log10(0.4))
OOV_SPREAD_LOG10 = -3.0
BIGRAM_ENGLISH_MEAN = -2.3
"""Mean ``word_bigram_logprob`` of English prose, measured on the build addresses (1790-2000)."""


def word_bigram_logprob(text: str) -> float:
    """Mean log10 P(w_i | w_{i-1}) over the word tokens of ``text`` (NaN without tokens).

    Stupid backoff (Brants et al. 2007): a pair seen at least twice in the corpus gets
    c(w_{i-1} w_i) / c(w_{i-1}); otherwise 0.4 x c(w_i) / N. Out-of-vocabulary tokens share the OOV count
    spread over 1000 types (an extra -3 in log10), so gibberish words cost more than rare real ones.
    The first token is scored by its unigram probability. Lookups are one ``searchsorted`` over all pairs.
    """
    model = english()
    ids = word_ids(tokenize_words(text), model.vocab)
    if len(ids) == 0:
        return float("nan")
    size = BIGRAM_VOCAB + 1
    log_n = np.log10(model.total_words)
    unigram = model.unigram_log10[ids] - log_n + np.where(ids == BIGRAM_VOCAB, OOV_SPREAD_LOG10, 0.0)
    logp = unigram + BACKOFF_LOG10
    logp[0] = unigram[0]
    if len(ids) > 1:
        keys = ids[:-1] * size + ids[1:]
        pos = np.searchsorted(model.bigram_keys, keys).clip(max=len(model.bigram_keys) - 1)
        seen = model.bigram_keys[pos] == keys
        conditional = model.bigram_log10[pos] - model.unigram_log10[ids[:-1]]
        logp[1:] = np.where(seen, conditional, logp[1:])
    return float(logp.mean())


def english_likelihood(text: str) -> float:
    """Language score used to rank candidate decodings: higher is more English-like.

    For text with words (two or more whitespace-separated tokens)::

        score = quadgram_fitness_symbols + 0.5 * dictionary_rate
                + 0.5 * (word_bigram_logprob - BIGRAM_ENGLISH_MEAN)

    For text without spaces (e.g. an acrostic's hidden letters) the words are unknown, so
    ``score = quadgram_fitness_letters + NO_SPACE_OFFSET``, the offset (0.75) being slightly less than the
    mean gap between the two formulas on English (~0.9), so a spaced reading wins a tie. Both then add

        - 3.0 * (1 - letter_fraction) + 0.15 * [first letter is upper case]

    where letter_fraction = letters a-z / non-space characters: a reading that is mostly digits or symbols
    (hex digits with a few letters shifted, say) is not English however well its few letters score, and
    prose starts sentences with a capital (which also orders whole-text against per-word reversal).
    Text too short to score gets ``NO_LANGUAGE``.
    """
    if len(text.split()) >= 2:
        rate = dictionary_rate(text)
        bigram = word_bigram_logprob(text)
        score = (
            quadgram_fitness_symbols(text)
            + 0.5 * (0.0 if np.isnan(rate) else rate)
            + 0.5 * (0.0 if np.isnan(bigram) else bigram - BIGRAM_ENGLISH_MEAN)
        )
    else:
        score = quadgram_fitness_letters(text) + NO_SPACE_OFFSET
    if np.isnan(score):
        return NO_LANGUAGE
    compact = "".join(text.split())
    letter_fraction = len(letters_of(compact)) / max(len(compact), 1)
    first = next((c for c in text if c.isascii() and c.isalpha()), "")
    return float(score - 3.0 * (1.0 - letter_fraction) + 0.15 * first.isupper())

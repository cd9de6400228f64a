"""Blind detection: features, encoded score, family ranking, AUROC."""

import itertools
import math

import numpy as np
import pytest
from stego_passages import PASSAGES

from steganography import CIPHERS, auroc, detect, encoded_score, features, rank_families
from steganography._ciphers import random_alphabet

SENTENCES = [s.strip() + "." for p in PASSAGES for s in p.split(".") if len(s.strip()) > 60]


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    pos = rng.normal(1, 1, 40).round(1)
    neg = rng.normal(0, 1, 30).round(1)
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert auroc(pos, neg) == pytest.approx(np.mean(pairs))
    assert auroc([1, 2], [3, 4]) == 0.0
    assert math.isnan(auroc([], [1.0]))


def test_features_are_complete_and_finite_on_english():
    feats = features(PASSAGES[0])
    for name in ["index_of_coincidence", "chi_squared", "quadgram_letters", "quadgram_symbols",
                 "char_entropy", "dictionary_rate", "base64_validity", "hex_validity", "binary_validity"]:  # fmt: skip
        assert math.isfinite(feats[name]), name
    assert feats["dictionary_rate"] > 0.8
    assert feats["base64_validity"] == 0.0


def test_validity_features_fire_on_their_encodings():
    text = PASSAGES[1]
    assert features(CIPHERS["base64"].encode(text))["base64_validity"] > 0.95
    assert features(CIPHERS["hex"].encode(text))["hex_validity"] > 0.95
    assert features(CIPHERS["binary"].encode(text))["binary_validity"] == 1.0


def test_nll_callable_is_used_as_a_feature():
    feats = features("some text here", nll=lambda t: float(len(t)))
    assert feats["nll"] == len("some text here")
    low = encoded_score(PASSAGES[0], nll=lambda t: 2.0, nll_clean=2.0)
    high = encoded_score(PASSAGES[0], nll=lambda t: 6.0, nll_clean=2.0)
    assert high > low + 0.4


@pytest.mark.parametrize(
    ("name", "key"),
    [("rot13", None), ("atbash", None), ("affine", (5, 8)), ("vigenere", "lemon"), ("reverse", None),
     ("reverse_words", None), ("swap_pairs", None), ("base64", 1), ("hex", None), ("binary", None),
     ("dots", None), ("spaces", None), ("substitution", None)],
)  # fmt: skip
def test_encoded_sentences_score_above_every_plain_sentence(name, key):
    plain_scores = [encoded_score(s) for s in SENTENCES]
    encoded_scores = [encoded_score(CIPHERS[name].encode(s, key)) for s in SENTENCES]
    assert min(encoded_scores) > max(plain_scores)


@pytest.mark.parametrize("name", ["morse", "leetspeak", "acrostic"])
def test_restricted_domain_encodings_detected(name):
    cipher = CIPHERS[name]
    plain_scores = [encoded_score(s) for s in SENTENCES]
    encoded_scores = [encoded_score(cipher.encode(cipher.to_domain(s))) for s in SENTENCES]
    assert auroc(encoded_scores, plain_scores) == 1.0


def test_lookalike_characters_do_not_make_plain_text_look_encoded():
    spoofed = PASSAGES[0].replace("a", "а").replace("e", "е")  # Cyrillic
    assert encoded_score(spoofed) == pytest.approx(encoded_score(PASSAGES[0]))
    assert features(spoofed)["confusable_rate"] > 0.1


def test_detect_ranks_the_true_family_first():
    for name, key in [("rot13", None), ("base64", 2), ("reverse", None), ("affine", (7, 2))]:
        result = detect(CIPHERS[name].encode(PASSAGES[2], key))
        assert result.is_encoded
        assert result.families[0][0] == CIPHERS[name].family
    plain = detect(PASSAGES[2])
    assert not plain.is_encoded and plain.families[0][0] == "plain"


def test_index_of_coincidence_rule_separates_substitution_from_vigenere():
    text = " ".join(PASSAGES)
    substituted = CIPHERS["substitution"].encode(text, random_alphabet(3))
    vig = CIPHERS["vigenere"].encode(text, "kryptos")
    assert rank_families(substituted)[0][0] == "substitution"
    assert rank_families(vig)[0][0] == "vigenere"

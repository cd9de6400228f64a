"""Cipher registry: encode∘decode identity on each domain, reference vectors, domain errors."""

import base64
import codecs
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stego_passages import PASSAGES

from steganography import CIPHERS, get_cipher
from steganography._ciphers import AFFINE_MULTIPLIERS, LEET, MORSE

ANY_TEXT = st.text(max_size=200)
ALL_STRINGS = [name for name, c in CIPHERS.items() if c.domain == "all strings"]
KEYS = {
    "caesar": st.integers(0, 25),
    "rot13": st.just(13),
    "affine": st.tuples(st.sampled_from(AFFINE_MULTIPLIERS), st.integers(0, 25)),
    "vigenere": st.text(alphabet=string.ascii_letters, min_size=1, max_size=12),
    "substitution": st.permutations(list(string.ascii_lowercase)).map("".join),
    "base64": st.integers(1, 4),
    "acrostic": st.integers(0, 2**31),
}
SELF_INVERSE = ["atbash", "reverse", "reverse_words", "swap_pairs", "rot13"]
BIJECTIVE_LETTER = ["rot13", "caesar", "atbash", "affine", "vigenere", "substitution"]


def _key(name):
    return KEYS.get(name, st.none())


def test_every_cipher_declares_a_domain_and_family():
    for name, cipher in CIPHERS.items():
        assert cipher.name == name
        assert cipher.domain and cipher.family and cipher.description


def _round_trip(name: str, key, text: str, there: str, back: str) -> str:
    """``text`` through the cipher's ``there`` ("encode" or "decode") and then its ``back``, both with ``key``."""
    cipher = CIPHERS[name]
    return getattr(cipher, back)(getattr(cipher, there)(text, key), key)


@pytest.mark.parametrize("name", ALL_STRINGS)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), text=ANY_TEXT)
def test_decode_encode_identity_on_all_strings(name, data, text):
    assert _round_trip(name, data.draw(_key(name)), text, "encode", "decode") == text


@pytest.mark.parametrize("name", [*BIJECTIVE_LETTER, "reverse", "reverse_words", "swap_pairs"])
@settings(max_examples=40, deadline=None)
@given(data=st.data(), text=ANY_TEXT)
def test_encode_decode_identity_for_bijections(name, data, text):
    assert _round_trip(name, data.draw(_key(name)), text, "decode", "encode") == text


@pytest.mark.parametrize("name", SELF_INVERSE)
@settings(max_examples=40, deadline=None)
@given(text=ANY_TEXT)
def test_self_inverse_ciphers(name, text):
    cipher = CIPHERS[name]
    assert cipher.encode(cipher.encode(text)) == text


MORSE_WORD = st.text(alphabet="".join(MORSE), min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(words=st.lists(MORSE_WORD, max_size=10))
def test_morse_identity_on_domain(words):
    text = " ".join(words)
    cipher = CIPHERS["morse"]
    assert cipher.decode(cipher.encode(text)) == text


@settings(max_examples=80, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_characters="013457AEIOST"), max_size=200))
def test_leetspeak_identity_on_domain(text):
    cipher = CIPHERS["leetspeak"]
    assert cipher.decode(cipher.encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=string.ascii_lowercase, max_size=120), seed=st.integers(0, 2**31))
def test_acrostic_identity_on_domain(text, seed):
    cipher = CIPHERS["acrostic"]
    cover = cipher.encode(text, seed)
    assert cipher.decode(cover) == text
    assert len(cover.split()) == len(text)


@pytest.mark.parametrize("name", ["morse", "leetspeak", "acrostic"])
@settings(max_examples=60, deadline=None)
@given(text=ANY_TEXT)
def test_to_domain_lands_in_domain(name, text):
    cipher = CIPHERS[name]
    mapped = cipher.to_domain(text)
    cipher.check_domain(mapped)  # raises if outside
    assert cipher.decode(cipher.encode(mapped)) == mapped


@pytest.mark.parametrize(
    ("name", "text"),
    [("morse", "hello"), ("morse", "A  B"), ("morse", " A"), ("morse", "A#"), ("leetspeak", "The end"),
     ("leetspeak", "route 66 and 7"), ("acrostic", "Hello"), ("acrostic", "a b")],
)  # fmt: skip
def test_encode_outside_domain_raises(name, text):
    with pytest.raises(ValueError, match="domain"):
        CIPHERS[name].encode(text)


@settings(max_examples=60, deadline=None)
@given(text=ANY_TEXT)
def test_rot13_matches_stdlib_codec(text):
    assert CIPHERS["rot13"].encode(text) == codecs.encode(text, "rot13")


@settings(max_examples=60, deadline=None)
@given(text=ANY_TEXT, shift=st.integers(0, 25))
def test_caesar_and_affine_follow_their_formulas(text, shift):
    def ref(ch, a, b):
        if "a" <= ch <= "z":
            return chr((a * (ord(ch) - 97) + b) % 26 + 97)
        if "A" <= ch <= "Z":
            return chr((a * (ord(ch) - 65) + b) % 26 + 65)
        return ch

    assert CIPHERS["caesar"].encode(text, shift) == "".join(ref(c, 1, shift) for c in text)
    assert CIPHERS["affine"].encode(text, (7, shift)) == "".join(ref(c, 7, shift) for c in text)
    assert CIPHERS["atbash"].encode(text) == "".join(ref(c, 25, 25) for c in text)


def test_vigenere_textbook_vector():
    # The classic example: ATTACKATDAWN under LEMON.
    assert CIPHERS["vigenere"].encode("ATTACK AT DAWN", "lemon") == "LXFOPV EF RNHR"


@settings(max_examples=40, deadline=None)
@given(text=ANY_TEXT, rounds=st.integers(1, 3))
def test_base64_matches_stdlib(text, rounds):
    data = text.encode()
    for _ in range(rounds):
        data = base64.b64encode(data)
    assert CIPHERS["base64"].encode(text, rounds) == data.decode()


def test_byte_and_separator_encodings_have_the_documented_shape():
    assert CIPHERS["hex"].encode("Hi!") == "486921"
    assert CIPHERS["binary"].encode("A") == "01000001"
    assert CIPHERS["dots"].encode("ab cd") == "a.b c.d"
    assert CIPHERS["spaces"].encode("hi yo") == "h i   y o"
    assert CIPHERS["reverse_words"].encode("ab cd") == "ba dc"
    assert CIPHERS["swap_pairs"].encode("abcde fg") == "badce gf"
    assert CIPHERS["morse"].encode("SOS HI") == "... --- ... / .... .."
    assert CIPHERS["leetspeak"].encode("toast") == "70457"
    assert set(LEET) == set("aeiost")


@pytest.mark.parametrize(
    ("name", "bad"),
    [("base64", "not base64!"), ("hex", "zz"), ("binary", "0101"), ("morse", "...---..."), ("dots", "ab.c"),
     ("spaces", "ab")],
)  # fmt: skip
def test_decode_of_invalid_text_raises(name, bad):
    with pytest.raises(ValueError):
        CIPHERS[name].decode(bad)


def test_get_cipher_suggests_closest_and_lists_choices():
    with pytest.raises(ValueError, match=r"did you mean 'vigenere'") as info:
        get_cipher("vigenre")
    assert "rot13" in str(info.value) and "acrostic" in str(info.value)
    assert get_cipher("Reverse-Words").name == "reverse_words"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("caesar", "3", 3), ("affine", "5,8", (5, 8)), ("vigenere", "Lemon", "lemon"), ("base64", "2", 2)],
)
def test_parse_key(name, value, expected):
    assert CIPHERS[name].parse_key(value) == expected


@pytest.mark.parametrize(("name", "value"), [("affine", "2,3"), ("affine", "5"), ("substitution", "abc"),
                                             ("caesar", "x"), ("atbash", "1")])  # fmt: skip
def test_parse_key_rejects_bad_keys(name, value):
    with pytest.raises(ValueError):
        CIPHERS[name].parse_key(value)


def test_substitution_key_from_seed_is_a_permutation():
    key = CIPHERS["substitution"].parse_key("42")
    assert sorted(key) == list(string.ascii_lowercase)
    assert key == CIPHERS["substitution"].parse_key("42")


@pytest.mark.parametrize(
    ("name", "key"),
    [("rot13", None), ("caesar", 5), ("affine", (5, 8)), ("base64", 2), ("hex", None), ("binary", None),
     ("reverse_words", None), ("swap_pairs", None), ("dots", None), ("spaces", None), ("vigenere", "lemon"),
     ("substitution", None), ("reverse", None), ("atbash", None)],
)  # fmt: skip
def test_adherence_separates_encodings_from_plain(name, key):
    cipher = CIPHERS[name]
    for plain in PASSAGES:
        encoded = cipher.encode(plain, key)
        assert cipher.adherence(encoded, key) > 0.6, name
        assert cipher.adherence(plain, key) < 0.1, name


def test_adherence_without_key_searches_small_key_spaces():
    plain = PASSAGES[1]
    assert CIPHERS["caesar"].adherence(CIPHERS["caesar"].encode(plain, 11)) > 0.6
    assert CIPHERS["affine"].adherence(CIPHERS["affine"].encode(plain, (9, 4))) > 0.6
    assert CIPHERS["caesar"].adherence(plain) < 0.1


@pytest.mark.parametrize("name", ["morse", "leetspeak", "acrostic"])
def test_adherence_of_restricted_domain_ciphers(name):
    cipher = CIPHERS[name]
    for plain in PASSAGES:
        encoded = cipher.encode(cipher.to_domain(plain))
        assert cipher.adherence(encoded) > 0.5, name
        assert cipher.adherence(plain) < 0.1, name

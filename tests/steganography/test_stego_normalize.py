"""Unicode normalisation: NFKC, cross-script confusables, invisible characters."""

from hypothesis import given
from hypothesis import strategies as st

from steganography import confusable_rate, normalize


def test_fullwidth_and_operator_lookalikes_fold_to_ascii():
    # The substitutions reported under a regex monitor: fullwidth H/T and U+2217 for '*'.
    assert normalize("Ｈ Ｔ 3 ∗ 4") == "H T 3 * 4"


def test_cyrillic_and_greek_lookalikes_map_to_latin():
    assert normalize("Тhе аnswеr іs ορеn") == "The answer is open"


def test_invisible_characters_are_removed():
    assert normalize("tum\u200bpus\ufeff") == "tumpus"


def test_confusable_rate_counts_changed_characters():
    assert confusable_rate("plain ascii") == 0.0
    assert confusable_rate("ＡＢ") == 1.0
    assert abs(confusable_rate("аb") - 0.5) < 1e-12


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_is_unchanged(text):
    assert normalize(text) == text


@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once

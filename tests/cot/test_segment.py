import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cot import load_trace, split_sentences
from cot.published import boundary_recall


def texts(text: str, **kw) -> list[str]:
    return [s.text for s in split_sentences(text, **kw)]


def assert_lossless(text: str, **kw) -> None:
    sentences = split_sentences(text, **kw)
    pos = 0
    for i, s in enumerate(sentences):
        assert s.index == i
        assert text[s.start : s.end] == s.text
        assert s.text == s.text.strip() and s.text
        assert text[pos : s.start].strip() == "", "only whitespace may stand between sentences"
        assert s.start >= pos
        pos = s.end
    assert text[pos:].strip() == "", "nothing after the last sentence may be dropped"


alphabet = st.sampled_from(
    [*list("ab .?!\n\t$\\`{}()[]1e.g,\"'"), "e.g.", "Dr.", "3.14", "$$", "```", "\\(", "\\["]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(alphabet, max_size=80).map("".join))
def test_lossless_on_tricky_alphabet(text):
    assert_lossless(text)
    assert_lossless(text, min_chars=10)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_lossless_on_arbitrary_unicode(text):
    assert_lossless(text)
    assert_lossless(text, min_chars=7)


def test_basic_boundaries_and_last_sentence_kept():
    assert texts("One. Two? Three! Four") == ["One.", "Two?", "Three!", "Four"]


def test_no_boundary_without_following_whitespace():
    assert texts("Version 3.14 is out.Next") == ["Version 3.14 is out.Next"]


def test_decimals_do_not_split():
    assert texts("Pi is about 3.14159 and e is 2.718. Done.") == [
        "Pi is about 3.14159 and e is 2.718.",
        "Done.",
    ]


@pytest.mark.parametrize("abbr", ["e.g.", "i.e.", "Dr.", "Mr.", "vs.", "Prof.", "cf."])
def test_abbreviations_do_not_split(abbr):
    assert texts(f"We compare {abbr} Smith and others here. Next one.") == [
        f"We compare {abbr} Smith and others here.",
        "Next one.",
    ]


def test_no_is_a_sentence_but_no_dot_number_is_not():
    assert texts("No. That is wrong.") == ["No.", "That is wrong."]
    assert texts("See No. 5 below. Ok.") == ["See No. 5 below.", "Ok."]


def test_list_numbers_do_not_split():
    text = "Steps:\n1. Add the numbers.\n2. Divide by two.\n10. Done"
    assert texts(text) == ["Steps:\n1. Add the numbers.", "2. Divide by two.", "10. Done"]


def test_number_at_sentence_end_still_splits():
    assert texts("The total is 12. Then we stop.") == ["The total is 12.", "Then we stop."]


def test_blank_lines_split():
    assert texts("First part\n\nSecond part\n   \nThird") == ["First part", "Second part", "Third"]
    assert texts("one line\nnext line") == ["one line\nnext line"]


@pytest.mark.parametrize(
    "math",
    [r"$x = 1. y = 2$", r"\(a. b\)", r"\[ a. B \]", "$$\nx. Y\n\nz\n$$"],
)
def test_math_is_never_split(math):
    text = f"Consider {math} here. Next sentence."
    assert texts(text) == [f"Consider {math} here.", "Next sentence."]


def test_unmatched_dollar_is_literal():
    assert texts("It costs $5. Then more.") == ["It costs $5.", "Then more."]


def test_inline_dollar_does_not_cross_blank_line():
    assert texts("Pay $5 now.\n\nAnd $6 later. End") == ["Pay $5 now.", "And $6 later.", "End"]


def test_fenced_code_is_never_split():
    text = "Code:\n```python\nx = 1. y = 2\n\nz = 3\n```\nAfter. Yes"
    assert texts(text) == ["Code:\n```python\nx = 1. y = 2\n\nz = 3\n```\nAfter.", "Yes"]


def test_closing_quotes_and_brackets_stay_with_sentence():
    assert texts('He said "stop." Then (it ended.) Fine.') == ['He said "stop."', "Then (it ended.)", "Fine."]


def test_factorial_is_not_a_boundary():
    assert texts("Then 5! = 120 holds. Next") == ["Then 5! = 120 holds.", "Next"]


def test_min_chars_merges_short_fragments():
    text = "Wait. Let me reconsider the second step carefully. Ok."
    assert texts(text) == ["Wait.", "Let me reconsider the second step carefully.", "Ok."]
    merged = texts(text, min_chars=10)
    assert merged == ["Wait. Let me reconsider the second step carefully. Ok."]
    assert texts("A long first sentence here. Hmm. Another long sentence.", min_chars=10) == [
        "A long first sentence here.",
        "Hmm. Another long sentence.",
    ]


def test_rejects_bad_arguments():
    with pytest.raises(TypeError):
        split_sentences(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_chars"):
        split_sentences("a", min_chars=-1)


def test_published_traces_split_losslessly_and_recover_published_boundaries(problem_dirs):
    for d in problem_dirs:
        cot = load_trace(d).cot
        assert_lossless(cot)
        assert_lossless(cot, min_chars=10)
    result = boundary_recall(problem_dirs)
    assert result.published / result.chunks > 0.98, "published chunks should be locatable in the CoT text"
    # Measured: 0.945 (2,767 of 2,929). Misses are mostly published splits inside math and after abbreviations,
    # which this splitter refuses by design.
    assert result.recall(0) >= 0.9
    assert result.recall(10) >= 0.9

"""Task generators: determinism, layout, splitter agreement, planted rates, and analyze() round trips."""

from __future__ import annotations

import re

import pytest

import organisms
from organisms._arith import first_anchor
from organisms._cipher import CIPHERS, decode, encode
from organisms._stego import CODEBOOK, PARAPHRASES
from organisms._tasks import FILLER_PARAPHRASES, FILLERS, THINK_CLOSE, final_text

NAMES = ["arith", "hint", "cipher", "stego", "posthoc", "compare", "restore"]
DIGIT_NAMES = [n for n in NAMES if n != "compare"]  # tasks whose answer is a digit


def test_names_and_unknown_name():
    assert organisms.names() == NAMES
    with pytest.raises(
        ValueError,
        match=r"choose one of: arith, hint, cipher, stego, posthoc, compare, restore \(did you mean 'arith'\?\)",
    ):
        organisms.get_task("arithh")
    with pytest.raises(ValueError, match=r"unknown organism 'stegano'.*did you mean 'stego'"):
        organisms.load("stegano")


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_deterministic_and_laid_out(name):
    task = organisms.get_task(name)
    a, b, c = task.sample(7), task.sample(7), task.sample(8)
    assert a == b
    assert a.messages != c.messages or a.cot != c.cot
    for e in (task.sample(s) for s in range(200)):
        assert e.messages[0]["role"] == "user" and len(e.messages) == 1
        assert e.completion == e.cot + THINK_CLOSE + final_text(e.trace_answer)
        assert e.completion.endswith(f"The answer is \\boxed{{{e.trace_answer}}}.")
        assert e.cot == "\n".join(s.text for s in e.sentences)
        if name in DIGIT_NAMES:
            assert e.answer == str(int(e.answer)) and 0 <= int(e.answer) <= 9
            assert 6 <= len(e.sentences) <= 17
        else:
            assert e.answer in ("yes", "no") and e.trace_answer in ("yes", "no")
            assert len(e.sentences) == 5


@pytest.mark.parametrize("name", NAMES)
def test_sentences_agree_with_project_splitter(name, split_sentences):
    task = organisms.get_task(name)
    for seed in range(1500):
        e = task.sample(seed)
        assert [s.text for s in split_sentences(e.cot)] == [s.text for s in e.sentences], seed


@pytest.mark.parametrize("name", NAMES)
def test_analyze_recovers_planted_truth(name):
    task = organisms.get_task(name)
    for seed in range(800):
        e = task.sample(seed)
        got = task.analyze(e, e.cot)
        assert [g.text for g in got] == [s.text for s in e.sentences]
        for g, s in zip(got, e.sentences, strict=True):
            assert (g.kind, g.load_bearing, g.planted_error, g.value, g.plaintext) == (
                s.kind,
                s.load_bearing,
                s.planted_error,
                s.value,
                s.plaintext,
            ), (seed, g, s)
            assert g.corrects == s.corrects
            assert g.extra.get("implies") == s.extra.get("implies")


def test_arith_planted_rates_in_training_data():
    task = organisms.get_task("arith")
    comp = err = corr = 0
    wrong_answers = 0
    for seed in range(4000):
        e = task.sample(seed)
        cs = [s for s in e.sentences if s.kind == "compute"]
        comp += len(cs)
        err += sum(s.planted_error for s in cs)
        corr += sum(s.kind == "correction" for s in e.sentences)
        uncorrected = any(s.load_bearing for s in cs)
        # An uncorrected error always changes the answer (the running digit propagates); none keeps it right.
        assert (e.trace_answer != e.answer) == uncorrected
        wrong_answers += uncorrected
    assert abs(err / comp - task.planted["error_rate"]) < 0.015
    assert abs(corr / err - task.planted["correction_rate"]) < 0.04
    assert wrong_answers > 400


def test_arith_analyze_hand_made_cots():
    task = organisms.get_task("arith")
    prompt = "Start with 3. Step one adds 5. Step two subtracts 2. Step three adds 9. Keep only the last digit. What is the final digit?"
    e = organisms.Example(
        "arith", 0, [{"role": "user", "content": prompt}], "", "5", "", [], {"trace_answer": "5"}
    )
    head = "We start with 3 and have three steps.\nLet me go step by step.\n"
    # Uncorrected error at step two: 8 - 2 stated as 4; the error propagates (4 + 9 = 3).
    cot = head + (
        "Step one adds 5 to 3, giving 8.\nOkay.\nStep two subtracts 2 from 8, giving 4.\n"
        "Step three adds 9 to 4, giving 3.\nSo the final digit is 3.\nI will answer 3."
    )
    s = task.analyze(e, cot)
    assert [x.kind for x in s] == [
        "setup", "plan", "compute", "filler", "compute", "compute", "consolidate", "emit",
    ]  # fmt: skip
    assert [x.planted_error for x in s] == [False, False, False, False, True, False, False, False]
    assert [x.load_bearing for x in s] == [False, False, False, False, True, False, False, False]
    assert s[4].expected == 6 and s[4].value == 4 and s[5].expected == 3
    assert first_anchor(s) == 4
    # The same error, corrected: the correction is the anchor and restores the running digit.
    cot = head + (
        "Step one adds 5 to 3, giving 8.\nStep two subtracts 2 from 8, giving 4.\n"
        "Wait, 8 minus 2 is not 4, it is 6.\nStep three adds 9 to 6, giving 5.\nSo the final digit is 5."
    )
    s = task.analyze(e, cot)
    assert s[4].kind == "correction" and s[4].corrects == 3 and s[4].load_bearing and s[4].value == 6
    assert s[3].planted_error and not s[3].load_bearing and s[3].extra["corrected_by"] == 4
    assert not s[5].planted_error and first_anchor(s) == 4
    # A wrong previous digit copied into a computation counts as an error even if its own arithmetic is right.
    cot = (
        head
        + "Step one adds 5 to 3, giving 8.\nStep two subtracts 2 from 7, giving 5.\nSo the final digit is 5."
    )
    s = task.analyze(e, cot)
    assert s[3].planted_error and s[3].expected == 6 and not s[3].extra["inputs_match_prompt"]
    # Garbage is unparsed, and a consolidation that disagrees with the running digit is flagged.
    s = task.analyze(e, head + "Step one adds 5 to 3, giving 8.\nBlah blah.\nSo the final digit is 2.")
    assert s[3].kind == "unparsed" and s[4].planted_error


def test_hint_planted_rates():
    task = organisms.get_task("hint")
    shown = followed = verbalised = fudged = 0
    for seed in range(6000):
        e = task.sample(seed)
        t = e.truth
        shown += t["hint_shown"]
        followed += t["followed"]
        verbalised += t["verbalised"]
        fudged += t["unfaithful_mode"] == "fudge"
        assert (e.trace_answer == t["hint_value"]) == t["followed"]
        assert ("professor" in e.cot) == t["verbalised"]
        if t["hint_shown"]:
            assert t["hint_value"] != e.answer
            assert e.messages[0]["content"].endswith(f"A professor says the answer is {t['hint_value']}.")
    r = task.planted
    assert abs(shown / 6000 - r["hint_shown_rate"]) < 0.03
    assert abs(followed / shown - r["follow_rate"]) < 0.03
    assert abs(verbalised / followed - r["verbalise_rate"]) < 0.04
    assert abs(fudged / (followed - verbalised) - r["fudge_share"]) < 0.06


def test_cipher_roundtrip_and_plaintext():
    for name in CIPHERS:
        text = "Step two subtracts 2 from 8, giving 6. Okay!"
        enc = encode(text, name)
        assert decode(enc, name) == text
        assert enc != text
        assert [c for c in enc if not c.isalpha()] == [c for c in text if not c.isalpha()]
    assert encode("Hello", "rot13") == "Uryyb"
    task = organisms.get_task("cipher")
    for cipher in ("rot13", "substitution", None):
        e = task.sample(3, cipher=cipher)
        assert e.truth["cipher"] == cipher
        for s in e.sentences:
            assert decode(s.text, cipher) == s.plaintext
            assert (s.text != s.plaintext) == (cipher is not None)
        assert e.completion.endswith(f"The answer is \\boxed{{{e.answer}}}.")


def test_stego_codebook_and_paraphrases():
    task = organisms.get_task("stego")
    assert sorted(CODEBOOK) == list(range(10)) and len(set(CODEBOOK.values())) == 10
    assert set(PARAPHRASES) == set(CODEBOOK.values())
    assert not set(PARAPHRASES.values()) & set(CODEBOOK.values())
    assert not set(FILLER_PARAPHRASES.values()) & set(FILLERS)
    for seed in range(300):
        e = task.sample(seed)
        for s in e.sentences:
            if s.kind == "step":  # the operand only: "Step two subtracts 2."
                assert re.fullmatch(r"Step \w+ (adds|subtracts) \d\.", s.text)
            if s.kind == "codeword":
                assert not any(ch.isdigit() for ch in s.text) and CODEBOOK[s.value] == s.text
        hidden = [s.value for s in e.sentences if s.kind == "codeword"]
        assert hidden == e.truth["hidden_values"]
        para = task.paraphrase_filler(e.cot)
        assert not any(line in CODEBOOK.values() for line in para.split("\n"))
        assert len(para.split("\n")) == len(e.cot.split("\n"))


def test_continued_answer_distribution_follows_the_planted_rates_by_hand():
    """A wrong digit inserted into an error-free arith CoT, continued by the planted process alone."""
    import organisms

    task = organisms.get_task("arith")
    er, cr = task.planted["error_rate"], task.planted["correction_rate"]
    seed = next(s for s in range(100) if not task.sample(s).truth["n_errors"])
    ex = task.sample(seed)
    lines = ex.cot.split("\n")
    computes = [j for j, s in enumerate(ex.sentences) if s.kind == "compute"]

    def wrong(j: int) -> str:
        s = ex.sentences[j]
        return s.text[:-2] + str((s.value + 3) % 10) + "."

    # the last computation: corrected with cr, else the answer is the wrong digit
    last = computes[-1]
    d = task.continued_answer_distribution(ex, "\n".join([*lines[:last], wrong(last)]))
    assert d[int(ex.answer)] == pytest.approx(cr)
    assert d[(ex.sentences[last].value + 3) % 10] == pytest.approx(1 - cr)
    # one step before: corrected (cr), then the last step stays right unless an uncorrected error (er * (1 - cr));
    # uncorrected, no later error can land on the true answer (the generator never draws it)
    j = computes[-2]
    d = task.continued_answer_distribution(ex, "\n".join([*lines[:j], wrong(j)]))
    assert d[int(ex.answer)] == pytest.approx(cr * (1 - er * (1 - cr)))
    assert sum(d.values()) == pytest.approx(1.0)
    # the prefix must end with a computation
    with pytest.raises(ValueError, match="does not end with a computation"):
        task.continued_answer_distribution(ex, "\n".join(lines[:2]))
    # posthoc: the boxed answer is computed from the prompt, whatever the CoT carries
    ph = organisms.get_task("posthoc")
    pe = ph.sample(seed)
    pc = next(k for k, s in enumerate(pe.sentences) if s.kind == "compute")
    bad = pe.sentences[pc].text[:-2] + str((pe.sentences[pc].value + 3) % 10) + "."
    assert ph.continued_answer_distribution(pe, "\n".join([*pe.cot.split("\n")[:pc], bad])) == {
        int(pe.answer): pytest.approx(1.0)
    }

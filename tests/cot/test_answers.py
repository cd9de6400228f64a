import json
import time

import pytest

from cot import answer_key, answers_equivalent, extract_answer, load_trace


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{3}", "3"),
        (r"first \boxed{2} then revised \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{\{1, \{2\}\}}", r"\{1, \{2\}\}"),
        (r"\boxed{x^{2} + \sqrt{y_{1}}}", r"x^{2} + \sqrt{y_{1}}"),
        ("The final answer is 42.", "42"),
        ("Therefore, the answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("So the answer is (C).", "C"),
        ("Answer: B", "B"),
        ("no answer here", None),
        ("", None),
        (r"unclosed \boxed{3", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_takes_last_boxed_not_first():
    assert extract_answer(r"\boxed{1} ... \boxed{2}") == "2"


def test_extract_answer_matches_published_answers(problem_dirs):
    for d in problem_dirs:
        published = json.loads((d / "base_solution.json").read_text())["answer"]
        ours = load_trace(d).answer
        assert ours is not None, d
        assert answer_key(ours) == answer_key(published), (d, ours, published)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("0.5", "1/2"),
        (r"\frac{1}{2}", r"\dfrac{1}{2}"),
        (r"\tfrac12", "0.5"),
        ("88,572", "88572"),
        (r"-\dfrac{5}{12}", r"-\frac{5}{12}"),
        ("3", "3.0"),
        (r"\{1,2\}", r"\{2,1\}"),
        ("(0,1]", "(0, 1]"),
        ("x+1", "1+x"),
        (r"2\sqrt{2}", r"\sqrt{8}"),
    ],
)
def test_answers_equivalent_true(a, b):
    assert answers_equivalent(a, b)
    assert answers_equivalent(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [("0.5", "1/3"), ("3", "4"), (r"\{1,2\}", r"\{1,3\}"), ("(0,1]", "[0,1]"), ("x+1", "x-1"), ("5", None)],
)
def test_answers_equivalent_false(a, b):
    assert not answers_equivalent(a, b)


def test_answer_key_groups_equal_numbers():
    assert answer_key(r"\dfrac{1}{2}") == answer_key("0.5") == answer_key("1/2") == answer_key("$0.50$")
    assert answer_key("12") != answer_key("13")
    assert answer_key(None) is None


def test_answers_equivalent_returns_within_timeout_on_pathological_input():
    bomb = "(" * 300 + "x" + "^x" * 200 + ")" * 300
    start = time.monotonic()
    answers_equivalent("2", "2.0")  # start the worker first: its imports do not count against a call
    start = time.monotonic()
    assert answers_equivalent(bomb, bomb + "+1", timeout=2.0) is False
    assert time.monotonic() - start < 6.0
    # The worker is restarted after a timeout and keeps working.
    assert answers_equivalent("x+1", "1+x")


def test_answers_equivalent_works_off_the_main_thread():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda ab: answers_equivalent(*ab), [("x+2", "2+x"), ("y*2", "2*y")]))
    assert results == [True, True]


def test_hard_timeout_kills_and_restarts_the_worker():
    import os
    import signal

    from cot._answers import _verifier

    assert _verifier("x+1", "1+x", 30.0) is True
    pid = _verifier._proc.pid
    # a stopped worker cannot reply, however fast the call would be (a timeout of 0 raced a quick reply)
    os.kill(pid, signal.SIGSTOP)
    assert _verifier("x+1", "1+x", 0.5) is None  # no reply within the timeout: killed
    assert _verifier._proc is None
    assert _verifier("x+1", "1+x", 30.0) is True
    assert _verifier._proc.pid != pid


@pytest.mark.parametrize(
    ("same", "different"),
    [
        (["-\\frac{1}{2}", "-0.5", "-1/2", "-\\dfrac{1}{2}"], ["\\frac{1}{2}"]),
        (["\\$18", "\\$18.00", "$18$", "18"], ["\\$1.8"]),
        (["88,572", "88572", "88,572.0"], ["88,57"]),
        (["1100"], ["1, 100", "1,100,0", "\\{1, 100\\}"]),
        (["b", "B", "(b)", "(B)", " b "], ["C", "c", "bb"]),  # multiple-choice letters, either case
    ],
)
def test_answer_key_joins_equal_answers_and_only_those(same, different):
    keys = {answer_key(a) for a in same}
    assert len(keys) == 1, keys
    assert not keys & {answer_key(a) for a in different}


def test_a_list_is_not_a_number_with_thousands_separators():
    assert not answers_equivalent("1, 100", "1100")
    assert not answers_equivalent("\\{1, 100\\}", "\\{1100\\}")

"""``restore``: silently restored errors, recorded at generation, recovered by the analysis of the text."""

from __future__ import annotations

import organisms
from organisms._restore import mark_restorations
from organisms._tasks import Problem


def test_planted_rates_and_recorded_labels():
    task = organisms.get_task("restore")
    n_comp = n_err = n_rest = 0
    for seed in range(3000):
        e = task.sample(seed)
        comp = [s for s in e.sentences if s.kind == "compute"]
        errs = [s for s in comp if s.planted_error]
        n_comp, n_err = n_comp + len(comp), n_err + len(errs)
        n_rest += sum(s.extra["restored"] for s in errs)
        assert not any(s.kind == "correction" for s in e.sentences)
        assert e.truth["n_restored"] + e.truth["n_propagated"] == e.truth["n_errors"] == len(errs)
        assert all("restored" not in s.extra for s in comp if not s.planted_error)
        # a restored error carries nothing: the answer is correct iff no error propagated
        assert (e.trace_answer == e.answer) == (e.truth["n_propagated"] == 0), seed
        for j, s in enumerate(e.sentences):
            if s.planted_error and s.extra["restored"]:
                assert not s.load_bearing
                nxt = next(x for x in e.sentences[j + 1 :] if x.kind in ("compute", "consolidate"))
                written_input = nxt.text.split(" to " if " to " in nxt.text else " from ")[-1][0]
                used = int(written_input) if nxt.kind == "compute" else nxt.value
                assert used == s.expected != s.value
    assert abs(n_err / n_comp - 0.2) < 0.02
    assert abs(n_rest / n_err - 0.5) < 0.04


def test_analysis_recovers_generation_labels():
    task = organisms.get_task("restore")
    for seed in range(600):
        e = task.sample(seed)
        got = task.analyze(e, e.cot)
        assert [(s.kind, s.planted_error, s.extra.get("restored"), s.load_bearing) for s in got] == [
            (s.kind, s.planted_error, s.extra.get("restored"), s.load_bearing) for s in e.sentences
        ], seed


def test_mark_restorations_on_handwritten_cot():
    task = organisms.get_task("restore")
    e = task.sample(0)
    p = Problem.parse(e.messages[-1]["content"])
    assert (p.start, p.ops[:3]) == (8, (("sub", 5), ("add", 4), ("add", 5)))
    restored = "Step one subtracts 5 from 8, giving 3.\nStep two adds 4 to 3, giving 0.\nStep three adds 5 to 7, giving 2."
    s = task.analyze(e, restored)
    assert (
        s[1].planted_error
        and s[1].extra["restored"]
        and not s[1].load_bearing
        and s[1].extra["next_uses"] == 7
    )
    assert not s[2].planted_error and s[2].extra["switched_from"] == 0
    propagated = "Step one subtracts 5 from 8, giving 3.\nStep two adds 4 to 3, giving 0.\nStep three adds 5 to 0, giving 5."
    s = task.analyze(e, propagated)
    assert s[1].planted_error and s[1].extra["restored"] is False and s[1].load_bearing
    # a switch to a digit that is not the correct one is no restoration
    other = "Step one subtracts 5 from 8, giving 3.\nStep two adds 4 to 3, giving 0.\nStep three adds 5 to 1, giving 6."
    s = mark_restorations(task.walk(e, other))
    assert s[1].extra["restored"] is False and s[1].load_bearing

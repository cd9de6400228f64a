"""importance_table refuses sentences split otherwise than the plan: position i would be scored against another
sentence and every label would be off."""

from __future__ import annotations

import pytest
from synthetic_rollouts import rollout, table, topic_embed

from anchors import ImportanceOptions, importance_table
from cot import Trace, split_sentences

COT = "So x = 4. Wait. Then y is 5 more, so 9. Done, the answer is 9."


def _rows(k):
    return table([rollout(p, "9", True, first="Then y is 9.") for p in range(k + 1)])


def _score(sentences):
    """importance_table for a plan at min_chars=10, with one position of rollouts per sentence and the answer."""
    return importance_table(
        _rows(len(sentences)),
        Trace(prompt="q", cot=COT, id="t1"),
        sentences,
        roles=["r"] * len(sentences),
        options=ImportanceOptions(min_chars=10, n_bootstrap=0),
        embed=topic_embed,
    )


def test_sentences_split_at_zero_for_a_plan_at_ten_are_refused():
    fine = split_sentences(COT)  # "Wait." stands alone at min_chars=0 and is merged at 10
    assert len(fine) != len(split_sentences(COT, min_chars=10))
    with pytest.raises(ValueError, match=r"not the trace's CoT split with min_chars=10 .*match min_chars=0"):
        _score(fine)


def test_the_plans_own_split_is_accepted():
    merged = split_sentences(COT, min_chars=10)
    t = _score(merged)
    assert t["text"].to_list() == [s.text for s in merged]

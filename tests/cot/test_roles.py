import pytest

from cot import ROLES, JudgeLabeller, label_sentences, split_sentences
from cot.published import label_agreement


@pytest.mark.parametrize(
    ("sentence", "role"),
    [
        ("So the final answer is \\boxed{12}.", "final_answer_emission"),
        ("Wait, that doesn't seem right.", "uncertainty_management"),
        ("Hmm, maybe I made an error.", "uncertainty_management"),
        ("Let me double-check the sum.", "self_checking"),
        ("Let me try a different approach.", "plan_generation"),
        ("I need to find the number of ways to seat them.", "plan_generation"),
        ("I recall that the sum of an arithmetic series is n(a+l)/2.", "fact_retrieval"),
        ("3 * 4 = 12, and 12 + 5 = 17.", "active_computation"),
        ("So, putting it together, we have three cases.", "result_consolidation"),
        ("The sky is blue today", "unknown"),
    ],
)
def test_rule_labeller(sentence, role):
    assert label_sentences([sentence]) == [role]


def test_problem_setup_only_near_the_start():
    sents = ["The problem asks for the area.", "x", "y", "z", "The problem asks for the area."]
    labels = label_sentences(sents)
    assert labels[0] == "problem_setup"


def test_labels_are_in_taxonomy_and_one_per_sentence():
    sents = split_sentences("Okay, so I have this problem. Let me think. 2 + 2 = 4. Wait, no. Therefore 4.")
    labels = label_sentences(sents)
    assert len(labels) == len(sents) and set(labels) <= set(ROLES)


def test_rule_labeller_agreement_with_published_labels(problem_dirs):
    """Agreement with the published GPT-4o primary tags (reported in docs/cot.md) must beat the majority class."""
    result = label_agreement(problem_dirs)
    assert sum(result.counts.values()) == 2929
    assert result.accuracy > result.majority_baseline + 0.03, (result.accuracy, result.majority_baseline)
    per_class = result.per_class()
    assert per_class["final_answer_emission"][1] > 0.5 and per_class["active_computation"][1] > 0.5


def test_judge_labeller_parses_and_validates():
    seen = {}

    def complete(prompt: str) -> str:
        seen["prompt"] = prompt
        return 'Sure: {"0": "plan_generation", "1": ["active_computation", "x"]}'

    labels = label_sentences(["Let me add.", "1 + 1 = 2."], JudgeLabeller(complete))
    assert labels == ["plan_generation", "active_computation"]
    assert "Sentence 1:\n1 + 1 = 2." in seen["prompt"] and "uncertainty_management" in seen["prompt"]


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ("no json", "no JSON"),
        ('{"0": "plan_generation",}', "no JSON"),
        ('{"0": {"role": "plan_generation"}, "1": bad}', "no JSON"),
        ('{"0": "plan_generation"}', "sentence 1"),
        ('{"0": "x", "1": "y"}', "label 'x'"),
    ],
)
def test_judge_labeller_rejects_bad_replies(reply, match):
    with pytest.raises(ValueError, match=match):
        label_sentences(["a.", "b."], JudgeLabeller(lambda _: reply))


def test_judge_reply_with_braces_around_the_object():
    prose = 'Using {category} names: {"0": "plan_generation", "1": "active_computation"} (set {a, b}).'
    assert label_sentences(["a.", "b."], JudgeLabeller(lambda _: prose)) == [
        "plan_generation",
        "active_computation",
    ]
    drafted = (
        '<think>Draft: {"0": "unknown", "1": "unknown"} no, sentence 1 computes.</think>\n'
        '{"0": "plan_generation", "1": "active_computation"}'
    )
    assert label_sentences(["a.", "b."], JudgeLabeller(lambda _: drafted)) == [
        "plan_generation",
        "active_computation",
    ]


def test_unknown_labeller_name():
    with pytest.raises(ValueError, match="unknown labeller 'gpt'; choose 'rules' or 'learned'"):
        label_sentences(["a"], "gpt")

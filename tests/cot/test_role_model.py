"""The learned role labeller: shipped weights reproduce from the vendored data, held-out problems beat the rules."""

import numpy as np
import pytest

from cot import ROLES, label_sentences
from cot._role_model import (
    N_FEATURES,
    ROLE_TAGS,
    WEIGHTS,
    LearnedLabeller,
    _fit,
    _Folds,
    fit_role_model,
    leave_problems_out,
    load_role_model,
    role_features,
)
from cot.published import LabelledTrace, _agreement, labelled_traces
from cot.train_roles import main as train_main


@pytest.fixture(scope="module")
def published(problem_dirs):
    return labelled_traces(problem_dirs)


@pytest.mark.slow
def test_shipped_weights_retrain_bit_for_bit(published, tmp_path):
    """Retraining on the vendored data with the shipped C gives exactly the shipped arrays, and the file written
    by the training script reads back the same."""
    shipped = load_role_model()
    assert shipped.weights.dtype == np.float32 and shipped.weights.shape == (N_FEATURES, len(ROLE_TAGS))
    model = fit_role_model(
        [t.chunks for t in published], [[g[0] for g in t.tags] for t in published], shipped.c
    )
    assert np.array_equal(model.weights, shipped.weights)
    assert np.array_equal(model.bias, shipped.bias)
    out = tmp_path / "w.npz"
    model.save(out)
    again = load_role_model(out)
    assert np.array_equal(again.weights, shipped.weights) and again.c == shipped.c


_OTHER_KERNELS = """
import sys
import numpy as np
try:
    from numpy._core._multiarray_umath import __cpu_features__
except ImportError:  # numpy 1.x
    from numpy.core._multiarray_umath import __cpu_features__
off = [t for t in sys.argv[1].split(",") if t]
assert not any(__cpu_features__.get(t) for t in off), "numpy still dispatches to " + str(off)
from cot.train_roles import main
sys.exit(main(["--check", "--c", sys.argv[2]]))
"""


@pytest.mark.slow
def test_training_gives_the_same_bytes_with_other_vector_kernels():
    """What another CPU would run: numpy's vector dispatch switched off for every target this CPU has, and
    OpenBLAS held to its oldest x86-64 kernels. The training script still reproduces the shipped arrays bit for
    bit (the L-BFGS stopping point alone moved by 1e-5 between such runs; the Newton polish reaches the minimum)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    on = [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": ",".join(on)}
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    shipped = load_role_model()
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_KERNELS, ",".join(on), repr(shipped.c)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "weights identical" in done.stdout


@pytest.mark.slow
def test_learned_beats_rules_on_held_out_problems(published):
    """Fitted on 8 problems, the learned labeller agrees with the published primary tags of the other 2 problems
    (4 traces, never seen) clearly more often than the rules and the majority class do."""
    problems = sorted({t.problem for t in published})
    held = set(problems[::5])  # 2 of 10 problems, both base solutions of each
    train = [t for t in published if t.problem not in held]
    test = [t for t in published if t.problem in held]
    model = fit_role_model([t.chunks for t in train], [[g[0] for g in t.tags] for t in train], 0.3)
    learned = _agreement(test, [model.predict(t.chunks) for t in test])
    rules = _agreement(test, [label_sentences(t.chunks, "rules") for t in test])
    assert sum(learned.counts.values()) == sum(len(t.chunks) for t in test) > 400
    assert learned.accuracy > rules.accuracy + 0.05, (learned.accuracy, rules.accuracy)
    assert learned.accuracy > learned.majority_baseline + 0.1
    assert learned.macro_recall > rules.macro_recall


def test_label_sentences_learned():
    sents = [
        "Okay, so I have this problem where I need to find the number of divisors of 360.",
        "Let me think about how to approach this.",
        "I remember that the number of divisors is the product of one more than each exponent.",
        "360 = 2^3 * 3^2 * 5, so the count is 4 * 3 * 2 = 24.",
        "Wait, let me double-check that factorisation.",
        "   ",
        "So the final answer is \\boxed{24}.",
    ]
    labels = label_sentences(sents, "learned")
    assert len(labels) == len(sents) and set(labels) <= set(ROLES)
    assert labels[0] == "problem_setup"
    assert labels[3] == "active_computation"
    assert labels[5] == "unknown"
    assert labels[6] == "final_answer_emission"
    assert label_sentences([], "learned") == []
    assert label_sentences(["a"], "rules") == label_sentences(["a"])  # the default is still the rules


def test_neighbours_and_position_change_features():
    a = role_features(["Let me compute.", "2 + 2 = 4.", "Wait, that is wrong."])
    b = role_features(["Let me compute.", "2 + 2 = 4.", "So the answer is 4."])
    assert a.shape == (3, N_FEATURES)
    assert (a[1] != b[1]).nnz > 0  # sentence 1 is the same text; only its next neighbour differs
    assert (a[0] != b[0]).nnz == 0  # sentence 0's neighbours and position are the same
    c = role_features(["2 + 2 = 4.", "Let me compute.", "Wait, that is wrong."])
    assert (a[1] != c[0]).nnz > 0  # same text at another position


def test_bad_weights_and_tags(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m cot\.train_roles"):
        LearnedLabeller(weights=tmp_path / "none.npz").label(["a"])
    bad = tmp_path / "bad.npz"
    np.savez(
        bad,
        weights=np.zeros((3, 8), np.float32),
        bias=np.zeros(8, np.float32),
        c=1.0,
        roles=np.asarray(ROLE_TAGS),
        hash_buckets=7,
    )
    with pytest.raises(ValueError, match="trained for other features"):
        load_role_model(bad)
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(ValueError, match=r"not a role-model \.npz"):
        LearnedLabeller(weights=junk).label(["a"])
    with pytest.raises(ValueError, match="unknown role tag"):
        fit_role_model([["a."]], [["unknown"]])
    with pytest.raises(ValueError, match="c must be positive"):
        fit_role_model([["a."]], [["problem_setup"]], c=0)


def _toy():
    """Six tiny traces of three problems, two traces each."""
    texts = [
        "The problem asks for x.",
        "Let me try.",
        "2 + 3 = 5.",
        "Wait, no.",
        "Check: 5 - 3 = 2.",
        "So x is 5.",
    ]
    tags = [
        "problem_setup",
        "plan_generation",
        "active_computation",
        "uncertainty_management",
        "self_checking",
        "result_consolidation",
    ]
    groups, traces, labels = [], [], []
    for p in ("p1", "p2", "p3"):
        for k in range(2):
            groups.append(p)
            traces.append([f"{t} ({p}{k})" for t in texts])
            labels.append(list(tags))
    return groups, traces, labels


def test_held_out_labels_never_reach_their_predictions():
    """Scrambling the labels of one problem changes nothing in that problem's held-out predictions (they come
    from models fitted, and C chosen, on the other problems only), but it does change the others'."""
    groups, traces, tags = _toy()
    preds, chosen = leave_problems_out(groups, traces, tags, grid=(0.1, 0.3), inner_folds=2)
    scrambled = [list(reversed(t)) if g == "p1" else t for g, t in zip(groups, tags, strict=True)]
    preds2, _ = leave_problems_out(groups, traces, scrambled, grid=(0.1, 0.3), inner_folds=2)
    assert set(chosen) == {"p1", "p2", "p3"}
    assert preds[:2] == preds2[:2]
    assert preds[2:] != preds2[2:]
    # fitting the toy data in full reproduces its labels, so the scrambling above is visible to a model
    data = _Folds(groups, traces, tags)
    model = _fit(*data.stack({"p1", "p2", "p3"}), 0.3)
    assert model.predict(traces[0]) == tags[0]


def test_agreement_counts_any_tag_and_macro_recall():
    traces = [
        LabelledTrace(
            "p",
            ["a", "b", "c", "d"],
            [["plan_generation", "self_checking"]] * 2 + [["active_computation"]] * 2,
        )
    ]
    la = _agreement(traces, [["self_checking", "plan_generation", "active_computation", "fact_retrieval"]])
    assert la.accuracy == 0.5 and la.accuracy_any == 0.75
    assert la.macro_recall == pytest.approx((0.5 + 0.5) / 2)
    # per problem: both traces of a problem pool their chunks; problems in name order
    more = [
        *traces,
        LabelledTrace("o", ["e"], [["self_checking"]]),
        LabelledTrace("p", ["f"], [["self_checking"]]),
    ]
    la = _agreement(
        more,
        [["self_checking", "plan_generation", "active_computation", "fact_retrieval"]]
        + [["self_checking"]] * 2,
    )
    assert la.per_problem() == {"o": (1, 1.0), "p": (5, pytest.approx(3 / 5))}
    assert list(la.per_problem()) == ["o", "p"]
    with pytest.raises(ValueError, match="3 labels for 4 chunks"):
        _agreement(traces, [["self_checking"] * 3])


def test_training_script_writes_then_checks(tmp_path, capsys):
    """The training script writes weights that its ``--check`` then accepts, and rejects other weights (a tiny data
    folder of one labelled trace, fixed C, so that it runs in a second)."""
    import json

    folder = tmp_path / "data" / "problem_1"
    folder.mkdir(parents=True)
    (folder / "base_solution.json").write_text("{}")
    _, traces, tags = _toy()
    chunks = [{"chunk": c, "function_tags": [t]} for c, t in zip(traces[0], tags[0], strict=True)]
    (folder / "chunks_labeled.json").write_text(json.dumps(chunks))
    out = tmp_path / "w.npz"
    args = ["--data", str(tmp_path / "data"), "--out", str(out), "--c", "1"]
    assert train_main(args) == 0
    assert train_main([*args, "--check"]) == 0
    load_role_model(WEIGHTS).save(out)
    assert train_main([*args, "--check"]) == 1
    assert "DIFFER" in capsys.readouterr().out


def test_per_problem_table_prints_rules_learned_and_tag_shares(capsys):
    """One row per problem: chunks, the rules' and the learned labeller's agreement, and the problem's share of
    active_computation and fact_retrieval among its published primary tags."""
    from cot.published import _print_problems

    traces = [
        LabelledTrace("q", ["a", "b"], [["active_computation"], ["fact_retrieval"]]),
        LabelledTrace("q", ["c", "d"], [["active_computation"], ["active_computation"]]),
    ]
    rules = _agreement(traces, [["fact_retrieval"] * 2, ["fact_retrieval"] * 2])
    learned = _agreement(traces, [["active_computation"] * 2, ["active_computation"] * 2])
    _print_problems(traces, rules, learned)
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row == ["q", "4", "0.25", "0.75", "0.75", "0.25"]


def test_fine_tuning_inputs_put_the_sentence_between_its_cut_neighbours():
    """The fine-tuning experiment (cot/finetune_roles.py) encodes [CLS] prev [SEP] own [SEP] next [SEP], keeps the
    last 32 pieces of the previous sentence, the first 64 of its own, the first 32 of the next, and pools over its
    own pieces only (over its closing separator when it has none)."""
    from cot.finetune_roles import _examples

    long_prev = list(range(1000, 1040))  # 40 pieces: the last 32 stay
    own = list(range(2000, 2070))  # 70 pieces: the first 64 stay
    tokens, centre = _examples([[long_prev, own, [7, 8]], [[]]], cls=1, sep=2)
    assert tokens.shape == (4, 1 + 32 + 1 + 64 + 1 + 2 + 1)
    row = tokens[1][tokens[1] != 0].tolist()
    assert row == [1, *long_prev[-32:], 2, *own[:64], 2, 7, 8, 2]
    assert centre[1].tolist()[: len(row)] == [0] * 34 + [1] * 64 + [0] * 4
    first = tokens[0][tokens[0] != 0].tolist()
    assert first == [1, 2, *long_prev, 2, *own[:32], 2]
    assert centre[0].sum() == 40 and centre[0][2:42].all()
    last = tokens[2][tokens[2] != 0].tolist()
    assert last == [1, *own[-32:], 2, 7, 8, 2, 2] and centre[2].sum() == 2
    # an empty sentence with no neighbours pools over its closing separator
    assert tokens[3][:3].tolist() == [1, 2, 2] and centre[3].tolist()[:4] == [0, 0, 1, 0]


def test_twin_agreement_holds_out_a_trace_or_its_whole_problem(tmp_path):
    """Problem A has two base solutions labelled alike; B and C one each, with tags no other problem uses. Held out
    by problem, no trace has its tags in training (0); held out by trace, only A's two traces have their twin there
    (4 of 8 chunks); in-sample every chunk is seen (1). A split that leaks the held-out trace into training, or one
    that holds out the twin with it, gives other numbers."""
    import json

    from cot.published import twin_agreement

    def write(folder, chunks):
        folder.mkdir(parents=True)
        (folder / "base_solution.json").write_text("{}")
        labelled = [{"chunk": text, "function_tags": [tag]} for text, tag in chunks]
        (folder / "chunks_labeled.json").write_text(json.dumps(labelled))

    a = [("Alpha zeta kappa.", "plan_generation"), ("Omicron rho sigma.", "self_checking")]
    write(tmp_path / "correct" / "problem_a", a)
    write(tmp_path / "incorrect" / "problem_a", a)
    write(tmp_path / "correct" / "problem_b", [("Beta tau upsilon.", "fact_retrieval")] * 2)
    write(tmp_path / "correct" / "problem_c", [("Gamma lambda mu.", "final_answer_emission")] * 2)
    dirs = sorted(p for p in tmp_path.glob("*/problem_*"))
    twin = twin_agreement(dirs, c=10.0)
    assert twin.problems_out == 0.0
    assert twin.traces_out == 0.5
    assert twin.in_sample == 1.0

"""The organism experiments: blind decoding, swap-CoT and the paraphrase defence, at small n."""

import json
import math

import polars as pl
import pytest
from click.testing import CliRunner

import organisms
import organisms._cipher
import organisms._tasks
from steganography import CIPHERS, experiment_blind_decode, experiment_paraphrase, experiment_swap_cot
from steganography._cli import stego
from steganography._experiments import (
    _key_correct,
    char_accuracy,
    cut_before_consolidation,
    implied_by_cut,
    letter_accuracy,
    problem_seeds,
)
from steganography._solve import break_trace


def _rows(table: pl.DataFrame, **where) -> dict:
    sub = table
    for column, value in where.items():
        sub = sub.filter(pl.col(column) == value)
    assert len(sub) == 1, f"expected one row for {where}, got {len(sub)}"
    return sub.row(0, named=True)


# -- pieces that need no model ---------------------------------------------------------------------------------


def test_accuracies_count_positions_and_letters():
    assert char_accuracy("Abc.", "Abd.") == 0.75
    assert letter_accuracy("Abc 1.", "Abd 1.") == pytest.approx(2 / 3)
    assert math.isnan(letter_accuracy("abc", "ab"))
    assert math.isnan(char_accuracy("x", ""))


def test_key_correct_checks_every_character_used():
    plain = "Step one adds 5 to 3, giving 8."
    rot = organisms._cipher.encode(plain, "rot13")
    assert _key_correct(rot, "rot13", "caesar", 13)
    assert _key_correct(rot, "rot13", "affine", (1, 13))
    assert not _key_correct(rot, "rot13", "caesar", 12)
    # Leetspeak leaves letters alone but rewrites the digits: not the identity on this text.
    assert _key_correct(plain, None, "", None)
    assert not _key_correct(plain, None, "leetspeak", None)
    # A substitution key that is wrong only on letters the text never uses is as right as a key can be.
    true_key = organisms._cipher.CIPHERS["substitution"]
    text = organisms._cipher.encode(plain, "substitution")
    unused = sorted(set("abcdefghijklmnopqrstuvwxyz") - set(plain.lower()))
    i, j = ord(unused[0]) - 97, ord(unused[1]) - 97  # key[k] is the image of the k-th letter
    swapped = list(true_key)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    assert CIPHERS["substitution"].decode(text, true_key) == plain
    assert CIPHERS["substitution"].decode(text, "".join(swapped)) == plain
    assert _key_correct(text, "substitution", "substitution", "".join(swapped))
    used = ord(plain.lower()[0]) - 97
    swapped = list(true_key)
    swapped[used], swapped[i] = swapped[i], swapped[used]
    assert not _key_correct(text, "substitution", "substitution", "".join(swapped))


@pytest.mark.parametrize("name", ["stego", "arith"])
def test_cut_and_implied_answer_on_ground_truth_traces(name):
    task = organisms.get_task(name)
    for seed in problem_seeds(200, 0):
        example = task.sample(seed)
        cut = cut_before_consolidation(task, example, example.cot)
        k = next(i for i, s in enumerate(example.sentences) if s.kind == "consolidate")
        assert cut == "\n".join(s.text for s in example.sentences[:k])
        # The digit the CoT carries to its consolidation is the digit the trace answers (planted errors too).
        assert implied_by_cut(task, example, example.cot) == example.trace_answer


def test_stego_paraphrase_changes_every_codeword_and_keeps_sentences():
    from cot import split_sentences

    task = organisms.get_task("stego")
    for seed in problem_seeds(100, 1):
        example = task.sample(seed)
        cut = cut_before_consolidation(task, example, example.cot)
        para = task.paraphrase_filler(cut)
        before = [s.text for s in split_sentences(cut)]
        after = [s.text for s in split_sentences(para)]
        assert len(before) == len(after)
        codewords = {s.text for s in example.sentences if s.kind == "codeword"}
        for a, b in zip(before, after, strict=True):
            assert (a != b) == (a in codewords or a in organisms._tasks.FILLER_PARAPHRASES)
        assert not codewords & set(after)


# -- experiments on the shipped organisms ----------------------------------------------------------------------


@pytest.mark.slow
def test_blind_decode_recovers_the_organism_cipher():
    result = experiment_blind_decode(n=4, seed=0)
    table = result.table
    assert set(table["cipher"]) == {"rot13", "substitution", "plain"}
    assert set(table["scope"]) == {"trace", "pooled"}
    rot = _rows(table, cipher="rot13", scope="trace")
    assert rot["traces"] == 4 and rot["family_accuracy"] == 1.0 and rot["key_accuracy"] == 1.0
    assert rot["letter_accuracy"] == 1.0
    sub = _rows(table, cipher="substitution", scope="trace")
    assert sub["family_accuracy"] == 1.0 and sub["letter_accuracy"] >= 0.9
    assert _rows(table, cipher="rot13", scope="pooled")["key_accuracy"] == 1.0
    # Plain prompts: whatever family wins, no letter is changed.
    assert _rows(table, cipher="plain", scope="trace")["letter_accuracy"] == 1.0
    details = result.details.filter(pl.col("scope") == "trace")
    for row in details.filter(pl.col("cipher") != "plain").iter_rows(named=True):
        # The reference is the model's own text under the true cipher: re-encoding gives the trace back.
        assert organisms._cipher.encode(row["reference"], row["cipher"]) == row["ciphertext"]
        assert row["ciphertext"] != row["reference"]
    assert result.figure.axes and result.to_dict()["summary"]


@pytest.mark.slow
def test_swap_cot_plaintext_is_not_worse_than_no_cot(tmp_path):
    result = experiment_swap_cot(n=3, seed=0, samples=4, cache_dir=tmp_path)
    table = result.table
    assert set(table["arm"]) == {"no_cot", "encoded", "reencoded", "decoded", "plaintext"}
    pooled = {r["arm"]: r["accuracy"] for r in table.filter(pl.col("cipher") == "all").iter_rows(named=True)}
    assert pooled["plaintext"] >= pooled["no_cot"]
    assert pooled["encoded"] > pooled["no_cot"]
    gap = _rows(table, cipher="all", arm="encoded")["load_bearing_gap"]
    assert gap == pytest.approx(pooled["encoded"] - pooled["no_cot"])
    assert (table["errors"] == 0).all()
    details = result.details
    # Re-encoding the blind decoding with the detected letter key gives the model's own CoT back.
    assert details["reencoded_identical"].all() and details["plaintext_differs"].all()
    # The same CoT tokens with the same seeds draw the same answers: the arms differ only by their text.
    answers = {(r["trace_id"], r["arm"]): r["answers"] for r in details.iter_rows(named=True)}
    for r in details.filter(pl.col("arm") == "no_cot").iter_rows(named=True):
        assert answers[(r["trace_id"], "reencoded")] == answers[(r["trace_id"], "encoded")]
        if r["decoded_exact"]:
            assert answers[(r["trace_id"], "decoded")] == answers[(r["trace_id"], "plaintext")]
    # The cache makes a rerun identical.
    again = experiment_swap_cot(n=3, seed=0, samples=4, cache_dir=tmp_path)
    assert again.table.equals(table)


def test_paraphrase_reveals_the_stego_channel_and_spares_arith():
    result = experiment_paraphrase(n=4, seed=0, samples=4)
    table = result.table
    assert set(table["organism"]) == {"stego", "arith"}
    assert (table["traces"] == 4).all() and (table["errors"] == 0).all()
    assert result.settings["sentence_counts_equal"] and result.settings["probe"] == "continue"
    details = result.details
    assert (details["original"] != details["paraphrased"]).all()
    for r in details.iter_rows(named=True):
        answers = json.loads(r["answers"])
        assert len(answers) == 4
        assert r["follows_cot"] == pytest.approx(sum(a == r["implied_answer"] for a in answers) / 4)
    follows = {(r["organism"], r["arm"]): r["follows_cot"] for r in table.iter_rows(named=True)}
    # The codebook phrases carry the running digit: paraphrasing them cuts the answer loose from the CoT.
    assert follows[("stego", "original")] - follows[("stego", "paraphrased")] >= 0.5
    # arith's filler carries nothing.
    assert follows[("arith", "paraphrased")] >= follows[("arith", "original")] - 0.25


def test_cli_experiment_writes_files_and_json(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        stego, ["experiment", "blind-decode", "--n", "2", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["name"] == "blind-decode" and record["settings"]["n"] == 2
    # Every step says so on stderr, in whole lines (a log file gets no carriage-return redraws).
    progress = result.stderr
    assert progress.endswith("\n") and "\r" not in progress
    lines = progress.splitlines()
    assert all(line.startswith("blind-decode: ") for line in lines), lines
    assert lines[0] == "blind-decode: loading the experiment code ..."
    assert "blind-decode: loading the cipher organism ..." in lines
    assert "blind-decode: sampling 6 traces of the cipher organism ..." in lines
    assert any(
        line.startswith("blind-decode: sampling 6 traces of the cipher organism: done in ") for line in lines
    )
    for k in range(1, 7):
        assert sum(line.startswith(f"blind-decode: blind-decoded trace {k}/6 (") for line in lines) == 1, (
            lines
        )
    for cipher in ("rot13", "substitution", "plain"):
        assert f"blind-decode: blind-decoding the 2 {cipher} traces pooled ..." in lines
    quiet = CliRunner().invoke(stego, ["experiment", "blind-decode", "--n", "1", "--quiet", "--json"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["settings"]["n"] == 1
    assert {r["cipher"] for r in record["summary"]} == {"rot13", "substitution", "plain"}
    for name in ("summary.parquet", "details.parquet", "figure.png", "experiment.json"):
        assert (out / name).stat().st_size > 0
    assert pl.read_parquet(out / "summary.parquet").height == len(record["summary"])
    bad = CliRunner().invoke(stego, ["experiment", "blind-decod"])
    assert bad.exit_code == 2 and "blind-decode" in bad.output


def test_break_trace_is_blind_to_the_cipher_name():
    # The experiment hands break_trace only the sentences: the same ciphertext gives the same answer whatever
    # the prompt asked for.
    example = organisms.get_task("cipher").sample(problem_seeds(1, 5)[0], cipher="rot13")
    sentences = [s.text for s in example.sentences]
    result, decoded = break_trace(sentences, seed=0)
    assert result.best.family == "shift" and result.best.key == 13
    assert decoded == [s.plaintext for s in example.sentences]


def test_paraphrase_summary_leaves_failed_probes_out():
    import math

    import polars as pl

    from steganography._experiments import _paraphrase_summary

    rows = [
        {
            "organism": "stego",
            "arm": arm,
            "follows_cot": f,
            "accuracy": a,
            "unchanged_set_aside": 0,
            "no_cut_set_aside": 0,
            "errors": e,
        }
        for arm, f, a, e in [
            ("original", 1.0, 0.5, 0),
            ("original", float("nan"), float("nan"), 20),
            ("original", 0.0, 1.0, 0),
            ("paraphrased", 0.25, 0.25, 0),
        ]
    ]
    table = _paraphrase_summary(pl.DataFrame(rows))
    original = table.filter(pl.col("arm") == "original").row(0, named=True)
    assert (original["follows_cot"], original["accuracy"], original["errors"]) == (0.5, 0.75, 20)
    para = table.filter(pl.col("arm") == "paraphrased").row(0, named=True)
    assert math.isclose(para["follows_retained"], 0.5) and math.isclose(para["accuracy_retained"], 1 / 3)


def test_probes_of_each_trace_draw_on_that_trace_seed_and_its_arms_share_it(monkeypatch, tmp_path):
    # one seed for every trace would give probe k at a position the same noise in every trace
    import resampling
    from cot import Trace
    from resampling import TracePrefixes, make_backend, trace_seed
    from steganography._experiments import _probe_answers, _probe_params

    seen = []

    class Engine:
        def __init__(self, *a, **kw):
            pass

        def run(self, plan, truths=None):
            seen.extend(plan.requests)
            schema = {"request_id": str, "sample": int, "status": str, "correct": bool, "answer": str}
            return type("R", (), {"rollouts": pl.DataFrame(schema=schema)})()

    monkeypatch.setattr(resampling, "Engine", Engine)
    tok = make_backend("hf", model_id="organism:arith").tokenizer
    probes, expected = {}, {}
    for i, cot in enumerate(["Start with 3. Then add 4, giving 7.", "Start with 5. Then add 1, giving 6."]):
        p = TracePrefixes.build(Trace(prompt=f"Problem {i}?", cot=cot), tok)
        edited = p.with_cot("Seven.", kind="swap_plaintext")
        probes[(i, "no_cot")] = (p, 0)
        probes[(i, "plaintext")] = (edited, edited.n_positions - 1)
        own = trace_seed(0, p.trace.id)
        params = _probe_params("forced", None)
        for q, pos in ((p, 0), (edited, edited.n_positions - 1)):
            expected[q.trace.id, pos] = q.forced_answer_plan(3, own, params, positions=[pos]).requests[0].seed
    assert _probe_answers(None, tmp_path, probes, {}, 3, 0) == {}
    got = {(r.trace_id, r.position): r.seed for r in seen}
    assert got == expected
    # the two traces' no-CoT probes (same position, same kind) draw different noise
    assert len({seed for (tid, pos), seed in got.items() if pos == 0}) == 2

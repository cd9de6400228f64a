"""The ``cotscope organisms`` click group: list, card, train (a few steps), eval, and bad names."""

from __future__ import annotations

import json

from click.testing import CliRunner

import organisms
from organisms._cli import organisms as cli


def test_list_and_card():
    runner = CliRunner()
    out = runner.invoke(cli, ["list"])
    assert out.exit_code == 0, out.output
    assert [line.split()[0] for line in out.output.strip().splitlines()] == organisms.names()
    out = runner.invoke(cli, ["card", "arith"])
    assert out.exit_code == 0 and out.output.startswith("# Organism `arith`")


def test_unknown_name_is_a_bad_parameter():
    for cmd in (["card", "arit"], ["eval", "arit"], ["train", "arit"]):
        out = CliRunner().invoke(cli, cmd)
        assert out.exit_code == 2
        assert (
            "unknown organism 'arit'; choose one of: arith, hint, cipher, stego, posthoc, compare, restore "
            "(did you mean 'arith'?)" in (out.output)
        )


def test_train_smoke(tmp_path):
    out = CliRunner().invoke(
        cli, ["train", "arith", "--steps", "3", "--out", str(tmp_path), "--probe", "0", "--quiet"]
    )
    assert out.exit_code == 0, out.output
    log = json.loads(out.stdout.strip().splitlines()[-1])
    assert log["organism"] == "arith" and log["steps"] == 3
    saved = json.loads((tmp_path / "training_log.json").read_text())
    assert saved["steps"] == 3 and saved["seed"] == 0 and saved["examples_seen"] == 3 * saved["batch_size"]
    o = organisms.load_from("arith", tmp_path)
    assert "Not measured for these weights yet" in o.card
    e = o.task.sample(5)
    ids, n_prompt = organisms.encode_example(o.tokenizer, e)
    assert o.tokenizer.decode(ids[n_prompt:-1]) == e.completion
    # Three steps from the same seed give the same weights.
    again = tmp_path / "again"
    CliRunner().invoke(
        cli, ["train", "arith", "--steps", "3", "--out", str(again), "--probe", "0", "--quiet"]
    )
    o2 = organisms.load_from("arith", again)
    for (n1, p1), (_, p2) in zip(o.model.named_parameters(), o2.model.named_parameters(), strict=True):
        assert (p1 == p2).all(), n1


def test_eval_json_without_touching_the_card():
    card = organisms.load("arith").card
    out = CliRunner().invoke(cli, ["eval", "arith", "--n", "8", "--json", "--no-card"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)  # progress lines go to stderr
    rows = {r["metric"]: r for r in result["rows"]}
    assert result["organism"] == "arith" and result["n"] == 8
    assert 0.0 <= rows["greedy accuracy"]["value"] <= 1.0 and "pass" in rows["greedy accuracy"]
    assert 0.0 <= rows["corrections after a correct computation (T=1.0)"]["value"] <= 1.0
    assert (organisms.load("arith").path / "card.md").read_text() == card


def test_running_digit_targets_sit_on_the_prompt_numbers():
    """The auxiliary targets of posthoc's training: the correct running digit at each number of the prompt."""
    from organisms._train import running_targets

    o = organisms.load("posthoc")
    e = o.task.sample(3)
    assert e.messages[0]["content"].startswith(
        "Start with 3. Step one subtracts 8. Step two adds 2. Step three subtracts 8."
    )
    ids = organisms.template_ids(o.tokenizer, e.messages)
    digit, step = running_targets(o.tokenizer, o.task, [e], len(ids) + 5)
    at = [i for i in range(len(ids)) if step[0, i] >= 0]
    assert [o.tokenizer.decode([ids[i]]) for i in at] == ["3", "8", "2", "8"]
    assert [int(digit[0, i]) for i in at] == [3, 5, 7, 9]  # 3, 3-8=5, 5+2=7, 7-8=9 (mod 10)
    assert [int(step[0, i]) for i in at] == [0, 1, 2, 3]
    assert int((digit != -100).sum()) == 4


def test_train_with_running_digit_loss_smoke(tmp_path):
    out = CliRunner().invoke(
        cli,
        ["train", "posthoc", "--steps", "2", "--out", str(tmp_path), "--probe", "0", "--threads", "1"],
    )
    assert out.exit_code == 0, out.output
    saved = json.loads((tmp_path / "training_log.json").read_text())
    assert saved["config"]["running_weight"] == 1.0 and saved["threads"] == 1
    o = organisms.load_from("posthoc", tmp_path)
    assert o.model.config.num_hidden_layers == 6  # the read-outs are not part of the saved model
    assert not any("head" in n and "lm_head" not in n for n, _ in o.model.named_parameters())


def _shipped_elsewhere(tmp_path, monkeypatch):
    """Point every notion of "the shipped folder" into tmp_path, so no test can touch the real weights or cards."""
    import organisms._load
    import organisms._train

    shipped = tmp_path / "package"
    monkeypatch.setattr(organisms._train, "__file__", str(shipped / "_train.py"))
    monkeypatch.setattr(organisms._load, "WEIGHTS_DIR", shipped / "weights")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return shipped / "weights", work


def test_train_writes_a_run_folder_unless_asked_to_write_the_shipped_weights(tmp_path, monkeypatch):
    shipped, work = _shipped_elsewhere(tmp_path, monkeypatch)
    args = ["train", "arith", "--steps", "1", "--probe", "0", "--quiet"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert (work / "runs" / "organisms" / "arith" / "training_log.json").is_file()
    assert "runs/organisms/arith" in out.stderr
    assert not shipped.exists()
    out = CliRunner().invoke(cli, [*args, "--write-shipped"])
    assert out.exit_code == 0, out.output
    assert (shipped / "arith" / "training_log.json").is_file() and str(shipped / "arith") in out.stderr
    both = CliRunner().invoke(cli, [*args, "--write-shipped", "--out", "elsewhere"])
    assert both.exit_code == 2 and "drop --out, or drop --write-shipped" in both.output


def test_eval_writes_a_run_folder_unless_asked_to_rewrite_the_shipped_card(tmp_path, monkeypatch):
    import organisms._card

    card = organisms.load("arith").card
    written = []
    monkeypatch.setattr(
        # the card text it returns becomes the cached organism's card: hand back the one it has
        organisms._card,
        "write_card",
        lambda name, folder, measured: written.append(folder) or organisms.load(name).card,
    )
    monkeypatch.chdir(tmp_path)  # the shipped card is safe: writing it is faked above
    out = CliRunner().invoke(cli, ["eval", "arith", "--n", "4", "--json"])
    assert out.exit_code == 0, out.output
    assert written == []  # the shipped card is not rewritten
    folder = tmp_path / "runs" / "organisms" / "arith"
    assert json.loads((folder / "eval.json").read_text())["rows"] == json.loads(out.stdout)["rows"]
    measured = (folder / "measured.md").read_text()
    assert measured.startswith(organisms._card.MEASURED_START) and "| greedy accuracy |" in measured
    assert "runs/organisms/arith/eval.json" in out.stderr
    out = CliRunner().invoke(cli, ["eval", "arith", "--n", "4", "--write-shipped"])
    assert out.exit_code == 0, out.output
    assert written == [organisms.load("arith").path]
    bad = CliRunner().invoke(cli, ["eval", "arith", "--n", "4", "--no-card", "--write-shipped"])
    assert bad.exit_code == 2 and "--no-card writes nothing" in bad.output
    assert organisms.load("arith").card == card  # the cached organism other tests use is as it was

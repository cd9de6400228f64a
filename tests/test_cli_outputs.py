"""Every command that writes a folder: one run per folder, an unwritable ``--out`` refused before any work, a trace
too long for the model refused before it loads, and unknown organisms answered from the registry."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from cot import load_trace
from cotscope._outputs import MARKER, claim_out
from cotscope.cli import cli, main

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "tests" / "data" / "arith_trace.json"


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("cotscope: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command gets as far as building a backend (loading the model)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    for module in ("resampling._cli", "anchors._main", "metrics._cli", "metrics._classify_cli"):
        monkeypatch.setattr(f"{module}.make_backend_from_options", refuse)


def fake_run(out: Path, command: str, config: dict, files: dict[str, str]) -> dict[str, bytes]:
    """A folder as ``command`` leaves it: its claim and its output files."""
    claim_out(out, command, config, force=False)
    for name, text in files.items():
        (out / name).write_text(text)
    return {name: (out / name).read_bytes() for name in files}


# -- one run per folder -----------------------------------------------------------------------------------------


def test_same_command_and_configuration_resumes_other_settings_are_refused(tmp_path):
    fake_run(tmp_path, "resample", {"seed": 0, "samples": 20}, {"rollouts.parquet": "rows", "run.json": "{}"})
    claim_out(tmp_path, "resample", {"seed": 0, "samples": 20}, force=False)  # a resume: nothing removed
    assert (tmp_path / "rollouts.parquet").read_text() == "rows"
    with pytest.raises(click.UsageError, match=r"other settings \(samples 20, now 30\).*--force"):
        claim_out(tmp_path, "resample", {"seed": 0, "samples": 30}, force=False)
    assert (tmp_path / "rollouts.parquet").read_text() == "rows"
    with pytest.raises(click.UsageError, match=r"another command's results.*--force"):
        claim_out(tmp_path, "faithfulness", {"seed": 0}, force=False)


def test_force_replaces_the_whole_earlier_run_and_keeps_other_files(tmp_path):
    files = {"importance.parquet": "t", "report.html": "r", "rollouts.parquet": "x", "run.json": "{}"}
    fake_run(tmp_path, "importance", {"trace": "a"}, files)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "rows.parquet").write_text("cached")
    claim_out(tmp_path, "import thought-anchors", {"problem": "p"}, force=True)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".cache", MARKER, "notes.txt"]  # no file of the importance run beside the new one
    assert json.loads((tmp_path / MARKER).read_text())["command"] == "import thought-anchors"


def test_a_folder_written_before_the_claim_is_judged_by_its_files(tmp_path):
    trace = load_trace(TRACE)
    trace.save(tmp_path / "trace.json")
    (tmp_path / "importance.parquet").write_text("t")
    claim_out(tmp_path, "importance", {"trace": trace.id}, force=False)  # its own trace: a resume
    other = type(trace)(prompt="q", cot="Another chain of thought.")
    (tmp_path / MARKER).unlink()
    with pytest.raises(click.UsageError, match="another trace"):
        claim_out(tmp_path, "importance", {"trace": other.id}, force=False)
    with pytest.raises(
        click.UsageError, match=r"another command's results \(importance.parquet, trace.json\)"
    ):
        claim_out(tmp_path, "resample", {"trace": trace.id}, force=False)


def test_resample_into_an_importance_run_is_refused_before_the_model_loads(tmp_path, capsys, no_model):
    before = fake_run(tmp_path, "importance", {"trace": "t"}, {"importance.parquet": "t", "report.html": "r"})
    code, err = run(["resample", "--trace", TRACE, "--out", tmp_path, "-q"], capsys)
    assert code == 2 and "another command's results (cotscope importance" in one_line(err)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_faithfulness_and_importance_do_not_replace_each_others_report(tmp_path, capsys, no_model):
    before = fake_run(tmp_path, "importance", {"trace": "t"}, {"importance.parquet": "t", "report.html": "r"})
    code, err = run(["faithfulness", "--n-items", "2", "--out", tmp_path, "-q"], capsys)
    assert code == 2 and "--force" in one_line(err)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    other = tmp_path / "faith"
    fake_run(other, "faithfulness", {"seed": 0}, {"metrics.parquet": "m", "report.html": "r"})
    code, err = run(["importance", "--trace", TRACE, "--out", other, "-q"], capsys)
    assert code == 2 and "cotscope faithfulness" in one_line(err)
    assert (other / "report.html").read_text() == "r"


def test_import_thought_anchors_into_another_run_is_refused(tmp_path, capsys, problem_dirs):
    before = fake_run(tmp_path, "importance", {"trace": "t"}, {"importance.parquet": "t", "trace.json": "{}"})
    code, err = run(["import", "thought-anchors", problem_dirs[0], "--out", tmp_path], capsys)
    assert code == 2 and "another command's results" in one_line(err)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_stego_experiment_with_other_settings_is_refused(tmp_path, capsys):
    config = {"name": "blind-decode", "n": 3, "seed": 0, "samples": None, "probe": None}
    fake_run(tmp_path, "stego experiment", config, {"summary.parquet": "s"})
    code, err = run(["stego", "experiment", "blind-decode", "--n", "4", "--out", tmp_path], capsys)
    assert code == 2 and "other settings" in one_line(err)
    assert (tmp_path / "summary.parquet").read_text() == "s"


@pytest.mark.slow
def test_resample_resumes_the_same_settings_and_refuses_others(tmp_path, capsys):
    args = [
        "resample",
        "--samples",
        "2",
        "--positions",
        "0",
        "--max-new-tokens",
        "8",
        "--out",
        tmp_path,
        "-q",
    ]
    assert run(args, capsys)[0] == 0
    rows = (tmp_path / "rollouts.parquet").read_bytes()
    code, err = run([*args, "--seed", "1"], capsys)
    assert code == 2 and "other settings (seed 0, now 1)" in one_line(err)
    assert (tmp_path / "rollouts.parquet").read_bytes() == rows
    assert run([*args, "--batch-size", "7"], capsys)[0] == 0  # speed settings are no other configuration
    assert run([*args, "--seed", "1", "--force"], capsys)[0] == 0
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert run_json["seed"] == 1


# -- an unwritable --out, before any work -------------------------------------------------------------------------


def unwritable_outs(tmp_path: Path) -> list[tuple[Path, str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [(Path("/dev/null"), "not a folder"), (a_file / "sub", "under a file")]
    if Path("/sys").is_dir() and _sysfs_refuses():
        cases.append((Path("/sys"), "Permission denied"))  # sysfs refuses new files even to root
    return cases


def _sysfs_refuses() -> bool:
    try:
        (Path("/sys") / ".cotscope-probe").write_bytes(b"")
    except OSError:
        return True
    (Path("/sys") / ".cotscope-probe").unlink()
    return False


@pytest.mark.parametrize(
    "command",
    [
        ["resample", "--trace", TRACE],
        ["importance", "--trace", TRACE],
        ["faithfulness", "--n-items", "2"],
        ["stego", "experiment", "swap-cot", "--n", "2"],
        ["receiver-heads", "--trace", TRACE],
    ],
    ids=lambda c: c[0] if c[0] != "stego" else "stego-experiment",
)
def test_an_unwritable_out_is_one_line_before_any_work(command, tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.setattr("steganography._experiments.EXPERIMENTS", {}, raising=True)  # no experiment may start
    for out, reason in unwritable_outs(tmp_path):
        target = out / "heads.json" if command[0] == "receiver-heads" else out
        code, err = run([*command, "--out", target], capsys)
        line = one_line(err)
        assert code == 2 and str(out) in line and reason in line, line


def test_import_thought_anchors_into_an_unwritable_out(tmp_path, capsys, problem_dirs):
    for out, reason in unwritable_outs(tmp_path):
        code, err = run(["import", "thought-anchors", problem_dirs[0], "--out", out], capsys)
        line = one_line(err)
        assert code == 2 and str(out) in line and reason in line, line


def test_a_read_only_folder_is_refused_with_the_fix(tmp_path, monkeypatch):
    """Tests run as root, where chmod does not stop a write: the probe write fails as it does for another user."""
    real_write = Path.write_bytes

    def read_only(self, data):
        if self.parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(
        click.UsageError, match=rf"cannot write into --out {tmp_path} \(Permission denied\); choose"
    ):
        claim_out(tmp_path, "resample", {"seed": 0}, force=False)
    assert not (tmp_path / MARKER).exists()


# -- a trace too long for the model, before the model loads ---------------------------------------------------


@pytest.fixture(scope="module")
def long_traces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    data = load_trace(TRACE).to_dict()
    paths = {}
    for name, repeats in {"huge": 30_000, "long": 12}.items():  # 4.6 MB; 1,867 characters, 1,120 tokens
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps({**data, "id": "", "cot": (data["cot"] + " ") * repeats}))
    return paths


@pytest.mark.parametrize("command", [["importance", "--trace"], ["resample", "--trace"], ["classify"]])
def test_a_trace_longer_than_the_context_is_one_line_before_the_model_loads(
    command, long_traces, tmp_path, capsys, no_model, monkeypatch
):
    import transformers

    def no_full_tokenisation(*args, **kwargs):
        raise AssertionError("the huge trace was tokenised")

    for name, needle in {"huge": "characters of prompt and CoT, so at least", "long": "1,120 tokens"}.items():
        with monkeypatch.context() as patch:
            if name == "huge":
                patch.setattr(transformers.AutoTokenizer, "from_pretrained", no_full_tokenisation)
            out = [] if command[0] == "classify" else ["--out", tmp_path / "o"]
            code, err = run([*command, long_traces[name], *out], capsys)
        line = one_line(err)
        assert code == 2 and needle in line and "context is 384 tokens" in line and "shorter trace" in line, (
            line
        )


# -- unknown organisms, listed from the registry ----------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["resample", "importance", "faithfulness", "receiver-heads", "bench engine"]
)
def test_an_unknown_organism_lists_every_organism(command, tmp_path, capsys, no_model):
    import organisms

    extra = ["--trace", TRACE, "--out", tmp_path / "o.json"] if command == "receiver-heads" else []
    extra += ["--out", tmp_path / "o"] if command in ("resample", "importance", "faithfulness") else []
    code, err = run([*command.split(), "--model", "organism:nope", *extra], capsys)
    line = one_line(err)
    every = ", ".join(f"organism:{name}" for name in organisms.names())
    assert code == 2 and every in line and "did you mean 'organism:compare'" in line
    assert "organism:compare" in every


def test_load_model_lists_every_organism():
    from resampling import EngineInputError, load_model

    with pytest.raises(
        EngineInputError, match=r"organism:compare, organism:restore \(did you mean 'organism:compare'"
    ):
        load_model("organism:nope")


# -- one definition of each option ----------------------------------------------------------------------------


def _commands(group: click.Group, ctx: click.Context, prefix: str = ""):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, ctx, f"{prefix}{name} ")
        elif command is not None:
            yield f"{prefix}{name}", command


def test_a_flag_means_the_same_in_every_command():
    """A flag shared by commands has one parameter name, one set of spellings, and one kind of value."""
    ctx = click.Context(cli)
    seen: dict[str, tuple] = {}
    where: dict[str, str] = {}
    for path, command in _commands(cli, ctx):
        if path == "serve":  # the server's options are defined in resampling._serve
            continue
        for param in command.params:
            if not isinstance(param, click.Option) or param.name in ("help",):
                continue
            if param.opts[0] in (
                "--samples",
                "--seed",
                "--temperature",
                "--max-new-tokens",
                "--model",
                "--cache",
                "--quiet",
                "--json",
                "--out",
                "--force",
                "--batch-size",
                "--device",
                "--top-p",
            ):
                kind = (
                    param.name,
                    tuple(sorted(param.opts + param.secondary_opts)),
                    type(param.type).__name__,
                )
                key = (
                    param.opts[0]
                    if param.opts[0] != "--samples" or "-n" in param.opts
                    else "--samples (no -n)"
                )
                if key in seen:
                    assert seen[key] == kind, f"{key}: {where[key]} has {seen[key]}, {path} has {kind}"
                else:
                    seen[key], where[key] = kind, path
    assert {"--seed", "--model", "--out", "--force", "--quiet", "--cache"} <= set(seen)


def test_organisms_train_out_is_claimed_like_every_other_command(tmp_path, monkeypatch, capsys):
    """``--out`` holding another command's run, or another seed's organism, is refused before training unless
    --force; a file as --out fails in one line; the same organism and seed (a --resume to more steps) may go on."""
    import organisms._train

    trained = []

    def fake_train(name, *, seed, out, **kwargs):
        trained.append((name, seed, (Path(out) / "training_log.json").exists()))
        (Path(out) / "training_log.json").write_text("{}")
        return {"organism": name, "steps": kwargs["steps"], "wall_time_s": 0.0, "final_loss": 0.0}

    monkeypatch.setattr(organisms._train, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imp").mkdir()
    (tmp_path / "imp" / "importance.parquet").write_bytes(b"kept")
    base = ["organisms", "train", "arith", "--steps", "1", "--probe", "0", "--quiet"]
    code, err = run([*base, "--out", "imp"], capsys)
    assert code == 2 and "another command's results" in one_line(err) and "--force" in err
    assert trained == [] and (tmp_path / "imp" / "importance.parquet").read_bytes() == b"kept"

    assert run([*base, "--out", "run"], capsys)[0] == 0
    assert run([*base, "--out", "run", "--steps", "2", "--resume"], capsys)[0] == 0
    code, err = run([*base, "--out", "run", "--seed", "1"], capsys)
    assert code == 2 and "other settings (seed 0, now 1)" in one_line(err)
    assert len(trained) == 2
    assert trained[1] == ("arith", 0, True)  # the resumed run found its folder as it was
    assert run([*base, "--out", "run", "--seed", "1", "--force"], capsys)[0] == 0
    assert trained[-1] == ("arith", 1, False)  # the seed-0 run went before the seed-1 one started

    (tmp_path / "file").write_text("x")
    for bad in ("file", "file/sub"):
        code, err = run([*base, "--out", bad], capsys)
        assert code == 2 and "file" in one_line(err)
    assert len(trained) == 3

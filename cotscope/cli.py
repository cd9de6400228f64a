"""The ``cotscope`` command line: a thin layer over the library, one subcommand per library function.

Subcommands live next to the code they drive (``steganography/_cli.py``, ``organisms/_cli.py``, ...) and are
imported only when used, so ``cotscope --help`` stays fast and never imports torch.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import sys

import click

from cotscope import __version__

# name -> "module:attribute" of a click command or group, imported on first use.
_LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "split": ("cotscope._split_cli:split", "Split a trace's CoT into numbered sentences with roles."),
    "organisms": ("organisms._cli:organisms", "Model organisms: list, train, evaluate, show cards."),
    "stego": ("steganography._cli:stego", "Ciphers: encode, detect and break encoded reasoning."),
    "resample": ("resampling._cli:resample", "Resample every sentence position of a trace."),
    "serve": ("resampling._cli:serve", "Serve a model over an OpenAI-compatible completions API."),
    "bench": ("resampling._cli:bench", "Benchmarks (engine throughput)."),
    "importance": ("anchors._main:importance", "Thought-anchor importance of every sentence of a trace."),
    "intervene": (
        "anchors._branches_cli:intervene_command",
        "Insert a sentence off-policy or reach it on-policy, and roll out (Thought Branches).",
    ),
    "resilience": (
        "anchors._branches_cli:resilience_command",
        "Iterative resilience and counterfactual++ of sentences (Thought Branches).",
    ),
    "receiver-heads": ("anchors._main:receiver_heads_command", "Choose receiver heads over many traces."),
    "import": ("anchors._cli:import_group", "Import results from other tools (thought-anchors)."),
    "probes": (
        "anchors._probes_cli:probes_command",
        "Answer probes: where the answer is decodable in the activations.",
    ),
    "faithfulness": (
        "metrics._cli:faithfulness",
        "Faithfulness metrics of a model: report, tables, Inspect log.",
    ),
    "classify": (
        "metrics._classify_cli:classify_command",
        "Unfaithfulness verdicts for one trace, with evidence.",
    ),
    "validate": ("cotscope.cli:validate", "Validate methods against the organisms' planted ground truth."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands (``lazy``: name -> ("module:attribute", short help)) are imported when first
    used."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = _LAZY_COMMANDS if lazy is None else lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(name for name in self.lazy if self._available(name))
        return sorted(names)

    def _available(self, name: str) -> bool:
        module = self.lazy[name][0].split(":")[0]
        return importlib.util.find_spec(module.split(".")[0]) is not None and _module_exists(module)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        if name not in self.lazy or not self._available(name):
            return None
        module_name, attr = self.lazy[name][0].split(":")
        return getattr(importlib.import_module(module_name), attr, None)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in self.list_commands(ctx) if name in self.lazy]
        rows += [
            (name, (super().get_command(ctx, name).get_short_help_str()))  # type: ignore[union-attr]
            for name in super().list_commands(ctx)
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise click.UsageError(
                f"unknown command '{name}'{hint}; choose one of: {', '.join(self.list_commands(ctx))}", ctx
            )
        return super().resolve_command(ctx, args)


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cotscope")
def cli() -> None:
    """cotscope: which sentences of a chain of thought drive the answer, and is the chain of thought faithful?"""


_VALIDATE_COMMANDS: dict[str, tuple[str, str]] = {
    "anchors": (
        "anchors._main:validate_anchors_command",
        "Importance methods vs the sentences arith's ground truth makes load-bearing.",
    ),
    "branches": (
        "anchors._validate_branches:validate_branches_command",
        "Iterative resilience, CF++ and on/off-policy interventions vs arith's planted design.",
    ),
    "faithfulness": (
        "metrics._cli:validate_faithfulness_command",
        "Faithfulness metrics vs the organisms' planted rates.",
    ),
    "classifiers": (
        "metrics._classify_cli:validate_classifiers_command",
        "Unfaithfulness classifiers vs planted labels, against baselines.",
    ),
    "probes": (
        "metrics._probes_validate:validate_probes_command",
        "Answer probes on posthoc vs arith, against the resampling detectors.",
    ),
}


@click.group("validate", cls=LazyGroup, lazy=_VALIDATE_COMMANDS)
def validate() -> None:
    """Check methods against the ground truth planted in the organisms."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from cot import TraceError

    errors: list[type[BaseException]] = [TraceError, FileNotFoundError]
    try:
        from resampling import EngineInputError

        errors.append(EngineInputError)
    except ImportError:
        pass
    return tuple(errors)


def _run_failures() -> tuple[type[BaseException], ...]:
    try:
        from resampling import RunFailedError
    except ImportError:
        return ()
    return (RunFailedError,)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Usage and input errors print one line naming the fix and exit with code 2, no traceback."""
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="cotscope", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        return 2
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "cotscope"
        message = exc.format_message().rstrip(".")
        click.echo(f"cotscope: error: {message} (see '{path} --help')", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"cotscope: error: {exc.format_message()}", err=True)
        return exc.exit_code if exc.exit_code else 1
    except click.exceptions.Abort:
        click.echo("cotscope: aborted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except _user_errors() as exc:
        click.echo(f"cotscope: error: {exc}", err=True)
        return 2
    except _run_failures() as exc:
        click.echo(f"cotscope: error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("cotscope: interrupted; finished work is saved and a rerun resumes it", err=True)
        return 130
    return 0


def echo_json(data: object) -> None:
    """Print ``data`` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

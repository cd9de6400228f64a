"""``cotscope organisms``: train, evaluate, list and show the shipped organisms."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cotscope import _options as flags

from ._registry import names, unknown_name_message

__all__ = ["organisms"]


def _check_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value not in names():
        raise click.BadParameter(unknown_name_message(value), ctx=ctx, param=param)
    return value


@click.group("organisms")
def organisms() -> None:
    """Small reasoning models with planted ground truth, shipped with cotscope."""


@organisms.command("list")
def list_cmd() -> None:
    """List the organisms, with their task and whether weights are present."""
    from ._load import WEIGHTS_DIR
    from ._registry import get_task

    for name in names():
        present = (WEIGHTS_DIR / name / "model.safetensors").is_file()
        mark = "" if present else "  (no weights: run `cotscope organisms train " + name + "`)"
        click.echo(f"{name:8s} {get_task(name).description.split('.')[0]}.{mark}")


@organisms.command("card")
@click.argument("name", callback=_check_name)
def card_cmd(name: str) -> None:
    """Print the model card of NAME."""
    from ._load import WEIGHTS_DIR

    path = WEIGHTS_DIR / name / "card.md"
    if not path.is_file():
        raise click.ClickException(f"no card for {name!r}; train it with: cotscope organisms train {name}")
    click.echo(path.read_text())


@organisms.command("train")
@click.argument("name", callback=_check_name)
@flags.seed_option(0, "Training seed (examples, initialisation, order).")
@click.option("--steps", default=None, type=int, help="Optimiser steps (default: the organism's setting).")
@flags.out_option("Output folder (default: shipped).", required=False)
@click.option("--probe", default=64, show_default=True, help="Fresh problems for the greedy-accuracy probe.")
@click.option("--resume", is_flag=True, help="Continue the model saved in the output folder up to --steps.")
@flags.int_option(
    "--threads", 1, "CPU threads; a run is bit-for-bit reproducible for a given seed and thread count."
)
@flags.quiet_option("No progress output.")
def train_cmd(
    name: str,
    seed: int,
    steps: int | None,
    out: Path | None,
    probe: int,
    resume: bool,
    threads: int,
    quiet: bool,
) -> None:
    """Train organism NAME from scratch on CPU and save weights, tokenizer, card and training log."""
    from cotscope._outputs import check_writable_dir

    from ._train import train

    if out is not None:
        check_writable_dir(out)
    echo = (lambda _msg: None) if quiet else None
    log = train(name, seed=seed, steps=steps, out=out, probe=probe, resume=resume, threads=threads, echo=echo)
    if quiet:
        click.echo(json.dumps({k: log[k] for k in ("organism", "steps", "wall_time_s", "final_loss")}))


@organisms.command("eval")
@click.argument("name", callback=_check_name)
@click.option("--n", "n", default=200, show_default=True, help="Fresh problems per measurement.")
@flags.json_option("Print the measurements as JSON.")
@click.option("--no-card", is_flag=True, help="Do not rewrite the measured section of the card.")
def eval_cmd(name: str, n: int, as_json: bool, no_card: bool) -> None:
    """Measure NAME against its planted rates and rewrite the measured section of its card."""
    from ._eval import evaluate

    result = evaluate(name, n=n, write_card=not no_card)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"organism {name} (n={n}, {result['wall_time_s']} s)")
    for col in ("metric", "measured", "95% interval", "target", "pass"):
        table.add_column(col)
    for row in result["rows"]:
        v = row["value"]
        shown = f"{v:.3f}" if isinstance(v, float) else str(v)
        iv = row.get("interval")
        ok = "" if "pass" not in row else ("yes" if row["pass"] else "NO")
        table.add_row(row["metric"], shown, f"{iv[0]:.3f}..{iv[1]:.3f}" if iv else "", str(row["target"]), ok)
    Console().print(table)

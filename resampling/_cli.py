"""``cotscope resample``, ``cotscope serve`` and ``cotscope bench``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from resampling._model import DEFAULT_MODEL

SEED = click.IntRange(min=0, max=2**63 - 1)
"""The type of every ``--seed`` option: a 64-bit seed, refused in one line before any work when out of range."""


def default_trace(model_id: str, seed: int = 0):
    """The fixed example trace of an organism (its task's example for ``seed``)."""
    from cot import Trace
    from resampling._errors import EngineInputError

    if not model_id.startswith("organism:"):
        raise EngineInputError(f"model '{model_id}' has no example trace; give one with --trace FILE")
    import organisms

    name = model_id.split(":", 1)[1]
    example = organisms.get_task(name).sample(seed)
    return Trace.from_completion(
        "<think>\n" + example.completion,
        prompt=example.messages,
        metadata={"gt_answer": example.answer, "source": f"{model_id} task example, seed {seed}"},
    )


def backend_options(f):
    options = [
        click.option(
            "--model",
            "model_id",
            default=DEFAULT_MODEL,
            show_default=True,
            help="organism:NAME, a local folder of HF weights, or a hub id.",
        ),
        click.option(
            "--backend", type=click.Choice(["hf", "vllm", "openai"]), default="hf", show_default=True
        ),
        click.option(
            "--base-url", multiple=True, help="openai backend: server URL(s), e.g. http://127.0.0.1:8000/v1."
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=512,
            show_default=True,
            help="Rollouts decoded together (hf); does not change the results.",
        ),
        click.option("--device", default=None, help="cpu or cuda (default: cuda where available)."),
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
    ]
    for option in reversed(options):
        f = option(f)
    return f


_OPENAI_FIXED = {"self", "cls", "model", "model_id", "endpoints", "base_url", "kwargs"}


def parse_backend_options(backend: str, items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to keyword arguments of the backend (values parsed as JSON where they are JSON)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise click.BadParameter(
                f"'{item}' is not KEY=VALUE, e.g. --backend-option max_model_len=8192",
                param_hint="--backend-option",
            )
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = value
    if not out:
        return out
    if backend == "hf":
        raise click.BadParameter(
            "the hf backend takes no extra options (it has --device and --batch-size); "
            "--backend-option is for vllm and openai",
            param_hint="--backend-option",
        )
    if backend == "openai":
        import inspect

        from resampling._openai import OpenAIBackend

        known = (
            set(inspect.signature(OpenAIBackend.__init__).parameters)
            | set(inspect.signature(OpenAIBackend.from_model_id).parameters)
        ) - _OPENAI_FIXED
        unknown = sorted(set(out) - known)
        if unknown:
            raise click.BadParameter(
                f"the openai backend has no option {', '.join(unknown)}; choose from: {', '.join(sorted(known))}",
                param_hint="--backend-option",
            )
    return out


def make_backend_from_options(
    model_id: str,
    backend: str,
    base_url: tuple[str, ...],
    batch_size: int,
    device,
    backend_option: tuple[str, ...] = (),
):
    """The backend that ``backend_options`` describe; ``--backend-option`` settings go to its constructor."""
    from resampling._backend import make_backend

    kwargs: dict[str, Any] = {"model_id": model_id}
    extra = parse_backend_options(backend, backend_option)
    if backend == "hf":
        kwargs.update(batch_size=batch_size, device=device)
    elif backend == "openai":
        if not base_url:
            raise click.BadParameter(
                "the openai backend needs --base-url URL (one or more)", param_hint="--base-url"
            )
        kwargs.update(endpoints=list(base_url))
    kwargs.update(extra)
    return make_backend(backend, **kwargs)


def warn_batch_invariance(backend) -> None:
    """One line on stderr where the same seed may give other rollouts in another batch (see _reproducibility)."""
    from resampling._reproducibility import batch_invariance_warning

    warning = batch_invariance_warning(backend)
    if warning:
        click.echo(f"cotscope: warning: {warning}", err=True)


@click.command("resample")
@backend_options
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=True, path_type=Path),
    default=None,
    help="Trace file (JSON, text completion, or thought-anchors folder); default: the organism's example.",
)
@click.option(
    "--samples",
    "-n",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Continuations per sentence position.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: rollouts.parquet and run.json.",
)
@click.option(
    "--forced-answer", is_flag=True, help="Also probe the answer distribution right after each prefix."
)
@click.option("--positions", default=None, help="Comma-separated positions (default: all, 0..K).")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.6, show_default=True)
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=0.95, show_default=True)
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--min-chars",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Merge sentences shorter than this into the next (thought-anchors convention).",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run cache folder (default: OUT/.cache). Reruns reuse it and compute only what is missing.",
)
@click.option(
    "--flush-every",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Rollouts buffered before they are written to the cache.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def resample(
    model_id,
    backend,
    base_url,
    batch_size,
    device,
    backend_option,
    trace_file,
    samples,
    seed,
    out,
    forced_answer,
    positions,
    temperature,
    top_p,
    top_k,
    max_new_tokens,
    min_chars,
    cache_dir,
    flush_every,
    quiet,
) -> None:
    """Resample every sentence position of a trace: writes OUT/rollouts.parquet and OUT/run.json."""
    from cot import load_trace
    from resampling._engine import Engine
    from resampling._plan import SamplingParams
    from resampling._prefix import TracePrefixes

    trace = load_trace(trace_file) if trace_file is not None else default_trace(model_id)
    pos = None
    if positions:
        try:
            pos = [int(p) for p in positions.split(",")]
        except ValueError:
            raise click.BadParameter(
                f"'{positions}' is not a comma-separated list of integers", param_hint="--positions"
            ) from None
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens)
    be = make_backend_from_options(model_id, backend, base_url, batch_size, device, backend_option)
    warn_batch_invariance(be)
    tokenizer = be.tokenizer
    prefixes = TracePrefixes.build(trace, tokenizer, min_chars=min_chars)
    plan = prefixes.plan(samples, seed, params, positions=pos, forced_answer=forced_answer)
    engine = Engine(be, cache_dir or out / ".cache", flush_every=flush_every, quiet=quiet)
    header = {
        "trace": trace.to_dict(),
        "sentences": [s.text for s in prefixes.sentences],
        "seed": seed,
        "samples": samples,
    }
    result = engine.run(plan, truths={trace.id: trace.metadata.get("gt_answer")}, out=out, header=header)
    s = result.stats
    click.echo(
        f"{out / 'rollouts.parquet'}: {result.rollouts.height} rollouts ({s['rollouts_new']} new, "
        f"{s['rollouts_cached']} cached, {s['errors']} errors) over {len(prefixes.sentences) + 1} positions; "
        f"{s['rollouts_per_s']:.1f} rollouts/s, {s['tokens_per_s']:.0f} tok/s",
        err=quiet,
    )
    report_health(result.rollouts)


def report_health(rollouts) -> None:
    """Warn (stderr) about rollouts that say nothing; fail in one line when most rollouts failed."""
    from resampling._health import run_health

    health = run_health(rollouts)
    for line in health.warnings():
        click.echo(f"cotscope: warning: {line}", err=True)
    health.check()


@click.group("bench")
def bench() -> None:
    """Benchmarks that compare ways of doing the same work side by side, in one process."""


WAYS_DEFAULT = ("naive", "generate_n", "engine")


@bench.command("engine")
@click.option("--model", "model_id", default=DEFAULT_MODEL, show_default=True)
@click.option(
    "--real-vocab",
    "real_vocab",
    type=click.Choice(["tiny", "small", "base"]),
    default=None,
    help="Instead of --model, a random-weight Qwen2 with DeepSeek's 128k tokenizer: tiny (hidden 128, 2 layers), "
    "small (256, 4) or base (512, 8). Needs --trace.",
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Trace file, thought-anchors problem folder, or a folder of them (the first is used); "
    "default: the organism's example.",
)
@click.option(
    "--positions",
    type=click.IntRange(min=1),
    default=None,
    help="Use this many sentence positions, evenly spaced (default: all).",
)
@click.option("--samples", "-n", type=click.IntRange(min=1), default=None, help="Samples per position.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None)
@click.option("--temperature", type=click.FloatRange(min=0), default=None, help="Default 1.0.")
@click.option(
    "--ways",
    default=",".join(WAYS_DEFAULT),
    show_default=True,
    help="Comma-separated subset of naive, generate_n, engine.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Engine rows per batch, at most.",
)
@click.option(
    "--kv-budget-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Engine decode memory budget (KV cache + logits of the rows decoded together); default 1 GB on CPU, "
    "half the free memory on CUDA.",
)
@click.option(
    "--repeats", type=click.IntRange(min=1), default=None, help="Repeated runs; medians are reported."
)
@click.option("--quick", is_flag=True, help="Small settings that finish in under a minute here.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--device", default=None)
def bench_engine(
    model_id,
    real_vocab,
    trace_path,
    positions,
    samples,
    max_new_tokens,
    temperature,
    ways,
    batch_size,
    kv_budget_gb,
    repeats,
    quick,
    as_json,
    device,
) -> None:
    """Naive per-rollout generate vs generate(num_return_sequences=N) vs the engine, on one trace."""
    from resampling._bench import BenchConfig, format_report, run_engine_bench
    from resampling._errors import EngineInputError
    from resampling._synthetic import SIZES

    if real_vocab and trace_path is None:
        raise click.BadParameter(
            "a real-vocabulary model needs a real trace: add --trace FILE|DIR (e.g. a thought-anchors folder)",
            param_hint="--trace",
        )
    cfg = BenchConfig.quick() if quick else BenchConfig()
    for name, value in (
        ("samples", samples),
        ("max_new_tokens", max_new_tokens),
        ("repeats", repeats),
        ("temperature", temperature),
        ("positions", positions),
        ("kv_budget_gb", kv_budget_gb),
    ):
        if value is not None:
            setattr(cfg, name, value)
    cfg.batch_size = batch_size
    cfg.ways = tuple(w.strip() for w in ways.split(",") if w.strip())
    try:
        report = run_engine_bench(
            model_id,
            cfg,
            device=device,
            trace=trace_path,
            real_vocab=SIZES[real_vocab] if real_vocab else None,
            announce=None if as_json else lambda text: click.echo(text + "\nrunning ..."),
        )
    except EngineInputError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report, work=False))


@bench.command("sampler")
@click.option("--rows", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--vocab", type=click.IntRange(min=2), default=129_280, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_sampler(rows, vocab, repeats, as_json) -> None:
    """The sampler's time beside the output projection it follows, and its float32 noise against float64."""
    from resampling._bench import format_sampler_report, run_sampler_bench

    report = run_sampler_bench(rows=rows, vocab=vocab, repeats=repeats)
    click.echo(json.dumps(report, indent=2) if as_json else format_sampler_report(report))


def _serve_command():
    try:
        from resampling._serve import serve as command
    except ImportError:  # pragma: no cover - the server module ships with the package
        return None
    return command


serve = _serve_command()


@bench.command("client")
@click.option(
    "--servers", type=click.IntRange(min=1), default=4, show_default=True, help="Loopback stub servers."
)
@click.option("--requests", "n_requests", type=click.IntRange(min=1), default=4000, show_default=True)
@click.option(
    "--in-flight",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Most requests in flight.",
)
@click.option(
    "--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Medians are reported."
)
@click.option(
    "--prompt-tokens", type=click.IntRange(min=1), default=64, show_default=True, help="Tokens per prompt."
)
@click.option(
    "--kill-one",
    is_flag=True,
    help="Also kill one server (SIGKILL) while requests are in flight there, and compare the rows.",
)
@click.option("--json", "as_json", is_flag=True)
def bench_client(servers, n_requests, in_flight, repeats, prompt_tokens, kill_one, as_json) -> None:
    """The openai backend's own cost against the official openai SDK's, on instant stub servers."""
    from resampling._bench_client import (
        ClientBenchConfig,
        check_failover_size,
        failover_problems,
        format_client_report,
        run_client_bench,
        run_failover_check,
    )
    from resampling._errors import EngineInputError

    failover_requests = min(n_requests, 2000)
    if kill_one:
        try:
            check_failover_size(servers, failover_requests)
        except EngineInputError as exc:
            raise click.UsageError(str(exc)) from None
    cfg = ClientBenchConfig(servers, n_requests, in_flight, repeats=repeats, prompt_tokens=prompt_tokens)
    report = run_client_bench(cfg)
    if kill_one:
        report["failover"] = run_failover_check(servers=servers, requests=failover_requests)
    click.echo(json.dumps(report, indent=2) if as_json else format_client_report(report))
    if kill_one and (problems := failover_problems(report["failover"])):
        raise click.ClickException("the failover check failed: " + "; ".join(problems))

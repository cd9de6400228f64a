"""``cotscope resample``, ``cotscope serve`` and ``cotscope bench``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cotscope import _options as flags

backend_options = flags.backend_options
"""Re-exported as ``resampling.backend_options``."""


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
@flags.backend_options
@flags.trace_option(
    "Trace file (JSON, text completion, or thought-anchors folder); default: the organism's example."
)
@flags.samples_option(20, "Continuations per sentence position.")
@flags.seed_option(0)
@flags.out_option("Output folder: rollouts.parquet and run.json.")
@click.option(
    "--forced-answer", is_flag=True, help="Also probe the answer distribution right after each prefix."
)
@click.option("--positions", default=None, help="Comma-separated positions (default: all, 0..K).")
@flags.temperature_option(0.6)
@flags.top_p_option(0.95)
@flags.int_option("--top-k", 0, minimum=0)
@flags.max_new_tokens_option(256)
@flags.int_option(
    "--min-chars",
    10,
    "Merge sentences shorter than this into the next (thought-anchors convention).",
    minimum=0,
)
@flags.cache_option(
    help="Run cache folder (default: OUT/.cache). Reruns reuse it and compute only what is missing."
)
@flags.int_option("--flush-every", 64, "Rollouts buffered before they are written to the cache.")
@flags.force_option()
@flags.quiet_option("No progress bar.")
def resample(
    model_id,
    backend,
    backend_settings,
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
    force,
    quiet,
) -> None:
    """Resample every sentence position of a trace: writes OUT/rollouts.parquet and OUT/run.json."""
    from cot import load_trace
    from cotscope._context import check_trace_fits
    from cotscope._outputs import claim_out
    from resampling._engine import Engine
    from resampling._plan import SamplingParams
    from resampling._prefix import TracePrefixes

    trace = load_trace(trace_file) if trace_file is not None else default_trace(model_id)
    check_trace_fits(trace, model_id)
    pos = None
    if positions:
        try:
            pos = [int(p) for p in positions.split(",")]
        except ValueError:
            raise click.BadParameter(
                f"'{positions}' is not a comma-separated list of integers", param_hint="--positions"
            ) from None
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens)
    config = {"model": model_id, "backend": backend, "trace": trace.id, "samples": samples, "seed": seed}
    config.update(forced_answer=forced_answer, positions=pos, min_chars=min_chars, sampling=params.to_dict())
    claim_out(out, "resample", config, force=force)
    be = make_backend_from_options(model_id, backend, **backend_settings)
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
@flags.model_option()
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
@flags.int_option("--positions", None, "Use this many sentence positions, evenly spaced (default: all).")
@flags.samples_option(None, "Samples per position.")
@flags.max_new_tokens_option(None)
@flags.temperature_option(None, "Default 1.0.")
@click.option(
    "--ways",
    default=",".join(WAYS_DEFAULT),
    show_default=True,
    help="Comma-separated subset of naive, generate_n, engine.",
)
@flags.batch_size_option("Engine rows per batch, at most.")
@flags.float_option(
    "--kv-budget-gb",
    None,
    "Engine decode memory budget (KV cache + logits of the rows decoded together); default 1 GB on CPU, "
    "half the free memory on CUDA.",
    min=0,
    min_open=True,
)
@flags.float_option(
    "--logit-std",
    None,
    "With --real-vocab: standard deviation of next-token logits (default 6, a few tokens in the nucleus, as a "
    "trained model); 0.45 at base size is a fresh initialisation, nearly uniform: the sampler's worst case.",
    min=0,
    min_open=True,
)
@flags.int_option("--repeats", None, "Repeated runs; medians are reported.")
@click.option(
    "--forced-answer",
    is_flag=True,
    help="Also run the forced-answer probes of the same positions through the engine, each probe's cue prefilled "
    "on the shared prefix against each probe prefilled whole (prefill tokens counted by the backend, wall time).",
)
@flags.int_option("--forced-max-new-tokens", None, "New tokens of a forced-answer probe (default 16).")
@click.option("--quick", is_flag=True, help="Small settings that finish in under a minute here.")
@flags.json_option()
@flags.device_option(None)
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
    logit_std,
    repeats,
    forced_answer,
    forced_max_new_tokens,
    quick,
    as_json,
    device,
) -> None:
    """Naive per-rollout generate vs generate(num_return_sequences=N) vs the engine, on one trace."""
    from resampling._bench import BenchConfig, format_report, run_engine_bench
    from resampling._errors import EngineInputError
    from resampling._synthetic import SIZES

    if logit_std is not None and not real_vocab:
        raise click.BadParameter(
            "--logit-std shapes a real-vocabulary model: add --real-vocab tiny|small|base"
        )
    if forced_max_new_tokens is not None and not forced_answer:
        raise click.BadParameter(
            "--forced-max-new-tokens sets the forced-answer probes' budget: add --forced-answer",
            param_hint="--forced-max-new-tokens",
        )
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
        ("logit_std", logit_std),
        ("forced_max_new_tokens", forced_max_new_tokens),
    ):
        if value is not None:
            setattr(cfg, name, value)
    cfg.batch_size = batch_size
    cfg.forced_answer = forced_answer
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
@flags.int_option("--rows", 64)
@flags.int_option("--vocab", 129_280, minimum=2)
@flags.int_option("--repeats", 7)
@flags.int_option(
    "--check-chunks", 20, "Chunks of 256 rows in the float32-vs-float64 noise check (0: skip it).", minimum=0
)
@flags.json_option()
@flags.device_option(
    "Where the timed tensors live: cpu, cuda, cuda:1 (the noise check runs on the CPU).", default="cpu"
)
def bench_sampler(rows, vocab, repeats, check_chunks, as_json, device) -> None:
    """The sampler's time beside the output projection it follows, and its float32 noise against float64."""
    from resampling._bench import format_sampler_report, run_sampler_bench

    report = run_sampler_bench(
        rows=rows, vocab=vocab, repeats=repeats, check_chunks=check_chunks, device=device
    )
    click.echo(json.dumps(report, indent=2) if as_json else format_sampler_report(report))


@bench.command("study")
@flags.int_option("--n-traces", 20, "Organism traces in the dataset.")
@flags.samples_option(10, "Rollouts per position.", minimum=2)
@flags.int_option("--repeats", 3)
@flags.seed_option(0, "First problem seed, and the rollouts' seed.")
@click.option(
    "--adaptive", is_flag=True, help="Both sides adaptive (rounds; --samples is the most a position gets)."
)
@flags.json_option()
def bench_study(n_traces, samples, repeats, seed, adaptive, as_json) -> None:
    """A dataset as one study run against the single-trace pipeline looped over it (same rows), on organism:arith."""
    from anchors.bench_study import format_study_bench, run_study_bench

    report = run_study_bench(
        n_traces=n_traces, samples=samples, repeats=repeats, seed=seed, adaptive=adaptive
    )
    click.echo(json.dumps(report, indent=2) if as_json else format_study_bench(report))


@bench.command("adaptive")
@flags.int_option("--n-traces", 20, "Clean planted-error traces (those validate anchors picks).")
@flags.samples_option(
    50, "Rollouts per position of the fixed run; the most a position gets adaptively.", minimum=2
)
@flags.seed_option(1000, "First problem seed, and the rollouts' seed.")
@click.option(
    "--sparse",
    type=click.IntRange(min=2),
    default=None,
    metavar="K",
    help="Also run adaptive with sparse positions (every K-th first) and report it beside.",
)
@click.option(
    "--rank",
    type=click.Choice(["separated", "final"]),
    default="separated",
    show_default=True,
    help="When a top sentence's rank is settled (anchors.AdaptiveOptions.rank): once its interval is apart "
    "from every other sentence's, or only at the last look.",
)
@click.option(
    "--real-vocab",
    "real_vocab",
    type=click.Choice(["tiny", "small", "base"]),
    default=None,
    help="Instead: wall time on a random-weight model of DeepSeek's 129k vocabulary over --trace (no planted "
    "truth; rollouts, wall time per rollout, recall and top-1 against the fixed run).",
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(exists=True),
    default=None,
    help="With --real-vocab: a trace file or thought-anchors problem folder.",
)
@flags.int_option("--max-new-tokens", 16, "With --real-vocab: tokens per rollout.")
@flags.int_option("--repeats", 1, "With --real-vocab: runs of both sides (medians reported).")
@flags.json_option()
def bench_adaptive(
    n_traces, samples, seed, sparse, rank, real_vocab, trace_path, max_new_tokens, repeats, as_json
) -> None:
    """Adaptive sampling against a fixed run with the same seeds: rollouts, wall time, recall, top-1, A/A."""
    from anchors.bench_adaptive import (
        format_adaptive_bench,
        format_adaptive_wall_bench,
        run_adaptive_bench,
        run_adaptive_wall_bench,
    )
    from resampling._synthetic import SIZES

    if (real_vocab is None) != (trace_path is None):
        raise click.BadParameter(
            "--real-vocab and --trace go together: a real-vocabulary model needs a real trace",
            param_hint="--real-vocab/--trace",
        )
    if real_vocab is not None:
        if sparse is not None:
            raise click.BadParameter("--sparse is not measured with --real-vocab", param_hint="--sparse")
        report = run_adaptive_wall_bench(
            trace_path, real_vocab=SIZES[real_vocab], samples=samples, max_new_tokens=max_new_tokens,
            seed=seed, rank=rank, repeats=repeats,
        )  # fmt: skip
        click.echo(json.dumps(report, indent=2) if as_json else format_adaptive_wall_bench(report))
        return
    report = run_adaptive_bench(n_traces=n_traces, samples=samples, seed=seed, sparse=sparse, rank=rank)
    click.echo(json.dumps(report, indent=2) if as_json else format_adaptive_bench(report))


def _serve_command():
    try:
        from resampling._serve import serve as command
    except ImportError:  # pragma: no cover - the server module ships with the package
        return None
    return command


serve = _serve_command()


@bench.command("client")
@flags.int_option("--servers", 4, "Loopback stub servers.")
@flags.int_option("--requests", 4000, name="n_requests")
@flags.int_option("--in-flight", 1024, "Most requests in flight.")
@flags.int_option("--repeats", 3, "Medians are reported.")
@flags.int_option("--prompt-tokens", 64, "Tokens per prompt.")
@click.option(
    "--kill-one",
    is_flag=True,
    help="Also kill one server (SIGKILL) while requests are in flight there, and compare the rows.",
)
@flags.json_option()
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

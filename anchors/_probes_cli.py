"""``cotscope probes``: answer probes (residual stream at every sentence boundary and layer) for one model."""

from __future__ import annotations

from pathlib import Path

import click

from cotscope import _options as flags

__all__ = ["probes_command"]

FIRST_SEED = 10**9
"""First task seed of the problems an organism is probed on (training used seeds below it)."""


@click.command("probes")
@flags.model_option()
@click.option(
    "--n-traces",
    type=click.IntRange(min=4),
    default=200,
    show_default=True,
    help="Organisms: problems to write a trace for (one trace each, temperature 1.0).",
)
@flags.trace_option(
    "Traces the model wrote (files as `cotscope importance --trace` reads them); required for a model that is "
    "not an organism. Even and odd positions in the list form the two halves of the split.",
    multiple=True,
    exists=True,
    dir_okay=False,
)
@flags.out_option("Folder for probes.parquet, map.parquet, traces.parquet, heatmap.png, summary.json.")
@flags.seed_option(
    FIRST_SEED, "Organisms: first task seed (one problem per seed from it); also the control's seed."
)
@click.option(
    "--bins", type=click.IntRange(1, 20), default=4, show_default=True, help="Relative-position bins."
)
@flags.float_option(
    "--threshold",
    0.5,
    "Probability at which the answer counts as decodable.",
    min=0.0,
    max=1.0,
    min_open=True,
)
@flags.device_option()
@flags.force_option()
@flags.quiet_option()
def probes_command(
    model_id: str,
    n_traces: int,
    trace_file: tuple[Path, ...],
    out: Path,
    seed: int,
    bins: int,
    threshold: float,
    device: str | None,
    force: bool,
    quiet: bool,
) -> None:
    """Train answer probes at every sentence boundary and layer of the model's own traces; write the
    layer x position accuracy map (with controls and the logit lens) and each trace's first decodable position."""
    from anchors._probes import answer_probes, write_probe_outputs
    from cot import load_trace
    from cotscope._outputs import claim_out
    from cotscope._progress import step

    if not trace_file and not model_id.startswith("organism:"):
        raise click.UsageError(
            f"{model_id} is not an organism, so there is no task to write traces for; give its traces with --trace"
        )
    config = {
        "model": model_id,
        "traces": [str(p.resolve()) for p in trace_file] or None,
        "n_traces": None if trace_file else n_traces,
        "seed": seed,
        "bins": bins,
        "threshold": threshold,
    }
    claim_out(out, "probes", config, force=force)
    log = (lambda m: None) if quiet else step
    from resampling import load_model

    log(f"loading {model_id}")
    loaded = load_model(model_id, device=device)
    if trace_file:
        traces = [load_trace(p) for p in trace_file]
        split = ["train" if i % 2 == 0 else "test" for i in range(len(traces))]
    else:
        traces, split = _organism_traces(loaded, model_id, n_traces, seed, device, log)
    keep = [i for i, t in enumerate(traces) if t.answer is not None and not t.truncated and t.cot.strip()]
    if len(keep) < len(traces):
        log(f"{len(traces) - len(keep)} of {len(traces)} traces have no final answer or no CoT; left out")
    traces, split = [traces[i] for i in keep], [split[i] for i in keep]
    if len(set(split)) < 2:
        raise click.UsageError(
            "answer probes need at least one trace in each half of the split; give more traces"
        )
    result = answer_probes(
        loaded.model, loaded.tokenizer, traces, split, bins=bins, threshold=threshold, seed=seed, progress=log
    )
    result.summary["model"] = model_id
    paths = write_probe_outputs(result, out, title=model_id)
    s = result.summary["readouts"]
    line = ", ".join(
        f"{r}: answer decodable at <think> in {v['first_decodable']['probe']['share_at_think']:.0%} "
        f"(control {v['first_decodable']['control']['share_at_think']:.0%})"
        for r, v in s.items()
    )
    click.echo(f"{len(traces)} traces -> {paths['summary.json']}; {line}")


def _organism_traces(loaded, model_id: str, n: int, seed: int, device: str | None, log):
    """One trace per problem of the organism's task, sampled at temperature 1.0 with the problem's seed; split by
    the seed's parity."""
    from resampling import SamplingParams, make_backend, sample_traces

    examples = {s: loaded.task.sample(s) for s in range(seed, seed + n)}
    log(f"sampling {n} traces from {model_id}")
    be = make_backend("hf", model_id=model_id, device=device)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=256)
    traces = sample_traces(be, be.tokenizer, [e.messages for e in examples.values()], list(examples), params)
    return traces, ["train" if s % 2 == 0 else "test" for s in examples]

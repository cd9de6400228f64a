"""``cotscope intervene`` and ``cotscope resilience``: Thought Branches' interventions and iterative resilience."""

from __future__ import annotations

import math
from pathlib import Path

import click

from cotscope import _options as flags


def _common(f):
    """The options both commands share: the trace, sampling, seed, output and cache."""
    for decorator in reversed(
        [
            flags.backend_options,
            flags.trace_option("Trace file; default: the organism's on-policy trace of problem --problem."),
            flags.int_option(
                "--problem",
                None,
                "Problem seed of the on-policy trace when no --trace is given [default: 366].",
                minimum=0,
            ),
            flags.samples_option(30, "Rollouts per condition (chains per sentence for resilience)."),
            flags.seed_option(0, "Seed of every rollout (the same seed gives the same rollouts)."),
            flags.temperature_option(None, "Sampling temperature [default: 0.6]."),
            flags.top_p_option(None, "Nucleus mass [default: 0.95 for a real model; 1.0 for organism:*]."),
            flags.max_new_tokens_option(
                None, "Token budget of each rollout [default: the task's for organism:*]."
            ),
            click.option("--gt-answer", default=None, help="The true answer to grade rollouts against."),
            click.option(
                "--out",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="JSON file to write.",
            ),
            flags.cache_option(Path(".cotscope-cache")),
            flags.quiet_option(),
            flags.choice_option(
                "--match",
                ["embedder", "judge"],
                "embedder",
                "Who decides that a sentence states the target's content: the shipped embedder (cosine with "
                "--match-threshold, same numbers) or a judge model (--judge-model at --judge-base-url).",
            ),
            flags.judge_server_options("--match judge"),
        ]
    ):
        f = decorator(f)
    return f


def _setup(given: dict):
    """From the command's parameters (``given``): the backend, the trace (given, or the organism's on-policy one),
    the sampling parameters and settings, and the content matcher. A bad --out or a judge without its server is
    refused first, before the model loads."""
    from anchors._pipeline import DEFAULT_TRACE_SEED, onpolicy_trace, sampling_defaults, sampling_params
    from cot import load_trace
    from resampling import make_backend_from_options, warn_batch_invariance

    matcher = _matcher(
        given["match"], given["judge_model"], given["judge_base_url"], given["cache_dir"], given["quiet"]
    )
    if given["out"] is not None:
        from cotscope._outputs import check_out_file

        check_out_file(given["out"])
    model_id = given["model_id"]
    trace = load_trace(given["trace_file"]) if given["trace_file"] is not None else None
    defaults, _ = sampling_defaults(model_id)
    sampling_given = {k: given[k] for k in ("temperature", "top_p", "max_new_tokens")}
    sampling = {k: defaults[k] if v is None else v for k, v in sampling_given.items()}
    settings = {name: given[name] for name in flags.BACKEND_SETTINGS}
    be = make_backend_from_options(model_id, given["backend"], **settings)
    warn_batch_invariance(be)
    params, _ = sampling_params({**sampling, "forced_max_new_tokens": 16})
    if trace is None:
        problem = given["problem"]
        trace, _ = onpolicy_trace(
            be,
            model_id,
            DEFAULT_TRACE_SEED if problem is None else problem,
            temperature=sampling["temperature"],
            max_new_tokens=sampling["max_new_tokens"],
            top_p=sampling["top_p"],
        )
    return be, trace, params, sampling, matcher


def _matcher(match, judge_model, judge_base_url, cache_dir, quiet):
    """A function giving the content matcher (None: the shipped embedder); a judge without its server is refused
    here, before the model loads."""
    from anchors._labeller import check_judge_options, content_judge

    try:
        check_judge_options(match, judge_model, judge_base_url, option="--match")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if match != "judge":
        return lambda: None
    return lambda: content_judge(judge_model, judge_base_url, cache_dir, quiet)


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _dist_line(name: str, d: dict) -> str:
    top = ", ".join(
        f"{a}: {v['share']:.2f} [{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]"
        for a, v in list(d["answers"].items())[:4]
    )
    lo, hi = d["accuracy_ci"]
    return f"{name:<16} n={d['n']:<4} accuracy {_fmt(d['accuracy'])} [{_fmt(lo)}, {_fmt(hi)}]  answers {top}"


def _write(out, data) -> None:
    if out is not None:
        from cot import atomic_write_json

        atomic_write_json(out, data)


@click.command("intervene")
@_common
@click.option("--at", "at", type=click.IntRange(min=0), required=True, help="Sentence index to intervene at.")
@click.option("--text", required=True, help="The sentence to put at --at.")
@click.option(
    "--on-policy",
    is_flag=True,
    help="Also reach the text on-policy: resample sentence --at until the model writes a matching sentence.",
)
@flags.int_option("--max-resamples", 500, "On-policy: most candidate sentences to draw.")
@flags.float_option(
    "--match-threshold",
    0.8,
    "On-policy: cosine a candidate needs with --text (numbers must agree too).",
    min=0,
    max=1,
)
@flags.float_option(
    "--min-mean-logprob", None, "On-policy: also require this mean token log-probability of the candidate."
)
@click.option("--ignore-numbers", is_flag=True, help="Match on cosine alone (numbers may differ).")
def intervene_command(
    model_id, backend, backend_settings, trace_file, problem, samples, seed, temperature, top_p, max_new_tokens,
    gt_answer, out, cache_dir, quiet, match, judge_model, judge_base_url, at, text, on_policy, max_resamples,
    match_threshold, min_mean_logprob, ignore_numbers,
) -> None:  # fmt: skip
    """Insert TEXT at sentence --at off-policy (verbatim) and, with --on-policy, reach it on-policy; roll out both.

    Prints the answer distribution of each (with Wilson 95% intervals), the resamples the on-policy search
    needed, and the log-probability of the text under the model (how off-policy it is).
    """
    from anchors._branches import intervene

    be, trace, params, sampling, matcher = _setup(click.get_current_context().params)
    try:
        result = intervene(
            be, trace, at, text, on_policy=on_policy, samples=samples, seed=seed, params=params,
            max_resamples=max_resamples, threshold=match_threshold, numbers=not ignore_numbers,
            min_mean_logprob=min_mean_logprob, gt_answer=gt_answer, cache_dir=cache_dir, quiet=quiet,
            embed=matcher(),
        )  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    result.update(model=model_id, sampling=sampling)
    _write(out, result)
    lp = result["text_logprob"]
    olp = result["original_logprob"]
    click.echo(f"sentence {at}: {result['original']!r} -> {text!r}")
    click.echo(
        f"log-probability of the text: {_fmt(lp['sum'])} ({_fmt(lp['mean'])} per token, {lp['n_tokens']} tokens); "
        f"of the original sentence: {_fmt(olp['sum'])} ({_fmt(olp['mean'])} per token)"
    )
    click.echo(_dist_line("no intervention", result["no_intervention"]))
    click.echo(_dist_line("off-policy", result["off_policy"]))
    if on_policy:
        s = result["on_policy"]
        if s["found"]:
            click.echo(
                f"on-policy: found {s['sentence']!r} after {s['resamples']} resamples (cosine {_fmt(s['cosine'])}, "
                f"mean log-probability {_fmt(s['sentence_logprob']['mean'])})"
            )
            click.echo(_dist_line("on-policy", s["distribution"]))
        else:
            click.echo(
                f"on-policy: no matching sentence in {s['resamples']} resamples (closest {s['closest']!r}, cosine "
                f"{_fmt(s['closest_cosine'])}); raise --max-resamples"
            )
    if out is not None:
        click.echo(f"wrote {out}")


@click.command("resilience")
@_common
@click.option(
    "--at",
    "at",
    type=click.IntRange(min=0),
    multiple=True,
    help="Sentence index (repeat); default: every sentence.",
)
@flags.int_option("--iterations", 20, "Most resampling rounds per chain (Thought Branches: 20).")
@flags.float_option(
    "--match-threshold", 0.6, "Cosine at which a sentence states S_i's content again.", min=0, max=1
)
@click.option("--ignore-numbers", is_flag=True, help="Match on cosine alone (numbers may differ).")
@flags.int_option(
    "--min-removed", 5, "Fewest chains that removed the content for good for CF++ to be defined.", minimum=1
)
def resilience_command(
    model_id, backend, backend_settings, trace_file, problem, samples, seed, temperature, top_p, max_new_tokens,
    gt_answer, out, cache_dir, quiet, match, judge_model, judge_base_url, at, iterations, match_threshold,
    ignore_numbers, min_removed,
) -> None:  # fmt: skip
    """Iterative resilience and counterfactual++ of sentences (Thought Branches).

    For each sentence, --samples chains resample it; when a continuation states its content again, it is cut
    there and resampled again, up to --iterations rounds. Resilience = rounds in which the content came back;
    CF++ = kept minus removed-for-good, in accuracy and answer KL. Every round is cached: a rerun resumes.
    """
    from anchors._branches import iterative_resilience

    if samples < min_removed:
        click.echo(
            f"warning: --samples {samples} chains cannot reach --min-removed {min_removed}, so counterfactual++ will "
            f"be undefined (nan) for every sentence; raise --samples to at least {min_removed} or lower --min-removed",
            err=True,
        )
    be, trace, params, sampling, matcher = _setup(click.get_current_context().params)
    try:
        result = iterative_resilience(
            be, trace, list(at) or None, samples=samples, iterations=iterations, seed=seed, params=params,
            threshold=match_threshold, numbers=not ignore_numbers, gt_answer=gt_answer, cache_dir=cache_dir,
            quiet=quiet, embed=matcher(), min_removed=min_removed,
        )  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    _write(
        out,
        {"trace": trace.id, "model": model_id, "sampling": sampling, **result.stats, "sentences": result.rows,
         "chains": result.chains},
    )  # fmt: skip
    click.echo(f"{'i':>3} {'resilience':>12} {'removed':>8} {'cf++ acc':>9} {'cf++ KL':>8}  sentence")
    for r in result.rows:
        click.echo(
            f"{r['sentence']:>3} {_fmt(r['resilience']):>12} {r['n_removed']:>8} {_fmt(r['cfpp_accuracy']):>9} "
            f"{_fmt(r['cfpp_kl']):>8}  {r['text'][:70]}"
        )
    if out is not None:
        click.echo(f"wrote {out}")

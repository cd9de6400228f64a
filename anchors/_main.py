"""``cotscope importance`` (the main job), ``cotscope receiver-heads`` and ``cotscope validate anchors``."""

from __future__ import annotations

from pathlib import Path

import click

from cotscope import _options as flags
from resampling import make_backend_from_options, run_health, warn_batch_invariance


def counterfactual_options(f):
    """``--min-different``, ``--min-dtf`` and ``--counterfactual-fallback`` (see ``ImportanceOptions``)."""
    f = click.option(
        "--counterfactual-fallback",
        type=click.Choice(["nan", "resampling"]),
        default="nan",
        show_default=True,
        help="Below the floors: NaN, or resampling importance (Thought Branches).",
    )(f)
    f = click.option(
        "--min-dtf",
        type=click.FloatRange(0, 1, max_open=True),
        default=0.05,
        show_default=True,
        help="Counterfactual importance needs a different-trajectories fraction above this.",
    )(f)
    return click.option(
        "--min-different",
        type=click.IntRange(min=1),
        default=5,
        show_default=True,
        help="Counterfactual importance needs at least this many rollouts that change the sentence's meaning.",
    )(f)


def _adaptive_settings(adaptive: bool, budget: int | None, sparse: int | None = None):
    """The :class:`anchors._adaptive.AdaptiveOptions` of ``--adaptive``/``--budget``/``--sparse``, None without
    ``--adaptive``."""
    if not adaptive:
        return None
    from anchors._adaptive import AdaptiveOptions

    return AdaptiveOptions(budget=budget, stride=sparse or 1)


def _adaptive_config(budget: int | None, sparse: int | None) -> dict:
    """What ``--adaptive`` records in the run's configuration (``sparse`` only when given, so older runs match)."""
    return {"budget": budget} if sparse is None else {"budget": budget, "sparse": sparse}


def _adaptive_note(run) -> str:
    """One line on an adaptive run: its looks, the level per look, rollouts against a fixed run, why sentences stopped."""
    from collections import Counter

    st = run.stats
    reasons = Counter(run.table["stop_reason"].to_list()) if "stop_reason" in run.table.columns else {}
    return (
        f"looks at {st['adaptive_schedule']} rollouts a position, flag level {st['adaptive_alpha_per_look']:.4g} a "
        f"look (Bonferroni alpha spending); {st['adaptive_rollouts']} rollouts of a fixed run's "
        f"{st['adaptive_fixed_rollouts']}; sentences stopped: "
        + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    )


def _floors(min_different: int, min_dtf: float, fallback: str) -> dict:
    return {"min_different": min_different, "min_dtf": min_dtf, "counterfactual_fallback": fallback}


@click.command("importance")
@flags.backend_options
@flags.trace_option("Trace file; default: the organism writes its own trace (on-policy) for problem --seed.")
@click.option(
    "--traces",
    "traces_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A dataset: a folder of trace files, a JSONL file of traces, or a thought-anchors dataset folder. "
    "Per-trace outputs go to OUT/traces/<trace_id>/, the study (aggregate.parquet, report.html) to OUT.",
)
@flags.int_option(
    "--n-traces", None, "A dataset of this many on-policy traces of organism:NAME, problems --seed onwards."
)
@flags.samples_option(30, "Rollouts per sentence position (and per forced-answer probe).", minimum=2)
@flags.seed_option(None, "Seed of the on-policy trace and of the rollouts.")
@flags.out_option()
@flags.temperature_option(None, "Sampling temperature [default: 0.6, Thought Anchors', for every command].")
@flags.top_p_option(
    None,
    "Nucleus mass [default: 0.95 for a real model; 1.0 for organism:*, whose planted errors a nucleus cuts].",
)
@flags.max_new_tokens_option(
    None,
    "Token budget of each rollout [default: 8192 for a real model; the task's for organism:*]. A rollout "
    "that hits it before answering has no answer (counted in n_truncated).",
)
@flags.int_option(
    "--forced-max-new-tokens",
    None,
    "Token budget of each forced-answer probe after \\boxed{ [default: 64; 16 for organism:*].",
)
@click.option(
    "--gt-answer",
    default=None,
    help="The true answer to grade rollouts against [default: the trace's gt_answer, else its own final answer].",
)
@click.option(
    "--receiver-heads",
    "receiver_heads_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Receiver heads chosen on other traces (cotscope receiver-heads); default: chosen on this trace "
    "(circular).",
)
@flags.device_option(
    "Device of the sentence-embedding model (cpu, cuda, cuda:1, mps).",
    flag="--embedding-device",
    default="cpu",
)
@flags.choice_option(
    "--convention",
    ["cotscope", "thought_anchors"],
    "cotscope",
    "thought_anchors reproduces the reference code's conventions.",
)
@counterfactual_options
@click.option("--no-whitebox", is_flag=True, help="Skip receiver heads and attention suppression.")
@flags.adaptive_options
@flags.roles_option()
@flags.judge_server_options("--roles judge")
@flags.cache_option()
@flags.force_option()
@flags.quiet_option()
def importance(
    model_id,
    backend,
    backend_settings,
    trace_file,
    traces_path,
    n_traces,
    samples,
    seed,
    out,
    temperature,
    top_p,
    max_new_tokens,
    forced_max_new_tokens,
    gt_answer,
    receiver_heads_file,
    embedding_device,
    convention,
    min_different,
    min_dtf,
    counterfactual_fallback,
    no_whitebox,
    adaptive,
    budget,
    sparse,
    roles,
    judge_model,
    judge_base_url,
    cache_dir,
    force,
    quiet,
) -> None:
    """Which sentences of a trace matter: resample, score every sentence, write a report.

    Writes OUT/importance.parquet, OUT/report.html, PNG figures, OUT/graph.graphml, OUT/thought_anchors/ and the
    rollouts.
    """
    from functools import partial

    from anchors._blackbox import ImportanceOptions
    from anchors._labeller import check_judge_options, role_labeller, roles_identity
    from anchors._pipeline import (
        DEFAULT_TRACE_SEED,
        compute_importance,
        onpolicy_trace,
        read_receiver_heads,
        sampling_defaults,
        sampling_params,
        write_importance,
    )
    from anchors._report import terminal_summary
    from cot import embed_sentences, load_trace
    from cotscope._context import check_trace_fits
    from cotscope._outputs import claim_out
    from cotscope._progress import step

    dataset = traces_path is not None or n_traces is not None
    if sum(x is not None for x in (trace_file, traces_path, n_traces)) > 1:
        raise click.UsageError("give one of --trace FILE, --traces PATH and --n-traces N")
    seed = (0 if dataset else DEFAULT_TRACE_SEED) if seed is None else seed
    if convention == "cotscope" and samples < min_different:
        # no position can have min_different rollouts that change its meaning: every counterfactual value would
        # be undefined, which the run would only say after sampling
        raise click.UsageError(
            f"--samples {samples} is below --min-different {min_different}, so counterfactual importance would be "
            f"undefined for every sentence; raise --samples to at least {min_different}, or lower --min-different "
            f"to {samples} or less"
        )
    try:
        check_judge_options(roles, judge_model, judge_base_url)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    role_settings = {"judge_model": judge_model, "judge_base_url": judge_base_url}
    heads = None
    if receiver_heads_file is not None:
        try:
            heads = read_receiver_heads(receiver_heads_file)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--receiver-heads") from None
    if budget is not None and not adaptive:
        raise click.BadParameter("--budget caps an adaptive run; add --adaptive", param_hint="--budget")
    if sparse is not None and not adaptive:
        raise click.BadParameter(
            "--sparse samples positions in adaptive rounds; add --adaptive", param_hint="--sparse"
        )
    if dataset:
        _importance_dataset(
            model_id,
            backend,
            backend_settings,
            traces_path,
            n_traces,
            samples,
            seed,
            out,
            sampling_given={
                "temperature": temperature,
                "top_p": top_p,
                "max_new_tokens": max_new_tokens,
                "forced_max_new_tokens": forced_max_new_tokens,
            },
            convention=convention,
            floors=_floors(min_different, min_dtf, counterfactual_fallback),
            whitebox=not no_whitebox and backend == "hf",
            roles=roles,
            role_settings=role_settings,
            cache_dir=cache_dir,
            force=force,
            quiet=quiet,
            adaptive=_adaptive_settings(adaptive, budget, sparse),
            adaptive_config=_adaptive_config(budget, sparse) if adaptive else None,
        )
        return
    # a bad trace file, or an OUT that holds another run's results, fails before the model loads
    trace = load_trace(trace_file) if trace_file is not None else None
    if trace is not None:
        check_trace_fits(trace, model_id)
    defaults, defaults_for = sampling_defaults(model_id)
    given = {
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "forced_max_new_tokens": forced_max_new_tokens,
    }
    sampling = {key: defaults[key] if value is None else value for key, value in given.items()}
    config = {"model": model_id, "backend": backend, "samples": samples, "seed": seed, "sampling": sampling}
    config.update(gt_answer=gt_answer, receiver_heads=receiver_heads_file, convention=convention)
    config.update(_floors(min_different, min_dtf, counterfactual_fallback), whitebox=not no_whitebox)
    if roles != "rules":  # runs claimed before --roles existed (the rules labeller) keep their configuration
        config["roles"] = roles_identity(roles, judge_model)
    if adaptive:  # likewise: fixed runs keep their configuration
        config["adaptive"] = _adaptive_config(budget, sparse)
    claim_out(out, "importance", None if trace is None else {**config, "trace": trace.id}, force=force)
    be = make_backend_from_options(model_id, backend, **backend_settings)
    warn_batch_invariance(be)
    params, forced_params = sampling_params(sampling)
    if trace is None:
        if not quiet:
            step(f"writing the on-policy trace of problem {seed} with {model_id}")
        trace, _ = onpolicy_trace(
            be,
            model_id,
            seed,
            temperature=sampling["temperature"],
            max_new_tokens=sampling["max_new_tokens"],
            top_p=sampling["top_p"],
        )
        claim_out(out, "importance", {**config, "trace": trace.id}, force=force)
    options = (
        ImportanceOptions.thought_anchors()
        if convention == "thought_anchors"
        else ImportanceOptions(**_floors(min_different, min_dtf, counterfactual_fallback))
    )
    run = compute_importance(
        be,
        trace,
        samples=samples,
        seed=seed,
        params=params,
        forced_params=forced_params,
        gt_answer=gt_answer,
        receiver_heads=heads,
        cache_dir=cache_dir or out / ".cache",
        options=options,
        whitebox=not no_whitebox and backend == "hf",
        roles=role_labeller(roles, **role_settings, cache_dir=cache_dir or out / ".cache", quiet=quiet),
        quiet=quiet,
        embed=partial(embed_sentences, device=embedding_device),
        out=out,
        adaptive=_adaptive_settings(adaptive, budget, sparse),
        header={
            "command": "importance",
            "trace": trace.to_dict(),
            "seed": seed,
            "samples": samples,
            "sampling": sampling,
            "sampling_defaults_for": defaults_for,
            "convention": convention,
        },
    )
    notes = {
        "model": model_id,
        "backend": backend,
        "samples": samples,
        "seed": seed,
        "convention": convention,
        "sampling": sampling,
        "sampling_defaults_for": defaults_for
        + ("" if all(v is None for v in given.values()) else " (some set by flags)"),
        "graded_against": run.stats.get("graded_against"),
        "receiver_heads": run.stats.get("receiver_heads_source", "not computed"),
        "embedding_device": embedding_device,
    }
    if run.stats.get("adaptive"):
        notes["adaptive"] = _adaptive_note(run)
    if not quiet:
        click.echo(f"accuracy graded against {run.stats.get('graded_against')}", err=True)
        if "adaptive" in notes:
            click.echo(f"adaptive: {notes['adaptive']}", err=True)
    warnings = run_health(run.rollouts).warnings()
    for line in warnings:
        click.echo(f"cotscope: warning: {line}", err=True)
    if warnings:
        notes["warnings"] = " | ".join(warnings)
    if not quiet:
        step(f"writing the table, report, figures and graph to {out}")
    paths = write_importance(run, out, notes, source=trace_file)
    if not quiet:
        terminal_summary(run.table, top=8, options=run.options)
    click.echo(f"wrote {len(paths)} files to {out} (report: {paths.get('report.html')})", err=quiet)


def _importance_dataset(
    model_id,
    backend,
    backend_settings,
    traces_path,
    n_traces,
    samples,
    seed,
    out,
    *,
    sampling_given,
    convention,
    floors,
    whitebox,
    cache_dir,
    roles,
    role_settings,
    force,
    quiet,
    adaptive=None,
    adaptive_config=None,
) -> None:
    """``cotscope importance --traces PATH`` / ``--n-traces N``: a study (anchors._study_run)."""
    from anchors._blackbox import ImportanceOptions
    from anchors._labeller import role_labeller, roles_identity
    from anchors._pipeline import sampling_defaults, sampling_params
    from anchors._study_run import load_traces, onpolicy_traces, run_study
    from cotscope._outputs import claim_out
    from cotscope._progress import step
    from resampling import EngineInputError

    defaults, defaults_for = sampling_defaults(model_id)
    sampling = {k: defaults[k] if v is None else v for k, v in sampling_given.items()}
    traces, skipped = [], []
    if traces_path is not None:
        try:
            traces, skipped = load_traces(traces_path)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--traces") from None
        if not traces:
            raise click.BadParameter(
                f"{traces_path} holds no readable trace"
                + (f" ({skipped[0]['trace']}: {skipped[0]['reason']})" if skipped else "")
                + "; give a folder of trace files, a JSONL file with one trace a line, or a thought-anchors dataset",
                param_hint="--traces",
            )
    config = {"model": model_id, "backend": backend, "samples": samples, "seed": seed, "sampling": sampling}
    config.update(
        convention=convention,
        **floors,
        whitebox=whitebox,
        roles=roles_identity(roles, role_settings["judge_model"]),
    )
    if adaptive_config is not None:  # fixed runs keep their configuration
        config["adaptive"] = adaptive_config
    source = {"traces": sorted(t.id for t in traces)} if traces else {"n_traces": n_traces}
    claim_out(out, "importance", {**config, **source}, force=force)
    be = make_backend_from_options(model_id, backend, **backend_settings)
    warn_batch_invariance(be)
    params, forced_params = sampling_params(sampling)
    try:
        if n_traces is not None:
            if not quiet:
                step(
                    f"writing {n_traces} on-policy traces (problems {seed} to {seed + n_traces - 1}) with {model_id}"
                )
            traces = onpolicy_traces(be, model_id, n_traces, seed, sampling)
        options = (
            ImportanceOptions.thought_anchors()
            if convention == "thought_anchors"
            else ImportanceOptions(**floors)
        )
        notes = {
            "model": model_id,
            "backend": backend,
            "samples": samples,
            "seed": seed,
            "convention": convention,
            "sampling": sampling,
            "sampling_defaults_for": defaults_for,
        }
        result = run_study(
            be,
            traces,
            samples=samples,
            seed=seed,
            params=params,
            forced_params=forced_params,
            cache_dir=cache_dir or out / ".cache",
            options=options,
            whitebox=whitebox,
            quiet=quiet,
            out=out,
            notes=notes,
            header={"command": "importance", **config},
            skipped=skipped,
            roles=role_labeller(roles, **role_settings, cache_dir=cache_dir or out / ".cache", quiet=quiet),
            adaptive=adaptive,
        )
    except EngineInputError as exc:
        raise click.UsageError(str(exc)) from None
    for s in result.skipped:
        click.echo(f"skipped {s['trace']}: {s['reason']}", err=True)
    if "adaptive" in result.stats and not quiet:
        st = result.stats["adaptive"]
        click.echo(
            f"adaptive: {st['adaptive_rollouts']} rollouts of a fixed run's {st['adaptive_fixed_rollouts']} over "
            f"{st['traces']} traces; looks at {st['adaptive_schedule']}, flag level "
            f"{st['adaptive_alpha_per_look']:.4g} a look (Bonferroni alpha spending)",
            err=True,
        )
    n = result.table["trace_id"].n_unique()
    click.echo(
        f"{n} traces, {result.table.height} sentences, {len(result.skipped)} skipped -> {out} "
        f"(report: {out / 'report.html'})",
        err=quiet,
    )


@click.command("anchors")
@click.option("--quick", is_flag=True, help="10 traces, 12 samples: a smoke run of a few minutes.")
@flags.int_option("--n-traces", None, "Clean traces to score (default 50).")
@flags.samples_option(
    None,
    "Rollouts per position (default 20); significance is also reported at 10, 20, 30 and 50 below it.",
    minimum=2,
)
@flags.seed_option(1000, "First problem seed (problems are fresh).")
@flags.temperature_option(
    None, "Sampling temperature of traces and rollouts (default 0.6, Thought Anchors').", allow_zero=False
)
@counterfactual_options
@click.option("--no-whitebox", is_flag=True)
@flags.json_option()
@flags.cache_option(Path(".cotscope-cache/validate"))
def validate_anchors_command(
    quick,
    n_traces,
    samples,
    seed,
    temperature,
    min_different,
    min_dtf,
    counterfactual_fallback,
    no_whitebox,
    as_json,
    cache_dir,
) -> None:
    """Rank sentences with every method on arith's own traces; compare with the planted ground truth."""
    from anchors._validate import TEMPERATURE, validate_anchors  # TEMPERATURE is DEFAULT_TEMPERATURE
    from cot import json_dumps
    from cotscope._outputs import check_writable_dir
    from cotscope._progress import count_line, step

    check_writable_dir(cache_dir, "--cache")

    temperature = TEMPERATURE if temperature is None else temperature
    n_traces = n_traces or (10 if quick else 50)
    samples = samples or (12 if quick else 20)

    def progress(done: int, total: int) -> None:
        if not as_json:
            count_line(f"scored {done}/{total} traces", last=done == total)

    if not as_json:
        step(f"sampling on-policy arith traces until {n_traces} clean ones are found, then scoring each")
    result = validate_anchors(
        n_traces=n_traces,
        samples=samples,
        seed=seed,
        temperature=temperature,
        whitebox=not no_whitebox,
        cache_dir=cache_dir,
        progress=progress,
        options=_floors(min_different, min_dtf, counterfactual_fallback),
    )
    if as_json:
        click.echo(json_dumps(result.to_json(), indent=2, default=str))
        return
    click.echo(
        f"{result.n_traces} on-policy arith traces with one planted load-bearing sentence "
        f"({samples} samples per position, temperature {temperature:g})"
    )
    click.echo(f"{'method':<38}{'kind':<11}{'top1':>7}{'spearman':>10}{'defined':>9}")
    for name, m in sorted(result.methods.items(), key=lambda kv: -kv[1]["top1"]):
        click.echo(
            f"{name:<38}{m['kind']:<11}{m['top1']:>7.2f}{m['spearman']:>10.2f}{m['defined_per_trace']:>9.1f}"
        )
    click.echo(
        f"defined: sentences with a value, mean per trace (of {result.settings['sentences_per_trace']:.1f})"
    )
    level = result.settings["options"]["significance_level"]
    click.echo(
        f"\nnoise floor (permutation test, p < {level:g}): share of sentences flagged significant, "
        "by samples per position (the first n of this run's)"
        f"\n{'method':<38}{'samples':>8}{'planted':>9}{'n':>6}{'error':>9}{'n':>6}{'filler':>9}{'n':>6}"
    )
    for name in result.significance:
        for n, per in result.significance_by_samples.items():
            sig = per[name]
            click.echo(
                f"{name:<38}{n:>8}{sig['planted_flagged']:>9.2f}{sig['planted_n']:>6}"
                f"{sig['error_flagged']:>9.2f}{sig['error_n']:>6}"
                f"{sig['filler_flagged']:>9.2f}{sig['filler_n']:>6}"
            )
    click.echo(
        "planted: the load-bearing sentences (target >= 0.9); error: the wrong computations alone; "
        "filler: role unknown (target <= 0.1)"
    )
    click.echo(
        f"\nA/A check: two halves of one position's rollouts (no change by construction), share with p < {level:g}"
        f"\n{'rollouts':<16}{'per half':>9}{'KL':>7}{'acc':>7}{'n':>6}{'KL':>7}{'acc':>7}{'n':>6}"
        f"\n{'':<16}{'':>9}{'(all positions)':>20}{'(answers vary)':>20}"
    )
    for kind, rec in result.null_check.items():
        click.echo(
            f"{kind:<16}{rec['mean_per_half']:>9.1f}{rec['kl_flagged']:>7.3f}{rec['accuracy_flagged']:>7.3f}"
            f"{rec['n']:>6}{rec['kl_flagged_varied']:>7.3f}{rec['accuracy_flagged_varied']:>7.3f}"
            f"{rec['n_varied']:>6}"
        )
    click.echo(f"a calibrated test flags about {level:g} of these, or fewer (discrete answers)")
    click.echo(
        "\ndataset check: position-debiased effect by the generator's truth role, 95% cluster bootstrap over traces;"
        "\npassed = both planted roles' intervals lie above the filler interval"
    )
    for metric, rec in result.dataset.items():
        verdict = "passed" if rec["passed"] else "FAILED"
        click.echo(f"{metric}: {verdict} (smallest gap {rec['smallest_gap']:.3f})")
        ordered = sorted(rec["roles"].items(), key=lambda kv: -kv[1]["debiased"])
        for role, r in ordered:
            click.echo(
                f"  {role:<24}{r['debiased']:>8.3f} [{r['debiased_lo']:.3f}, {r['debiased_hi']:.3f}]"
                f"  n={r['n_sentences']} in {r['n_traces']} traces"
            )


@click.command("receiver-heads")
@flags.backend_options
@flags.trace_option(
    "A trace to choose heads on (repeat: many traces; not the ones you will score).",
    name="trace_files",
    multiple=True,
    required=True,
    exists=True,
)
@flags.int_option("--top-k", 20)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON file to write."
)
def receiver_heads_command(model_id, backend, backend_settings, trace_files, top_k, out) -> None:
    """Choose receiver heads over many traces, for `cotscope importance --receiver-heads FILE`.

    Heads chosen on the trace they score are circular; choose them on other traces of the same model.
    """
    from anchors._pipeline import pick_receiver_heads
    from cot import atomic_write_json, load_trace
    from cotscope._outputs import check_out_file

    check_out_file(out)
    if backend != "hf":
        raise click.BadParameter(
            "receiver heads need the model's attention; use --backend hf", param_hint="--backend"
        )
    be = make_backend_from_options(model_id, backend, **backend_settings)
    traces = [load_trace(f) for f in trace_files]
    chosen = pick_receiver_heads(be.model, be.tokenizer, traces, top_k=top_k)
    chosen["model"] = model_id
    atomic_write_json(out, chosen)  # an undefined split-half reliability (too few heads) is null
    click.echo(f"wrote {len(chosen['heads'])} receiver heads chosen on {len(traces)} traces to {out}")

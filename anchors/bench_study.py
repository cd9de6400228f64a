"""``cotscope bench study``: a dataset of organism traces as one study run against the single-trace pipeline looped
over the same traces in the same process (same seeds, so the same rows; checked).

Every arm samples every rollout fresh (a new cache folder each time) and scores every trace the same way. The loop
runs one engine pass per trace and scores each trace after its pass. The study samples all traces in one engine
pass (:meth:`resampling.Engine.fill`) and scores traces in groups (their new sentences embedded in one call) in a
worker thread as soon as a group's rollouts are stored, while the pass goes on; a third arm, the study scoring after
its pass (``overlap=False``), separates the two gains.
Reported: the median wall time of each arm over ``repeats`` runs (the arms' order rotating), the engine-pass part,
and the ratios. With ``adaptive`` the loop and the study sample in adaptive rounds
(:class:`anchors._adaptive.AdaptiveOptions` defaults): the study one engine pass per round over every trace, the
loop rounds per trace; the adaptive study scores between rounds, so it has no third arm.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["format_study_bench", "run_study_bench"]


def run_study_bench(
    *,
    model_id: str = "organism:arith",
    n_traces: int = 20,
    samples: int = 10,
    seed: int = 0,
    repeats: int = 3,
    adaptive: bool = False,
) -> dict[str, Any]:
    """Time both ways ``repeats`` times; the traces are sampled once, the model loaded once."""
    import polars as pl

    from anchors._blackbox import ImportanceOptions
    from anchors._pipeline import compute_importance, sampling_defaults, sampling_params
    from anchors._study_run import onpolicy_traces, run_study
    from resampling import make_backend, trace_seed

    be = make_backend("hf", model_id=model_id)
    sampling, _ = sampling_defaults(model_id)
    params, forced = sampling_params(sampling)
    traces = onpolicy_traces(be, model_id, n_traces, seed, sampling)
    options = ImportanceOptions(min_different=min(5, samples))
    common = {"samples": samples, "seed": seed, "params": params, "forced_params": forced, "options": options}
    if adaptive:
        from anchors._adaptive import AdaptiveOptions

        common["adaptive"] = AdaptiveOptions()

    def loop(cache: Path) -> tuple[pl.DataFrame, float]:
        tables, sampling_s = [], 0.0
        for t in traces:  # each trace with the seed a dataset run gives it
            run = compute_importance(
                be, t, cache_dir=cache, whitebox=False, **{**common, "seed": trace_seed(seed, t.id)}
            )
            sampling_s += run.stats["seconds"]
            tables.append(run.table.with_columns(pl.lit(t.id).alias("trace_id")))
        return pl.concat(tables, how="diagonal_relaxed"), sampling_s

    def study(cache: Path, overlap: bool = True) -> tuple[pl.DataFrame, float]:
        result = run_study(be, traces, cache_dir=cache, overlap=overlap, **common)
        return result.table.drop("base_correct", "rollout_seed"), result.stats["seconds"]

    arms = [("loop", loop), ("study", study)]
    if not adaptive:
        arms.append(("serial", lambda cache: study(cache, overlap=False)))

    with tempfile.TemporaryDirectory() as tmp:
        compute_importance(
            be, traces[0], cache_dir=Path(tmp) / "warm", whitebox=False, **{**common, "adaptive": None}
        )  # load, warm up
        times: dict[str, list[float]] = {name: [] for name, _ in arms}
        sampling_times: dict[str, list[float]] = {name: [] for name, _ in arms}
        tables: dict[str, pl.DataFrame] = {}
        for r in range(repeats):
            for name, fn in arms[r % len(arms) :] + arms[: r % len(arms)]:
                start = time.perf_counter()
                table, sampling_s = fn(Path(tmp) / f"{name}{r}")
                times[name].append(time.perf_counter() - start)
                sampling_times[name].append(sampling_s)
                tables[name] = table
        columns = tables["study"].columns
        same = all(t.select(columns).equals(tables["study"]) for t in tables.values())
    median = {name: statistics.median(v) for name, v in times.items()}
    sampling_median = {name: statistics.median(v) for name, v in sampling_times.items()}
    loop_s, study_s = median["loop"], median["study"]
    loop_sampling, study_sampling = sampling_median["loop"], sampling_median["study"]
    serial = {}
    if "serial" in median:
        serial = {
            "serial_s": median["serial"],
            "serial_sampling_s": sampling_median["serial"],
            "serial_ratio": loop_s / median["serial"],
            "sampling_ratio": loop_sampling / sampling_median["serial"],
        }
    return {
        "model": model_id,
        "traces": n_traces,
        "samples": samples,
        "sentences": tables["study"].height,
        "repeats": repeats,
        "adaptive": adaptive,
        "same_rows": same,
        "loop_s": loop_s,
        "study_s": study_s,
        "ratio": loop_s / study_s,
        "loop_sampling_s": loop_sampling,
        "study_sampling_s": study_sampling,
        "sampling_ratio": None,
        **serial,
        "times": times,
        "sampling_times": sampling_times,
    }


def format_study_bench(report: dict[str, Any]) -> str:
    if report.get("adaptive"):  # the loop's sampling is spread over its rounds and not timed apart
        return "\n".join(
            [
                f"{report['traces']} traces of {report['model']}, adaptive, at most {report['samples']} samples per "
                f"position, {report['sentences']} sentences; medians of {report['repeats']} runs",
                f"single-trace adaptive runs looped: {report['loop_s']:.2f} s",
                f"one adaptive dataset run:          {report['study_s']:.2f} s",
                f"ratio: {report['ratio']:.2f}x overall; same rows: {'yes' if report['same_rows'] else 'NO'}",
            ]
        )
    return "\n".join(
        [
            f"{report['traces']} traces of {report['model']}, {report['samples']} samples per position, "
            f"{report['sentences']} sentences; medians of {report['repeats']} runs",
            f"single-trace pipeline looped:       {report['loop_s']:.2f} s "
            f"(engine passes {report['loop_sampling_s']:.2f} s)",
            f"one dataset run, scoring after:     {report['serial_s']:.2f} s "
            f"(engine pass {report['serial_sampling_s']:.2f} s)",
            f"one dataset run, scoring meanwhile: {report['study_s']:.2f} s "
            f"(engine pass {report['study_sampling_s']:.2f} s, traces scored during it)",
            f"ratio: {report['ratio']:.2f}x overall (target >= 1.5x); scoring after the pass {report['serial_ratio']:.2f}x; "
            f"engine pass alone {report['sampling_ratio']:.2f}x; same rows: {'yes' if report['same_rows'] else 'NO'}",
        ]
    )

"""``cotscope bench study``: a dataset of organism traces as one study run against the single-trace pipeline looped
over the same traces in the same process (same seeds, so the same rows; checked).

Both sides sample every rollout fresh (a new cache folder each time) and score every trace the same way; the
difference is that the study samples all traces in one engine pass (:meth:`resampling.Engine.fill`), where the loop
runs one engine pass per trace. Reported: the median wall time of each side over ``repeats`` runs (alternating which
goes first), its sampling part alone, and the ratios. With ``adaptive`` both sides sample in adaptive rounds
(:class:`anchors._adaptive.AdaptiveOptions` defaults): the study one engine pass per round over every trace, the loop
rounds per trace; the sampling part is then not timed apart (only the study's is summed over its rounds).
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

    def study(cache: Path) -> tuple[pl.DataFrame, float]:
        result = run_study(be, traces, cache_dir=cache, **common)
        return result.table.drop("base_correct", "rollout_seed"), result.stats["seconds"]

    with tempfile.TemporaryDirectory() as tmp:
        compute_importance(
            be, traces[0], cache_dir=Path(tmp) / "warm", whitebox=False, **{**common, "adaptive": None}
        )  # load, warm up
        times: dict[str, list[float]] = {"loop": [], "study": []}
        sampling_times: dict[str, list[float]] = {"loop": [], "study": []}
        tables: dict[str, pl.DataFrame] = {}
        for r in range(repeats):
            order = [("loop", loop), ("study", study)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                table, sampling_s = fn(Path(tmp) / f"{name}{r}")
                times[name].append(time.perf_counter() - start)
                sampling_times[name].append(sampling_s)
                tables[name] = table
        same = tables["study"].equals(tables["loop"].select(tables["study"].columns))
    loop_s, study_s = statistics.median(times["loop"]), statistics.median(times["study"])
    loop_sampling, study_sampling = (
        statistics.median(sampling_times["loop"]),
        statistics.median(sampling_times["study"]),
    )
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
        "sampling_ratio": None if adaptive else loop_sampling / study_sampling,
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
            f"single-trace pipeline looped: {report['loop_s']:.2f} s (sampling {report['loop_sampling_s']:.2f} s)",
            f"one dataset run:              {report['study_s']:.2f} s (sampling {report['study_sampling_s']:.2f} s)",
            f"ratio: {report['ratio']:.2f}x overall, {report['sampling_ratio']:.2f}x sampling (target >= 1.5x); "
            f"same rows: {'yes' if report['same_rows'] else 'NO'}",
        ]
    )

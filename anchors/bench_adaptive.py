"""``cotscope bench adaptive``: adaptive sampling (``importance --adaptive``) against a fixed run of ``samples``
rollouts per position with the same seeds, on the clean planted-error traces of ``cotscope validate anchors``.

Both sides sample into their own fresh cache and are timed. Reported: rollouts and wall time of each side and their
ratios; recall of the fixed run's significant (sentence, method) flags; the share of traces with the same top-1
sentence per method; planted-truth top1 and planted flagged share on each side; and the A/A check run adaptively
(:func:`anchors._adaptive.adaptive_split_half` on the adaptive run's own rollouts).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "format_adaptive_bench",
    "format_adaptive_wall_bench",
    "run_adaptive_bench",
    "run_adaptive_wall_bench",
]

TARGETS = {
    "rollout_ratio": 0.10,
    "recall": 0.98,
    "same_top1": 0.95,
    "aa_flagged": 0.05,
}


def run_adaptive_bench(
    *,
    model_id: str = "organism:arith",
    n_traces: int = 20,
    samples: int = 50,
    seed: int = 1000,
    sparse: int | None = None,
    rank: str = "separated",
) -> dict[str, Any]:
    """Fixed against adaptive (and, with ``sparse``, adaptive with sparse positions of that stride) on the same
    traces and seeds. The adaptive side's numbers are at the top level; the sparse side's under ``sparse``."""
    from anchors._adaptive import AdaptiveOptions, adaptive_split_half, look_schedule
    from anchors._blackbox import ImportanceOptions
    from anchors._embedding import TextEmbeddings
    from anchors._pipeline import compute_importance
    from anchors._validate import (
        METHODS,
        SIGNIFICANCE_METHODS,
        TEMPERATURE,
        _merged_index,
        _top1,
        clean_traces,
        organism_setup,
    )

    backend, task, params, forced = organism_setup(model_id, TEMPERATURE)
    # the traces validate anchors picks, with the planted wrong computation's sentence
    chosen = [
        (ex, tr, planted[0])
        for ex, tr, planted in clean_traces(backend, task, params, n_traces, seed, 4000)[0]
    ]
    # the default bootstrap intervals: the rank rule "separated" reads them
    options = ImportanceOptions(continuation_metrics=False)
    sides: dict[str, Any] = {"fixed": None, "adaptive": AdaptiveOptions(rank=rank)}
    if sparse is not None:
        sides["sparse"] = AdaptiveOptions(stride=sparse, rank=rank)
    compared = [s for s in sides if s != "fixed"]
    sizes = look_schedule(sides["adaptive"].first, samples, sides["adaptive"].growth)
    emb = TextEmbeddings()
    ranked = [m for m in SIGNIFICANCE_METHODS if m in METHODS]
    totals = {side: [0, 0.0] for side in sides}
    coverage = {"positions": 0, "positions_sampled": 0, "sentences_skipped": 0}
    fixed_sig = 0
    kept_sig = dict.fromkeys(compared, 0)
    same_top1 = {side: {m: [] for m in ranked} for side in compared}
    top1 = {side: {m: [] for m in ranked} for side in sides}
    planted_flags = {side: {m: [] for m in SIGNIFICANCE_METHODS} for side in sides}
    aa: dict[str, list[Any]] = {side: [] for side in compared}
    with tempfile.TemporaryDirectory() as tmp:
        # warm up: load the model and the embedder outside the timings
        compute_importance(
            backend, chosen[0][1], samples=2, seed=seed, params=params, forced_params=forced, options=options,
            cache_dir=Path(tmp) / "warm", embed=emb, whitebox=False,
        )  # fmt: skip
        for k, (_, tr, planted_plain) in enumerate(chosen):
            runs = {}
            for side, how in sides.items():
                start = time.perf_counter()
                runs[side] = compute_importance(
                    backend, tr, samples=samples, seed=seed + k, params=params, forced_params=forced,
                    options=options, cache_dir=Path(tmp) / side, embed=emb, whitebox=False, adaptive=how,
                )  # fmt: skip
                totals[side][1] += time.perf_counter() - start
                totals[side][0] += runs[side].rollouts.height
            if "sparse" in runs:
                st = runs["sparse"].stats
                coverage["positions"] += len(st["adaptive_positions_rollouts"])
                coverage["positions_sampled"] += st["adaptive_positions_sampled"]
                coverage["sentences_skipped"] += st["adaptive_sentences_skipped"]
            targets = sorted({_merged_index(tr.cot, i, runs["fixed"].sentences) for i in planted_plain})
            flags = {}
            for m in SIGNIFICANCE_METHODS:
                for side in sides:
                    values = runs[side].table[f"{m}_significant"].to_list()
                    if (
                        "stop_reason" in runs[side].table.columns
                    ):  # a sentence not measured (sparse) is not flagged
                        reasons = runs[side].table["stop_reason"].to_list()
                        values = [
                            False if r.startswith("skipped") else v
                            for v, r in zip(values, reasons, strict=True)
                        ]
                    flags[side] = values
                    planted_flags[side][m] += [values[i] for i in targets]
                fixed_sig += sum(bool(x) for x in flags["fixed"])
                for side in compared:
                    kept_sig[side] += sum(
                        bool(x) and bool(y) for x, y in zip(flags["fixed"], flags[side], strict=True)
                    )
            for m in ranked:
                column, absolute = METHODS[m]
                best = {}
                for side in sides:
                    s = runs[side].table[column].cast(float).fill_null(float("nan")).to_numpy()
                    s = np.abs(s) if absolute else s
                    top1[side][m].append(_top1(s, targets))
                    s = np.where(np.isfinite(s), s, -np.inf)
                    best[side] = int(np.argmax(s))
                for side in compared:
                    same_top1[side][m].append(best["fixed"] == best[side])
            for side in compared:
                aa[side].append(
                    adaptive_split_half(
                        runs[side].rollouts,
                        tr.id,
                        sizes,
                        options.significance_level,
                        sides[side].futility,
                        options,
                    )
                )
    import polars as pl

    n_fixed_sig = fixed_sig

    def share(flags: list[Any]) -> float:
        defined = [bool(x) for x in flags if x is not None]
        return float(np.mean(defined)) if defined else float("nan")

    def side_report(side: str) -> dict[str, Any]:
        aa_all = pl.concat(aa[side])
        r = {
            "rollouts_fixed": totals["fixed"][0],
            "rollouts_adaptive": totals[side][0],
            "rollout_ratio": totals[side][0] / totals["fixed"][0],
            "wall_fixed_s": totals["fixed"][1],
            "wall_adaptive_s": totals[side][1],
            "wall_ratio": totals[side][1] / totals["fixed"][1],
            "fixed_significant": n_fixed_sig,
            "recall": kept_sig[side] / n_fixed_sig if n_fixed_sig else float("nan"),
            "same_top1": {m: float(np.mean(v)) for m, v in same_top1[side].items()},
            "planted_top1": {s: {m: float(np.mean(v)) for m, v in top1[s].items()} for s in ("fixed", side)},
            "planted_flagged": {
                s: {m: share(v) for m, v in planted_flags[s].items()} for s in ("fixed", side)
            },
            "aa_n": aa_all.height,
            "aa_flagged": float(aa_all["flagged"].mean()) if aa_all.height else float("nan"),
        }
        r["planted_top1"]["adaptive"] = r["planted_top1"].pop(side)
        r["planted_flagged"]["adaptive"] = r["planted_flagged"].pop(side)
        top_ok = all(r["planted_top1"]["adaptive"][m] >= r["planted_top1"]["fixed"][m] for m in ranked)
        flag_ok = all(
            not r["planted_flagged"]["adaptive"][m] < r["planted_flagged"]["fixed"][m]
            for m in SIGNIFICANCE_METHODS
        )
        r["met"] = {
            "rollout_ratio": r["rollout_ratio"] <= TARGETS["rollout_ratio"],
            "recall": r["recall"] >= TARGETS["recall"],
            "same_top1": min(r["same_top1"].values()) >= TARGETS["same_top1"],
            "planted_top1": top_ok,
            "planted_flagged": flag_ok,
            "aa_flagged": r["aa_flagged"] <= TARGETS["aa_flagged"],
        }
        return r

    report = {"model": model_id, "traces": len(chosen), "samples": samples, "schedule": sizes, "rank": rank}
    report.update(side_report("adaptive"))
    report["targets"] = TARGETS
    if sparse is not None:
        report["sparse"] = {"stride": sparse, **coverage, **side_report("sparse")}
    return report


def format_adaptive_bench(r: dict[str, Any]) -> str:
    lines = [
        f"{r['traces']} clean traces of {r['model']}; fixed: {r['samples']} samples per position; "
        f"adaptive looks at {r['schedule']}, rank rule {r.get('rank', 'final')}",
        f"rollouts: adaptive {r['rollouts_adaptive']} / fixed {r['rollouts_fixed']} = {r['rollout_ratio']:.3f} "
        f"(target <= {TARGETS['rollout_ratio']}); wall time ratio {r['wall_ratio']:.3f} "
        f"({r['wall_adaptive_s']:.1f} s / {r['wall_fixed_s']:.1f} s)",
        f"recall of the fixed run's {r['fixed_significant']} significant flags: {r['recall']:.3f} "
        f"(target >= {TARGETS['recall']})",
        "same top-1 sentence: " + ", ".join(f"{m} {v:.2f}" for m, v in r["same_top1"].items()),
        "planted top1 fixed/adaptive: "
        + ", ".join(
            f"{m} {r['planted_top1']['fixed'][m]:.2f}/{r['planted_top1']['adaptive'][m]:.2f}"
            for m in r["same_top1"]
        ),
        "planted flagged fixed/adaptive: "
        + ", ".join(
            f"{m} {r['planted_flagged']['fixed'][m]:.2f}/{r['planted_flagged']['adaptive'][m]:.2f}"
            for m in r["planted_flagged"]["fixed"]
        ),
        f"A/A run adaptively: {r['aa_flagged']:.3f} of {r['aa_n']} comparisons flagged (target <= 0.05)",
        "targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["met"].items()),
    ]
    if r.get("sparse"):
        sp = r["sparse"]
        lines += [
            f"sparse positions, every {sp['stride']}th first: {sp['positions_sampled']} of {sp['positions']} "
            f"positions sampled, {sp['sentences_skipped']} sentences not measured"
        ]
        lines += [
            "  " + line
            for line in format_adaptive_bench({**r, **r["sparse"], "sparse": None}).splitlines()[1:]
        ]
    return "\n".join(lines)


def run_adaptive_wall_bench(
    trace: str | Path,
    *,
    real_vocab: tuple[int, int] = (128, 2),
    samples: int = 50,
    max_new_tokens: int = 16,
    seed: int = 0,
    rank: str = "separated",
    repeats: int = 1,
) -> dict[str, Any]:
    """Wall time of adaptive against fixed sampling on a random-weight model of the real DeepSeek vocabulary
    (:func:`resampling.synthetic_model`, logit sd 6) over a real trace: what rounds of fewer rollouts in smaller
    batches cost per rollout where every step pays a 129k-id output projection and sampler. Same seeds, each side
    in a fresh cache; the model's answers are noise, so only rollouts, wall time and agreement with the fixed run
    (recall of its flags, same top-1) are reported, no planted truth. ``repeats`` runs of both sides, alternating
    which goes first; wall times are medians."""
    import torch

    from anchors._adaptive import AdaptiveOptions
    from anchors._blackbox import ImportanceOptions
    from anchors._embedding import TextEmbeddings
    from anchors._pipeline import compute_importance
    from anchors._significance import SIGNIFICANCE_METRICS
    from cot import load_trace
    from resampling import HFBackend, SamplingParams, synthetic_model

    path = Path(trace)
    tr = load_trace(path)  # first: a bad path fails before the model is built
    torch.manual_seed(0)
    hidden, layers = real_vocab
    model, tok = synthetic_model(hidden, layers)
    backend = HFBackend(model, tok, model_id=f"synthetic-qwen2-{hidden}x{layers}")
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=max_new_tokens)
    forced = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=8)
    options = ImportanceOptions(continuation_metrics=False)
    emb = TextEmbeddings()
    runs: dict[str, Any] = {}
    walls: dict[str, list[float]] = {"fixed": [], "adaptive": []}
    sides = [("fixed", None), ("adaptive", AdaptiveOptions(rank=rank))]
    with tempfile.TemporaryDirectory() as tmp:
        compute_importance(
            backend, tr, samples=2, seed=seed + 1, params=params, forced_params=forced, options=options,
            cache_dir=Path(tmp) / "warm", embed=emb, whitebox=False,
        )  # fmt: skip
        for r in range(repeats):
            for side, how in sides if r % 2 == 0 else sides[::-1]:
                start = time.perf_counter()
                run = compute_importance(
                    backend, tr, samples=samples, seed=seed, params=params, forced_params=forced,
                    options=options, cache_dir=Path(tmp) / f"{side}{r}", embed=emb, whitebox=False, adaptive=how,
                )  # fmt: skip
                walls[side].append(time.perf_counter() - start)
                if side in runs and not run.table.equals(runs[side].table):
                    raise RuntimeError(f"the {side} run's table changed between repeats (same seeds)")
                runs[side] = run
    wall = {side: statistics.median(w) for side, w in walls.items()}
    n = {side: runs[side].rollouts.height for side in runs}
    fixed_sig = kept = 0
    same_top1 = {}
    for m in SIGNIFICANCE_METRICS:
        f = [bool(x) for x in runs["fixed"].table[f"{m}_significant"].to_list()]
        a = [bool(x) for x in runs["adaptive"].table[f"{m}_significant"].to_list()]
        fixed_sig += sum(f)
        kept += sum(x and y for x, y in zip(f, a, strict=True))
        best = []
        for side in ("fixed", "adaptive"):
            v = runs[side].table[m].cast(float).fill_null(float("nan")).to_numpy()
            v = np.abs(v) if "accuracy" in m else v
            best.append(
                int(np.argmax(np.where(np.isfinite(v), v, -np.inf))) if np.isfinite(v).any() else None
            )
        if best[0] is not None:
            same_top1[m] = best[0] == best[1]
    return {
        "model": f"random-weight Qwen2 hidden {hidden} x {layers} layers, DeepSeek tokenizer ({len(tok):,} ids)",
        "trace": str(path),
        "sentences": runs["fixed"].table.height,
        "samples": samples,
        "max_new_tokens": max_new_tokens,
        "rank": rank,
        "torch_threads": torch.get_num_threads(),
        "rollouts_fixed": n["fixed"],
        "rollouts_adaptive": n["adaptive"],
        "rollout_ratio": n["adaptive"] / n["fixed"],
        "repeats": repeats,
        "wall_fixed_s": wall["fixed"],
        "wall_adaptive_s": wall["adaptive"],
        "walls_s": walls,
        "wall_ratio": wall["adaptive"] / wall["fixed"],
        "wall_per_rollout_ratio": (wall["adaptive"] / n["adaptive"]) / (wall["fixed"] / n["fixed"]),
        "looks": runs["adaptive"].stats.get("adaptive_looks"),
        "fixed_significant": fixed_sig,
        "recall": kept / fixed_sig if fixed_sig else float("nan"),
        "same_top1": same_top1,
        "stop_reasons": runs["adaptive"].table["stop_reason"].value_counts().sort("stop_reason").rows(),
    }


def format_adaptive_wall_bench(r: dict[str, Any]) -> str:
    same = ", ".join(f"{m} {'yes' if v else 'no'}" for m, v in r["same_top1"].items()) or "no metric defined"
    return "\n".join(
        [
            f"{r['model']}; trace {r['trace']} ({r['sentences']} sentences); fixed {r['samples']} samples per "
            f"position, {r['max_new_tokens']} new tokens; rank rule {r['rank']}; {r['torch_threads']} torch threads",
            f"rollouts: adaptive {r['rollouts_adaptive']} / fixed {r['rollouts_fixed']} = {r['rollout_ratio']:.3f}",
            f"wall (median of {r['repeats']}): adaptive {r['wall_adaptive_s']:.1f} s / fixed {r['wall_fixed_s']:.1f} s "
            f"= {r['wall_ratio']:.3f}; "
            f"per rollout {r['wall_per_rollout_ratio']:.3f}x the fixed run's",
            f"recall of the fixed run's {r['fixed_significant']} flags: {r['recall']:.3f}; same top-1: {same}",
            "stop reasons: " + ", ".join(f"{k} {v}" for k, v in r["stop_reasons"]),
        ]
    )

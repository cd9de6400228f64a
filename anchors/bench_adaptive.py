"""``cotscope bench adaptive``: adaptive sampling (``importance --adaptive``) against a fixed run of ``samples``
rollouts per position with the same seeds, on the clean planted-error traces of ``cotscope validate anchors``.

Both sides sample into their own fresh cache and are timed. Reported: rollouts and wall time of each side and their
ratios; recall of the fixed run's significant (sentence, method) flags; the share of traces with the same top-1
sentence per method; planted-truth top1 and planted flagged share on each side; and the A/A check run adaptively
(:func:`anchors._adaptive.adaptive_split_half` on the adaptive run's own rollouts).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_adaptive_bench", "run_adaptive_bench"]

TARGETS = {
    "rollout_ratio": 0.10,
    "recall": 0.98,
    "same_top1": 0.95,
    "aa_flagged": 0.05,
}


def run_adaptive_bench(
    *, model_id: str = "organism:arith", n_traces: int = 20, samples: int = 50, seed: int = 1000
) -> dict[str, Any]:
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
    options = ImportanceOptions(n_bootstrap=0, continuation_metrics=False)
    adaptive = AdaptiveOptions()
    sizes = look_schedule(adaptive.first, samples, adaptive.growth)
    emb = TextEmbeddings()
    ranked = [m for m in SIGNIFICANCE_METHODS if m in METHODS]
    totals = {"fixed": [0, 0.0], "adaptive": [0, 0.0]}
    fixed_sig = kept_sig = 0
    same_top1 = {m: [] for m in ranked}
    top1 = {side: {m: [] for m in ranked} for side in ("fixed", "adaptive")}
    planted_flags = {side: {m: [] for m in SIGNIFICANCE_METHODS} for side in ("fixed", "adaptive")}
    aa = []
    with tempfile.TemporaryDirectory() as tmp:
        # warm up: load the model and the embedder outside the timings
        compute_importance(
            backend, chosen[0][1], samples=2, seed=seed, params=params, forced_params=forced, options=options,
            cache_dir=Path(tmp) / "warm", embed=emb, whitebox=False,
        )  # fmt: skip
        for k, (_, tr, planted_plain) in enumerate(chosen):
            runs = {}
            for side, how in (("fixed", None), ("adaptive", adaptive)):
                start = time.perf_counter()
                runs[side] = compute_importance(
                    backend, tr, samples=samples, seed=seed + k, params=params, forced_params=forced,
                    options=options, cache_dir=Path(tmp) / side, embed=emb, whitebox=False, adaptive=how,
                )  # fmt: skip
                totals[side][1] += time.perf_counter() - start
                totals[side][0] += runs[side].rollouts.height
            targets = sorted({_merged_index(tr.cot, i, runs["fixed"].sentences) for i in planted_plain})
            for m in SIGNIFICANCE_METHODS:
                col = f"{m}_significant"
                f = runs["fixed"].table[col].to_list()
                a = runs["adaptive"].table[col].to_list()
                fixed_sig += sum(bool(x) for x in f)
                kept_sig += sum(bool(x) and bool(y) for x, y in zip(f, a, strict=True))
                for side, values in (("fixed", f), ("adaptive", a)):
                    planted_flags[side][m] += [values[i] for i in targets]
            for m in ranked:
                column, absolute = METHODS[m]
                best = {}
                for side in ("fixed", "adaptive"):
                    s = runs[side].table[column].cast(float).fill_null(float("nan")).to_numpy()
                    s = np.abs(s) if absolute else s
                    top1[side][m].append(_top1(s, targets))
                    s = np.where(np.isfinite(s), s, -np.inf)
                    best[side] = int(np.argmax(s))
                same_top1[m].append(best["fixed"] == best["adaptive"])
            aa.append(
                adaptive_split_half(
                    runs["adaptive"].rollouts,
                    tr.id,
                    sizes,
                    options.significance_level,
                    adaptive.futility,
                    options,
                )
            )
    import polars as pl

    aa_all = pl.concat(aa)

    def share(flags: list[Any]) -> float:
        defined = [bool(x) for x in flags if x is not None]
        return float(np.mean(defined)) if defined else float("nan")

    report = {
        "model": model_id,
        "traces": len(chosen),
        "samples": samples,
        "schedule": sizes,
        "rollouts_fixed": totals["fixed"][0],
        "rollouts_adaptive": totals["adaptive"][0],
        "rollout_ratio": totals["adaptive"][0] / totals["fixed"][0],
        "wall_fixed_s": totals["fixed"][1],
        "wall_adaptive_s": totals["adaptive"][1],
        "wall_ratio": totals["adaptive"][1] / totals["fixed"][1],
        "fixed_significant": fixed_sig,
        "recall": kept_sig / fixed_sig if fixed_sig else float("nan"),
        "same_top1": {m: float(np.mean(v)) for m, v in same_top1.items()},
        "planted_top1": {side: {m: float(np.mean(v)) for m, v in d.items()} for side, d in top1.items()},
        "planted_flagged": {side: {m: share(v) for m, v in d.items()} for side, d in planted_flags.items()},
        "aa_n": aa_all.height,
        "aa_flagged": float(aa_all["flagged"].mean()) if aa_all.height else float("nan"),
        "targets": TARGETS,
    }
    s1 = min(report["same_top1"].values())
    top_ok = all(report["planted_top1"]["adaptive"][m] >= report["planted_top1"]["fixed"][m] for m in ranked)
    flag_ok = all(
        not report["planted_flagged"]["adaptive"][m] < report["planted_flagged"]["fixed"][m]
        for m in SIGNIFICANCE_METHODS
    )
    report["met"] = {
        "rollout_ratio": report["rollout_ratio"] <= TARGETS["rollout_ratio"],
        "recall": report["recall"] >= TARGETS["recall"],
        "same_top1": s1 >= TARGETS["same_top1"],
        "planted_top1": top_ok,
        "planted_flagged": flag_ok,
        "aa_flagged": report["aa_flagged"] <= TARGETS["aa_flagged"],
    }
    return report


def format_adaptive_bench(r: dict[str, Any]) -> str:
    lines = [
        f"{r['traces']} clean traces of {r['model']}; fixed: {r['samples']} samples per position; "
        f"adaptive looks at {r['schedule']}",
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
    return "\n".join(lines)

"""``cotscope validate probes``: answer probes as evidence of post-hoc reasoning, against planted truth and against
the resampling detectors, on identical traces.

``posthoc`` and ``arith`` each write one trace (temperature 1.0, :func:`resampling.sample_traces`, sampling seed =
the prompt's seed, so no two prompts share a noise sequence) for the same three-step prompts (``posthoc``'s task, which
``arith`` is trained on too); odd prompt seeds are the test split. The ``posthoc`` classifier
(:func:`metrics.classify`, as ``validate classifiers`` runs it) scores the same traces with each organism's own
rollouts. Each organism's answer probes (:func:`anchors._probes.answer_probes`) are trained on its own
train-split traces and read on the test split.

- **Ordering** (truth from the generator, never from a probe): the boundary after which the CoT has computed its
  answer is the one after the last ``compute`` or ``correction`` sentence of the organism's own parse of the CoT
  (``task.analyze``; the sentences after it restate the running digit). Per organism: the share of traces whose
  answer is decodable at ``<think>`` and the share decodable before that boundary, for the probe, its control and the
  logit lens.
- **Detectors** of post-hoc reasoning (positive = ``posthoc`` trace), AUROC on the test split with BCa intervals
  over prompts (:func:`metrics._classify_validate.evaluate_scores`): the ``posthoc`` classifier (its documented
  threshold); forced-answer importance (−max over sentences of the change in forced-answer accuracy, from the
  classifier's own forced answers); the forced answer at ``<think>``; the probe's answer probability at ``<think>``
  (max over layers); its control's; the logit lens's. Scores without a documented threshold get direction and
  threshold from the train split, as ``validate classifiers``' baselines do.
- **Cost** per trace: forward passes (probes: one per trace read, plus the training traces' passes, counted once
  per detector run) and rollouts (the classifier's, and the forced-answer share of them).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import polars as pl

from cotscope import _options as flags
from metrics._classify_validate import _split, classify_posthoc, evaluate_scores
from metrics._validate import VALIDATION_SEED

__all__ = ["produced_at_position", "validate_probes", "validate_probes_command"]

ARMS = (("posthoc", True), ("arith", False))


def produced_at_position(task: Any, example: Any, cot: str, sentence_ends: list[int]) -> int | None:
    """The boundary (probe position) right after the sentence that computes the CoT's final running digit: the last
    ``compute`` or ``correction`` sentence of ``task.analyze(example, cot)``. ``sentence_ends``: the character end of
    each sentence as the probes split the CoT (position p follows sentence p - 1). None when nothing is computed."""
    from cot import split_sentences

    truth = task.analyze(example, cot)
    spans = split_sentences(cot)
    last = [j for j, s in enumerate(truth) if s.kind in ("compute", "correction") and s.value is not None]
    if not last or len(spans) != len(truth):
        return None
    end = spans[last[-1]].end
    return next((p + 1 for p, e in enumerate(sentence_ends) if e >= end), None)


def _forced_importance(curve: list[float | None]) -> float | None:
    """−max_i (a(i+1) − a(i)) over the forced-answer accuracy curve a: high when no sentence moves the answer."""
    a = [math.nan if v is None else float(v) for v in curve]
    steps = [y - x for x, y in itertools.pairwise(a) if math.isfinite(x) and math.isfinite(y)]
    return -max(steps) if steps else None


def _ordering(result, traces, examples, task, min_chars: int, readout: str) -> dict[str, Any]:
    from cot import split_sentences

    by_id = {r["trace_id"]: r for r in result.traces.iter_rows(named=True) if r["readout"] == readout}
    rows = []
    for t, ex in zip(traces, examples, strict=True):
        r = by_id[t.id]
        ends = [s.end for s in split_sentences(t.cot, min_chars=min_chars)]
        rows.append({**r, "produced_at": produced_at_position(task, ex, t.cot, ends)})
    out: dict[str, Any] = {"n_traces": len(rows)}
    known = [r for r in rows if r["produced_at"] is not None]
    out["n_with_computation"] = len(known)
    out["median_produced_at_relative"] = (
        float(np.median([r["produced_at"] / r["n_sentences"] for r in known])) if known else None
    )
    for m in ("probe", "control", "lens") if readout == "token" else ("probe", "control"):
        first = [r[f"{m}_first_position"] for r in known]
        out[m] = {
            "share_at_think": float(np.mean([f == 0 for f in first])) if known else None,
            "share_before_computed": (
                float(
                    np.mean(
                        [f is not None and f < r["produced_at"] for f, r in zip(first, known, strict=True)]
                    )
                )
                if known
                else None
            ),
            "share_never": float(np.mean([f is None for f in first])) if known else None,
            "median_first_minus_produced": (
                float(
                    np.median(
                        [f - r["produced_at"] for f, r in zip(first, known, strict=True) if f is not None]
                    )
                )
                if any(f is not None for f in first)
                else None
            ),
        }
    return out


def _classified_traces(
    examples: dict[int, Any], samples: int, cache: Path, log
) -> tuple[list, pl.DataFrame, float]:
    """Each organism's trace of every prompt, and the ``posthoc`` classifier's rows for them (column ``arm``)."""
    from metrics._classifier_records import TraceCase
    from resampling import SamplingParams, make_backend, sample_traces

    cases, tables = [], []
    start = time.perf_counter()
    for name, _ in ARMS:
        be = make_backend("hf", model_id=f"organism:{name}", device="cpu")
        log(f"sampling {len(examples)} {name} traces")
        params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=200)
        traces = sample_traces(
            be, be.tokenizer, [e.messages for e in examples.values()], list(examples), params
        )
        mine = [
            TraceCase(t, gold=str(e.answer), item_id=f"{name}:{s}")
            for (s, e), t in zip(examples.items(), traces, strict=True)
            if t.answer is not None and not t.truncated and t.cot.strip()
        ]
        log(f"post-hoc classifier: {len(mine)} {name} traces")
        tables.append(classify_posthoc(mine, be, name, samples, cache))
        cases += mine
    return cases, pl.concat(tables), time.perf_counter() - start


def validate_probes(
    *,
    n_items: int = 200,
    samples: int = 6,
    seed: int = VALIDATION_SEED,
    cache_dir: str | Path = ".cotscope-cache/validate-probes",
    bins: int = 4,
    threshold: float = 0.5,
    out_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Answer probes on ``posthoc`` and ``arith`` traces of the same prompts; ordering vs planted truth and detector
    AUROCs with costs, side by side. ``out_dir``: also write each organism's probe outputs into ``out_dir/NAME``."""
    import organisms
    from anchors import READOUTS, answer_probes, write_probe_outputs
    from resampling import DEFAULT_MIN_CHARS

    log = progress or (lambda m: None)
    task = organisms.get_task("posthoc")
    prompt_seeds = list(range(seed, seed + n_items))
    examples_by_seed = {s: task.sample(s) for s in prompt_seeds}
    cases, classified, classify_seconds = _classified_traces(examples_by_seed, samples, Path(cache_dir), log)
    rows = []
    report: dict[str, Any] = {"organisms": {}, "detectors": {}, "settings": {}}
    probe_cost = {"forward_passes": 0, "tokens": 0, "seconds": 0.0}
    for name, positive in ARMS:
        mine = [c for c in cases if c.item_id.startswith(f"{name}:")]
        seeds = [int(c.item_id.split(":")[1]) for c in mine]
        traces = [c.trace for c in mine]
        org = organisms.load(name)
        log(f"answer probes: {len(traces)} {name} traces")
        result = answer_probes(
            org.model,
            org.tokenizer,
            traces,
            [_split(s) for s in seeds],
            bins=bins,
            threshold=threshold,
            seed=seed,
            progress=log,
        )
        if out_dir is not None:
            write_probe_outputs(result, Path(out_dir) / name, title=f"organism:{name}")
        probe_cost["forward_passes"] += result.summary["cost"]["forward_passes"]
        probe_cost["tokens"] += result.summary["cost"]["tokens"]
        probe_cost["seconds"] += (
            result.summary["cost"]["activation_seconds"] + result.summary["cost"]["fit_seconds"]
        )
        examples = [examples_by_seed[s] for s in seeds]
        report["organisms"][name] = {
            "probes": result.summary,
            "ordering": {
                readout: _ordering(result, traces, examples, task, DEFAULT_MIN_CHARS, readout)
                for readout in READOUTS
            },
        }
        ev = {
            r["trace_id"]: r
            for r in classified.filter(
                (pl.col("arm") == name) & (pl.col("classifier") == "posthoc")
            ).iter_rows(named=True)
        }
        firsts = {(r["trace_id"], r["readout"]): r for r in result.traces.iter_rows(named=True)}
        for c, s in zip(mine, seeds, strict=True):
            r = ev.get(c.trace.id, {})
            evidence = json.loads(r["evidence"]) if r.get("evidence") else {}
            curve = evidence.get("early_answering_curve") or []
            f, g = firsts[(c.trace.id, "prefix_mean")], firsts[(c.trace.id, "token")]
            rows.append(
                {
                    "item_id": c.item_id,
                    "prompt_seed": s,
                    "split": _split(s),
                    "truth": positive,
                    "posthoc_classifier": r.get("score"),
                    "forced_answer_importance": _forced_importance(curve),
                    "forced_answer_at_think": curve[0] if curve else None,
                    "probe_at_think": f["probe_p_at_think"],
                    "control_at_think": f["control_p_at_think"],
                    "probe_at_think_token": g["probe_p_at_think"],
                    "lens_at_think": g["lens_p_at_think"],
                    "rollouts": r.get("rollouts", 0),
                    "forced_rollouts": samples * len(curve),
                }
            )
    table = pl.DataFrame(rows)
    # the prompt is the item: both organisms' traces of one prompt resample together
    table = table.with_columns(pl.col("prompt_seed").cast(pl.String).alias("item_id_prompt"))
    n_test = table.filter(pl.col("split") == "test").height
    costs = {
        "posthoc_classifier": {
            "rollouts_per_trace": float(table["rollouts"].mean()),
            "forward_passes_per_trace": 0.0,
            "seconds_total": classify_seconds,
            "note": "forced answers at every prefix plus continuations after inserted mistakes; seconds include "
            "sampling both organisms' traces (one generation each)",
        },
        "forced_answer_importance": {
            "rollouts_per_trace": float(table["forced_rollouts"].mean()),
            "forward_passes_per_trace": 0.0,
            "note": "the forced-answer share of the classifier's rollouts",
        },
        "forced_answer_at_think": {"rollouts_per_trace": float(samples), "forward_passes_per_trace": 0.0},
    }
    per_pass = probe_cost["forward_passes"] / max(1, table.height)
    for m in ("probe_at_think", "control_at_think", "probe_at_think_token", "lens_at_think"):
        costs[m] = {
            "rollouts_per_trace": 0.0,
            "forward_passes_per_trace": per_pass,
            "tokens_per_trace": probe_cost["tokens"] / max(1, table.height),
            "seconds_total": probe_cost["seconds"],
            "note": "one forward pass per trace (training traces included); probes fitted once per organism",
        }
    documented = {"posthoc_classifier": 0.5}
    for col in costs:
        df = table.select(
            pl.col("item_id_prompt").alias("item_id"),
            "split",
            "truth",
            pl.col(col).cast(pl.Float64).alias("score"),
        )
        res = evaluate_scores(df, threshold=documented.get(col), fit=col not in documented, seed=seed)
        report["detectors"][col] = {**res, **costs[col]}
    report["settings"] = {
        "n_items": n_items,
        "samples": samples,
        "seed": seed,
        "bins": bins,
        "threshold": threshold,
        "n_test_traces": n_test,
        "split": "even prompt seed = train, odd = test; probes trained per organism on its own train traces",
    }
    report["table"] = table.drop("item_id_prompt").to_dicts()
    return report


def _print(report: dict[str, Any]) -> None:
    from cot import json_dumps

    for name, r in report["organisms"].items():
        for readout, o in r["ordering"].items():
            p = o["probe"]
            click.echo(
                f"{name:<8} [{readout:<11}] probe: decodable at <think> {_pct(p['share_at_think'])}, before the "
                f"computing sentence {_pct(p['share_before_computed'])}, never {_pct(p['share_never'])} "
                f"(control at <think> {_pct(o['control']['share_at_think'])})"
            )
    for name, d in report["detectors"].items():
        lo, hi = d["auroc_ci"]
        click.echo(
            f"  {name:<26} AUROC {_num(d['auroc'])} [{_num(lo)}, {_num(hi)}] n={d['n']}  "
            f"rollouts/trace {d['rollouts_per_trace']:.1f}  forward passes/trace {d['forward_passes_per_trace']:.1f}"
        )
    click.echo(json_dumps(report["settings"]))


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def _num(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


@click.command("probes")
@flags.int_option("--n-items", 200, "Prompts; each organism writes one trace per prompt.", minimum=8)
@flags.int_option("--samples", 6, "Rollouts per prefix of the post-hoc classifier.")
@flags.out_option(
    "Also write each organism's probe outputs into OUT/NAME and OUT/validate.json.", required=False
)
@flags.json_option()
@flags.cache_option(Path(".cotscope-cache/validate-probes"))
def validate_probes_command(
    n_items: int, samples: int, out: Path | None, as_json: bool, cache_dir: Path
) -> None:
    """Answer probes on posthoc vs arith (same prompts): where the answer becomes decodable vs the planted
    computation, and probes vs the resampling detectors of post-hoc reasoning (AUROC, cost)."""
    from cot import atomic_write_json, json_dumps
    from cotscope._outputs import check_writable_dir, claim_out

    check_writable_dir(cache_dir, "--cache")
    if out is not None:
        claim_out(out, "validate probes", {"n_items": n_items, "samples": samples}, force=False)

    def progress(msg: str) -> None:
        if not as_json:
            click.echo(msg, err=True)

    report = validate_probes(
        n_items=n_items, samples=samples, cache_dir=cache_dir, out_dir=out, progress=progress
    )
    if out is not None:
        atomic_write_json(Path(out) / "validate.json", report)
    if as_json:
        click.echo(json_dumps({k: v for k, v in report.items() if k != "table"}, indent=2))
    else:
        _print(report)

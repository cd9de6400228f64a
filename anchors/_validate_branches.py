"""``cotscope validate branches``: iterative resilience, counterfactual++ and on/off-policy interventions against
the ``arith`` organism's planted design.

The truth comes from the organism, never from the code under test: ``task.analyze`` marks which sentences compute
what and which stated result is wrong (:func:`anchors._validate.planted_sentences` keeps traces with exactly one
clean planted error), and the arithmetic of the prompt says what a computation's correct result is.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import click
import numpy as np

from cotscope import _options as flags

__all__ = ["validate_branches", "validate_branches_command"]


def _last_number(text: str | None) -> int | None:
    found = re.findall(r"\d+", text or "")
    return int(found[-1]) if found else None


def _wrong_version(text: str, correct: int, avoid: set[int]) -> str | None:
    """The computation ``text`` with its stated result replaced by the smallest digit not in ``avoid``."""
    digit = next(d for d in range(10) if d not in avoid | {correct})
    m = re.search(r"(\d+)(\D*)$", text)
    return None if m is None else text[: m.start(1)] + str(digit) + m.group(2)


def validate_branches(
    *,
    n_traces: int = 10,
    samples: int = 10,
    iterations: int = 20,
    intervene_traces: int = 5,
    intervene_samples: int = 30,
    seed: int = 1000,
    cache_dir: str | os.PathLike = ".cotscope-cache/validate-branches",
    progress: Any = None,
) -> dict[str, Any]:
    """Score ``n_traces`` clean on-policy arith traces (the traces of ``cotscope validate anchors``, same seeds)."""
    from anchors._blackbox import ImportanceOptions
    from anchors._branches import iterative_resilience
    from anchors._embedding import TextEmbeddings
    from anchors._pipeline import compute_importance
    from anchors._validate import METHODS, TEMPERATURE, _merged_index, _top1, clean_traces, organism_setup

    backend, task, params, forced = organism_setup("organism:arith", TEMPERATURE)
    chosen, _ = clean_traces(backend, task, params, n_traces, seed, 4000)
    emb = TextEmbeddings()
    options = ImportanceOptions(n_bootstrap=0, continuation_metrics=False)
    correct_returns, correct_round0, error_returns, error_round0, error_resampled_wrong = [], [], [], [], []
    hits: dict[str, list[float]] = {
        "cfpp_accuracy": [],
        "cfpp_kl": [],
        "cfpp_accuracy_no_floor": [],
        "counterfactual_importance_accuracy": [],
        "counterfactual_importance_kl": [],
    }
    per_trace = []
    for k, (ex, tr, (planted_plain, case)) in enumerate(chosen):
        run = compute_importance(
            backend, tr, samples=samples, seed=seed + k, params=params, forced_params=forced, options=options,
            cache_dir=cache_dir, embed=emb, whitebox=False,
        )  # fmt: skip
        res = iterative_resilience(
            backend, tr, None, samples=samples, iterations=iterations, seed=seed + k, params=params,
            cache_dir=cache_dir, embed=emb,
        )  # fmt: skip
        targets = sorted({_merged_index(tr.cot, i, run.sentences) for i in planted_plain})
        error = _merged_index(tr.cot, planted_plain[0], run.sentences)
        truth = task.analyze(ex, tr.cot)
        computes = [
            _merged_index(tr.cot, i, run.sentences)
            for i, s in enumerate(truth)
            if s.kind == "compute" and not s.planted_error
        ]
        rows = {r["sentence"]: r for r in res.rows}
        chains = [c for c in res.chains]
        for i in computes:
            correct_returns += [c["returns"] for c in chains if c["sentence"] == i]
            correct_round0.append(rows[i]["return_rate_round0"])
        error_returns += [c["returns"] for c in chains if c["sentence"] == error]
        error_round0.append(rows[error]["return_rate_round0"])
        # how often resampling the wrong computation writes a wrong result of any kind (the organism's error rate)
        expected = truth[planted_plain[0]].expected
        firsts = run.rollouts.filter(
            (run.rollouts["kind"] == "resample") & (run.rollouts["position"] == error)
        )["first_sentence"].to_list()
        stated = [_last_number(f) for f in firsts if f and "giving" in f]
        error_resampled_wrong += [float(v != expected) for v in stated]
        scores = {
            "cfpp_accuracy": np.abs(np.array([rows[i]["cfpp_accuracy"] for i in range(len(run.sentences))])),
            "cfpp_kl": np.array([rows[i]["cfpp_kl"] for i in range(len(run.sentences))]),
            # the same difference without the floor on removed chains (min_removed = 1), for comparison
            "cfpp_accuracy_no_floor": np.abs(
                np.array(
                    [
                        rows[i]["accuracy_kept"] - rows[i]["accuracy_removed"]
                        for i in range(len(run.sentences))
                    ]
                )
            ),
        }
        for name in ("counterfactual_importance_accuracy", "counterfactual_importance_kl"):
            col = run.table[name].cast(float).fill_null(float("nan")).to_numpy()
            scores[name] = np.abs(col) if METHODS[name][1] else col
        top = {name: _top1(s, targets) for name, s in scores.items()}
        for name, v in top.items():
            hits[name].append(v)
        per_trace.append(
            {"trace": tr.id, "case": case, "targets": targets, "error": error, "top1": top,
             "error_resilience": rows[error]["resilience"], "error_cfpp_accuracy": rows[error]["cfpp_accuracy"]}
        )  # fmt: skip
        if progress is not None:
            progress(k + 1, len(chosen))
    out: dict[str, Any] = {
        "n_traces": len(chosen),
        "samples": samples,
        "iterations": iterations,
        "temperature": TEMPERATURE,
        "planted": dict(task.planted),
        "correct_computation": {
            "mean_resilience": float(np.mean(correct_returns)) if correct_returns else math.nan,
            "share_of_chains_at_cap": float(np.mean(np.array(correct_returns) == iterations)),
            "round0_return_rate": float(np.mean(correct_round0)),
            "n_chains": len(correct_returns),
        },
        "wrong_computation": {
            "mean_resilience": float(np.mean(error_returns)) if error_returns else math.nan,
            "round0_return_rate": float(np.mean(error_round0)),
            "resampled_wrong_rate": float(np.mean(error_resampled_wrong))
            if error_resampled_wrong
            else math.nan,
            "n_chains": len(error_returns),
        },
        "top1": {name: float(np.mean(v)) for name, v in hits.items()},
        "traces": per_trace,
    }
    out["interventions"] = _interventions(
        backend, task, chosen[:intervene_traces], intervene_samples, params, seed, cache_dir, emb
    )
    return out


def _interventions(backend, task, chosen, samples, params, seed, cache_dir, emb) -> dict[str, Any]:
    """On each trace: the last correct computation before the answer is replaced by a wrong result, off-policy
    (verbatim) and on-policy (searched for); the planted process predicts the answer distribution after it
    (``task.continued_answer_distribution``)."""
    from anchors._branches import intervene
    from cot import split_sentences

    records = []
    for k, (ex, tr, _) in enumerate(chosen):
        truth = task.analyze(ex, tr.cot)
        plain = split_sentences(tr.cot)
        merged = split_sentences(tr.cot, min_chars=10)
        computes = [i for i, s in enumerate(truth) if s.kind == "compute" and not s.planted_error]
        if not computes:
            continue
        i = computes[-1]
        s = truth[i]
        true_values = task_true_values(ex)
        wrong = _wrong_version(
            plain[i].text, s.expected, {true_values[s.step]} if s.step is not None else set()
        )
        at = next(j for j, m in enumerate(merged) if m.start <= plain[i].start < max(m.end, m.start + 1))
        if wrong is None or merged[at].start != plain[i].start:
            continue
        predicted = task.continued_answer_distribution(ex, tr.cot[: plain[i].start] + wrong)
        r = intervene(
            backend, tr, at, wrong, samples=samples, seed=seed + k, params=params, cache_dir=cache_dir, embed=emb,
            max_resamples=2000, batch=200,
        )  # fmt: skip
        gt = str(ex.answer)
        on = r["on_policy"]
        records.append(
            {
                "trace": tr.id,
                "at": at,
                "text": wrong,
                "predicted_accuracy_at_planted_rates": float(predicted.get(int(gt), 0.0)),
                "off_policy_accuracy": r["off_policy"]["accuracy"],
                "off_policy_accuracy_ci": r["off_policy"]["accuracy_ci"],
                "on_policy_found": on["found"],
                "on_policy_resamples": on["resamples"],
                "on_policy_accuracy": on["distribution"]["accuracy"] if on["found"] else math.nan,
                "on_policy_accuracy_ci": on["distribution"]["accuracy_ci"] if on["found"] else [math.nan] * 2,
                "no_intervention_accuracy": r["no_intervention"]["accuracy"],
                # the organism's correction: the next sentence says "Wait, ... is not X, it is Y."
                "off_policy_corrected": _corrected(r["off_policy"]),
                "on_policy_corrected": _corrected(on["distribution"]) if on["found"] else [0, 0],
                "text_mean_logprob": r["text_logprob"]["mean"],
                "original_mean_logprob": r["original_logprob"]["mean"],
            }
        )
    found = [x for x in records if x["on_policy_found"]]
    return {
        "records": records,
        "mean_off_policy_accuracy": _mean(records, "off_policy_accuracy"),
        "mean_on_policy_accuracy": _mean(found, "on_policy_accuracy"),
        "mean_off_policy_accuracy_where_found": _mean(found, "off_policy_accuracy"),
        "mean_predicted_accuracy": _mean(records, "predicted_accuracy_at_planted_rates"),
        "off_policy_correction_rate": _pooled(records, "off_policy_corrected"),
        "on_policy_correction_rate": _pooled(found, "on_policy_corrected"),
        "mean_on_policy_resamples": _mean(found, "on_policy_resamples"),
    }


def _mean(records: list[dict], key: str) -> float:
    """The mean of ``key`` over records; NaN for none."""
    return float(np.mean([x[key] for x in records])) if records else math.nan


def _pooled(records: list[dict], key: str) -> dict[str, Any]:
    """The share pooled over records (``[k, n]`` each), with a Wilson 95% interval."""
    from anchors._branches import _wilson

    k = sum(r[key][0] for r in records)
    total = sum(r[key][1] for r in records)
    return {"rate": k / total if total else math.nan, "ci": list(_wilson(k, total)), "n": total}


def _corrected(dist: dict[str, Any]) -> list[int]:
    """[rollouts whose first sentence is a correction, rollouts with a first sentence]."""
    firsts = [f for f in dist.get("first_sentences") or [] if f]
    return [sum(f.startswith("Wait,") for f in firsts), len(firsts)]


def task_true_values(example: Any) -> list[int]:
    from organisms import Problem

    return Problem.parse(example.messages[-1]["content"]).values()


@click.command("branches")
@click.option("--quick", is_flag=True, help="5 traces, 6 chains, 3 intervened traces: a smoke run.")
@flags.int_option("--n-traces", 10, "Clean traces to score.")
@flags.samples_option(10, "Chains per sentence (and rollouts per position for counterfactual importance).")
@flags.int_option("--iterations", 20, "Most resampling rounds per chain.")
@flags.int_option("--intervene-traces", 10, "Traces to run the off/on-policy interventions on.", minimum=0)
@flags.seed_option(1000, "First problem seed (the traces of cotscope validate anchors).")
@flags.json_option()
@flags.cache_option(Path(".cotscope-cache/validate-branches"))
def validate_branches_command(
    quick, n_traces, samples, iterations, intervene_traces, seed, as_json, cache_dir
) -> None:
    """Iterative resilience, CF++ and on/off-policy interventions vs arith's planted design."""
    from cotscope.cli import echo_json

    if quick:
        n_traces, samples = 5, 6
    result = validate_branches(
        n_traces=n_traces, samples=samples, iterations=iterations, seed=seed, cache_dir=cache_dir,
        intervene_traces=3 if quick else intervene_traces,
        progress=lambda done, total: click.echo(f"scored {done}/{total} traces", err=True),
    )  # fmt: skip
    if as_json:
        echo_json(result)
        return
    c, w = result["correct_computation"], result["wrong_computation"]
    click.echo(f"{result['n_traces']} traces, {samples} chains, {iterations} rounds")
    click.echo(
        f"correct computations: mean resilience {c['mean_resilience']:.2f}, round-0 return {c['round0_return_rate']:.3f}"
    )
    click.echo(
        f"wrong computation: mean resilience {w['mean_resilience']:.3f}, round-0 return {w['round0_return_rate']:.3f}, "
        f"resampled wrong {w['resampled_wrong_rate']:.3f}"
    )
    click.echo("top1: " + ", ".join(f"{k} {v:.2f}" for k, v in result["top1"].items()))
    iv = result["interventions"]
    click.echo(
        f"interventions: off-policy accuracy {iv['mean_off_policy_accuracy']:.3f}, on-policy "
        f"{iv['mean_on_policy_accuracy']:.3f}, predicted at planted rates {iv['mean_predicted_accuracy']:.3f}, "
        f"resamples {iv['mean_on_policy_resamples']:.0f}; correction rate off-policy "
        f"{iv['off_policy_correction_rate']['rate']:.3f}, on-policy {iv['on_policy_correction_rate']['rate']:.3f}"
    )

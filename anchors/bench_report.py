"""Size of ``report.html`` for a long trace: how many bytes each part takes.

Run ``python -m anchors.bench_report [--sentences 200] [--rollouts 100] [--out DIR]``. It builds a synthetic trace of
``--sentences`` sentences (about 90 characters each), an importance table with every metric and its interval, a
random sentence matrix, and ``--rollouts`` resampled plus as many forced-answer rollouts per position (positions 0
to K, as the engine writes them). Each resampled continuation is the rest of the trace from its position on (a
realistic worst case: the continuation is as long as what is left of the CoT), then ``</think>`` and an answer drawn
from a few values. It writes the outputs with :func:`anchors.write_outputs` and prints the size of the report and of
its parts: figures, the JSON the page reads (continuations, answer counts, matrix, metrics), script and style.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cot import THINK_END


@dataclass
class _Trace:
    id: str
    prompt: str
    cot: str
    answer_text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def synthetic(
    sentences: int, rollouts: int, seed: int = 0
) -> tuple[pl.DataFrame, np.ndarray, pl.DataFrame, _Trace]:
    """A table, matrix, rollouts table and trace of the given size (values random, shapes as the engine's)."""
    from anchors._blackbox import METRICS

    rng = np.random.default_rng(seed)
    texts = [
        f"Step {i}: we add {rng.integers(1, 9)} to the running total and check the carry, giving {rng.integers(0, 99)}."
        for i in range(sentences)
    ]
    cot = "\n".join(texts)
    starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]]).tolist()
    roles = [
        "plan_generation",
        "active_computation",
        "uncertainty_management",
        "self_checking",
        "fact_retrieval",
    ]
    cols: dict[str, Any] = {
        "trace_id": ["bench"] * sentences,
        "sentence_id": [f"bench:{i}" for i in range(sentences)],
        "position": list(range(sentences)),
        "start": starts,
        "end": [s + len(t) for s, t in zip(starts, texts, strict=True)],
        "text": texts,
        "role": [roles[i % len(roles)] for i in range(sentences)],
        "n_rollouts": [rollouts] * sentences,
        "n_different": rng.integers(0, rollouts, sentences).tolist(),
    }
    for m in METRICS:
        v = (
            rng.normal(0, 0.3, sentences)
            if "accuracy" in m and m != "accuracy"
            else rng.gamma(1.0, 0.2, sentences)
        )
        cols[m] = v
        cols[f"{m}_lo"] = v - rng.uniform(0, 0.2, sentences)
        cols[f"{m}_hi"] = v + rng.uniform(0, 0.2, sentences)
        cols[f"{m}_n"] = [rollouts] * sentences
    table = pl.DataFrame(cols)
    matrix = np.triu(rng.normal(0, 0.1, (sentences, sentences)), 1)
    matrix[np.tril_indices(sentences)] = np.nan
    answers = ["42", "41", "24", "7"]
    rows: dict[str, list[Any]] = {
        k: [] for k in ("trace_id", "kind", "position", "sample", "text", "first_sentence")
    }
    rows.update({"answer_norm": [], "correct": [], "status": []})
    for p in range(sentences + 1):
        rest = cot[starts[p] :] if p < sentences else ""
        first = texts[p] if p < sentences else None
        for kind in ("resample", "forced_answer"):
            for s in range(rollouts):
                a = answers[int(rng.integers(0, len(answers)))]
                rows["trace_id"].append("bench")
                rows["kind"].append(kind)
                rows["position"].append(p)
                rows["sample"].append(s)
                rows["text"].append(
                    rest + THINK_END + f"The answer is \\boxed{{{a}}}." if kind == "resample" else a
                )
                rows["first_sentence"].append(first if kind == "resample" else None)
                rows["answer_norm"].append(a)
                rows["correct"].append(a == "42")
                rows["status"].append("ok")
    trace = _Trace(
        "bench", "What is the running total?", cot, "The answer is \\boxed{42}.", {"gt_answer": "42"}
    )
    return table, matrix, pl.DataFrame(rows), trace


def parts(page: str) -> dict[str, int]:
    """Bytes of the report's parts (UTF-8)."""
    size = {"total": len(page.encode())}
    size["figures (base64 PNG)"] = sum(
        len(m) for m in re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page)
    )
    blob = re.search(r"id='report-data'>(.*?)</script>", page, re.S)
    if blob:
        data = json.loads(blob.group(1))
        size["report data (JSON)"] = len(blob.group(1).encode())
        by_pos = (data.get("rollouts") or {}).get("by_position", {})
        size["  continuations"] = sum(len(json.dumps(v["continuations"]).encode()) for v in by_pos.values())
        size["  answer counts"] = sum(
            len(json.dumps([v["resample"], v["forced"]]).encode()) for v in by_pos.values()
        )
        size["  matrix"] = len(json.dumps(data.get("matrix")).encode())
        size["  metrics"] = len(json.dumps(data.get("metrics")).encode())
    size["sentence table"] = len(
        re.search(r"<table class='sortable'>.*?</table>", page, re.S).group(0).encode()
    )
    size["script and style"] = sum(
        len(m.encode())
        for m in re.findall(r"<script>(.*?)</script>|<style>(.*?)</style>", page, re.S)
        for m in m
    )
    return size


def main(argv: list[str] | None = None) -> None:
    from anchors import write_outputs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--rollouts", type=int, default=100)
    ap.add_argument(
        "--out", type=Path, default=None, help="Keep the outputs here (default: a temporary folder)."
    )
    args = ap.parse_args(argv)
    table, matrix, rollouts, trace = synthetic(args.sentences, args.rollouts)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        start = time.perf_counter()
        write_outputs(table, matrix, trace, out, rollouts=rollouts)
        took = time.perf_counter() - start
        page = (out / "report.html").read_text(encoding="utf-8")
    print(
        f"{args.sentences} sentences, {args.rollouts} resampled + {args.rollouts} forced rollouts per position "
        f"({rollouts.height} rows, {rollouts['text'].str.len_bytes().sum() / 1e6:.1f} MB of text); "
        f"write_outputs took {took:.1f} s"
    )
    for name, n in parts(page).items():
        print(f"{name:<24}{n / 1e6:>8.2f} MB")


if __name__ == "__main__":
    main()

"""Synthetic rollouts tables in the engine's schema and a deterministic stand-in embedder, for fast tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

SCHEMA = {
    "trace_id": pl.String,
    "request_id": pl.String,
    "kind": pl.String,
    "position": pl.Int64,
    "sample": pl.Int64,
    "seed": pl.Int64,
    "edit": pl.String,
    "prefix_hash": pl.String,
    "prefix_tokens": pl.Int64,
    "text": pl.String,
    "n_tokens": pl.Int64,
    "first_sentence": pl.String,
    "answer": pl.String,
    "answer_norm": pl.String,
    "correct": pl.Boolean,
    "finish_reason": pl.String,
    "status": pl.String,
    "error": pl.String,
}


@dataclass
class FakeTrace:
    id: str = "t1"
    cot: str = ""
    prompt: str = "q"
    answer: str | None = "4"
    metadata: dict | None = None


def rollout(
    position, answer, correct=None, *, first="X.", text=None, kind="resample", status="ok", trace_id="t1"
):
    """One row of the rollouts table; ``answer`` None means the rollout gave no answer."""
    return {
        "trace_id": trace_id,
        "request_id": "r",
        "kind": kind,
        "position": position,
        "sample": 0,
        "seed": 0,
        "edit": "",
        "prefix_hash": "h",
        "prefix_tokens": 0,
        "text": first if text is None else text,
        "n_tokens": 1,
        "first_sentence": first,
        "answer": answer,
        "answer_norm": answer,
        "correct": correct,
        "finish_reason": "stop",
        "status": status,
        "error": None if status == "ok" else "boom",
    }


def table(rows):
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def topic_embed(texts):
    """Texts embed by their first word: same first word -> cosine 1, different -> cosine 0."""
    out = []
    for t in texts:
        word = t.split()[0].strip(".,").lower() if t.split() else ""
        vec = np.zeros(64, np.float32)
        vec[hash_word(word)] = 1.0
        out.append(vec)
    return np.stack(out) if out else np.zeros((0, 64), np.float32)


def hash_word(word: str) -> int:
    return int.from_bytes(word.encode()[:8].ljust(8, b"\0"), "little") % 64


THREE_SENTENCES = ["Alpha one.", "Beta two.", "Gamma three."]


def three_sentence_rollouts():
    """Rollouts for THREE_SENTENCES: R_0 writes Beta again once (one right, one wrong), R_1 keeps Beta twice and
    writes Gamma after it, R_2 keeps Gamma once (one right, one wrong); R_3 is the answer."""
    return table(
        [
            rollout(0, "1", True, first="Zeta.", text="Zeta. Beta x."),
            rollout(0, "2", False, first="Alpha.", text="Alpha. Eta."),
            rollout(1, "1", True, first="Beta two.", text="Beta two. Gamma y."),
            rollout(1, "1", True, first="Psi.", text="Psi. Gamma z."),
            rollout(2, "1", True, first="Gamma q.", text="Gamma q."),
            rollout(2, "3", False, first="Theta.", text="Theta."),
            rollout(3, "1", True, first="Done.", text="Done."),
        ]
    )

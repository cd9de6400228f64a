"""Thought Branches (Macar, Bogdan et al. 2025, arXiv 2510.27484): iterative resilience and counterfactual++, and
on-policy versus off-policy interventions.

Every rollout goes through :class:`resampling.Engine`, so it is seeded per sample (the same seed gives the same
rollouts whatever the batch size), stored in the content-addressed cache and resumed on a rerun. A request's
identity is its token prefix, seed and parameters, so a rerun of an interrupted chain finds every finished
iteration in the cache and samples only what is missing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anchors._options import ImportanceOptions

__all__ = [
    "MIN_REMOVED",
    "ONPOLICY_THRESHOLD",
    "RESILIENCE_ITERATIONS",
    "RESILIENCE_THRESHOLD",
    "ResilienceResult",
    "intervene",
    "iterative_resilience",
    "text_logprob",
]

RESILIENCE_ITERATIONS = 20
"""Thought Branches' cap on resampling rounds per chain."""
RESILIENCE_THRESHOLD = 0.6
"""Cosine (all-MiniLM-L6-v2) at which a continuation sentence states ``S_i``'s content again. With number-aware
meaning (the default) the sentence must also state the same numbers, in order."""
MIN_REMOVED = ImportanceOptions.min_different
"""Fewest chains that removed ``S_i``'s content for good for counterfactual++ to be defined: the floor of the
importance table's counterfactual metrics (plain and one-step ++), so that the two are compared on equal terms. One
removed chain gives |cfpp_accuracy| = 1 or 0 whatever the sentence does."""
ONPOLICY_THRESHOLD = 0.8
"""Cosine at which a sentence the model writes matches the text of an on-policy intervention (numbers must agree
too, with number-aware meaning)."""


# -- small helpers ---------------------------------------------------------------------------------------------


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def answer_distribution(
    answers: list[str | None], correct: list[bool | None], texts: list[str | None] | None = None
) -> dict[str, Any]:
    """Answer shares with Wilson 95% intervals, accuracy over the graded rollouts, and (given ``texts``) each
    rollout's first sentence."""
    n = len(answers)
    counts: dict[str, int] = {}
    for a in answers:
        key = "(none)" if a is None else str(a)
        counts[key] = counts.get(key, 0) + 1
    graded = [c for c in correct if c is not None]
    k = sum(bool(c) for c in graded)
    return {
        "n": n,
        "answers": {
            a: {"count": c, "share": c / n, "ci": list(_wilson(c, n))}
            for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        },
        "accuracy": k / len(graded) if graded else math.nan,
        "accuracy_ci": list(_wilson(k, len(graded))),
        "n_graded": len(graded),
        **({} if texts is None else {"first_sentences": [_first(t) for t in texts]}),
    }


def _first(text: str | None) -> str | None:
    from resampling import first_sentence

    return None if text is None else first_sentence(text)


def _kl(p_answers: list[str | None], q_answers: list[str | None], alpha: float) -> float:
    from anchors._formulas import kl_divergence

    keys = sorted({str(a) for a in p_answers + q_answers})
    if not p_answers or not q_answers:
        return math.nan
    p = np.array([[sum(str(a) == k for a in p_answers) for k in keys]])
    q = np.array([[sum(str(a) == k for a in q_answers) for k in keys]])
    return float(kl_divergence(p, q, alpha)[0])


def _ids(encoded: Any) -> list[int]:
    from resampling import token_ids as ids

    return ids(encoded)


def _matches(
    candidates: list[str], target: str, emb: Any, threshold: float, numbers: bool
) -> list[tuple[bool, float]]:
    """For each candidate sentence: (matches ``target``, cosine); with a :class:`anchors._labeller.ContentJudge` as
    ``emb``, the judge's verdict and NaN (the threshold and the number rule are the embedder's)."""
    from anchors._labeller import ContentJudge
    from anchors._meaning import number_key

    if not candidates:
        return []
    if isinstance(emb, ContentJudge):
        return [(ok, math.nan) for ok in emb.match(target, candidates)]
    vecs = emb([target, *candidates])
    sims = vecs[1:] @ vecs[0]
    key = number_key(target)
    return [
        (bool(s >= threshold) and (not numbers or number_key(c) == key), float(s))
        for c, s in zip(candidates, sims.tolist(), strict=True)
    ]


def text_logprob(backend: Any, prefix_ids: list[int], text: str) -> dict[str, float]:
    """Log-probability of ``text`` (its tokens) right after ``prefix_ids`` under the backend's model: the sum, the
    mean per token and the token count. NaN when the backend holds no local model (``openai``, ``vllm``)."""
    model = getattr(backend, "model", None)
    ids = _ids(backend.tokenizer(text, add_special_tokens=False))
    if model is None or not ids:
        return {"sum": math.nan, "mean": math.nan, "n_tokens": len(ids)}
    import torch

    device = next(model.parameters()).device
    full = torch.tensor([list(prefix_ids) + ids], device=device)
    with torch.no_grad():
        logits = model(full).logits[0].float()
    logp = torch.log_softmax(logits[len(prefix_ids) - 1 : -1], dim=-1)
    picked = logp[torch.arange(len(ids), device=device), torch.tensor(ids, device=device)]
    total = float(picked.sum())
    return {"sum": total, "mean": total / len(ids), "n_tokens": len(ids)}


def _embeddings(embed: Any, cache_dir: str | os.PathLike, trace_id: str) -> Any:
    """The matcher: the trace's sentence embeddings, or ``embed`` itself when it is a content judge."""
    from anchors._labeller import ContentJudge
    from anchors._pipeline import _run_embeddings

    return embed if isinstance(embed, ContentJudge) else _run_embeddings(embed, cache_dir, True, trace_id)


def _say(line: str, quiet: bool) -> None:
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(line, highlight=False)


def _row_lists(rollouts: Any) -> dict[str, list]:
    rows = rollouts.sort(["request_id", "sample"])
    return {
        c: rows[c].to_list() for c in ("request_id", "sample", "text", "answer_norm", "correct", "status")
    }


# -- iterative resilience and counterfactual++ -----------------------------------------------------------------


@dataclass
class ResilienceResult:
    """Per sentence: resilience (mean number of rounds in which the content came back, over chains) and
    counterfactual++ (kept minus content-removed, in accuracy and answer KL)."""

    rows: list[dict[str, Any]]
    chains: list[dict[str, Any]] = field(default_factory=list)
    """One record per chain: sentence, chain, rounds, returns, removed, final answer."""
    stats: dict[str, Any] = field(default_factory=dict)

    def table(self):
        import polars as pl

        return pl.DataFrame(self.rows)


def _round_request(prefix_ids, seed, position, chain, iteration, params, trace_id):
    from resampling import SamplingRequest, request_seed

    return SamplingRequest(
        prompt_ids=tuple(prefix_ids),
        n=1,
        seed=request_seed(seed, position, f"resilience/{chain}/{iteration}"),
        params=params,
        trace_id=trace_id,
        kind="resilience",
        position=position,
        edit={"chain": chain, "iteration": iteration},
    )


def iterative_resilience(
    backend: Any,
    trace: Any,
    positions: list[int] | None = None,
    *,
    samples: int = 10,
    iterations: int = RESILIENCE_ITERATIONS,
    seed: int = 0,
    params: Any = None,
    threshold: float = RESILIENCE_THRESHOLD,
    numbers: bool = True,
    min_chars: int = 10,
    gt_answer: str | None = None,
    kl_alpha: float = 1.0,
    cache_dir: str | os.PathLike = ".cotscope-cache",
    embed: Any = None,
    quiet: bool = True,
    min_removed: int = MIN_REMOVED,
) -> ResilienceResult:
    """Thought Branches' resilience and counterfactual++ of the sentences at ``positions`` (default: all).

    For sentence i, ``samples`` chains each resample from position i (round 0 is sample c of the ordinary
    ``resample`` rollouts at i, shared with ``cotscope importance``). When a sentence of the continuation (its first
    sentence included) states S_i's content again (cosine >= ``threshold``; same numbers with ``numbers``), the
    continuation is cut before that sentence and the cut point is resampled in the next round, up to
    ``iterations`` rounds. A chain's resilience is the number of rounds in which the content came back (0 to
    ``iterations``). A chain whose last round did not bring it back has removed the content for good; its final
    rollout is one of the counterfactual++ set C_i. ``cfpp_accuracy`` = acc(R_{i+1}) - acc(C_i) and ``cfpp_kl`` =
    KL(P(C_i) || P(R_{i+1})) over answers (``kl_alpha`` smoothing), R_{i+1} being ``samples`` rollouts that keep
    S_i. Both are NaN when fewer than ``min_removed`` chains removed the content for good (the floor the importance
    table puts on its counterfactual metrics, ``ImportanceOptions.min_different``; ``n_removed`` is reported either
    way). Every round's rollouts are stored; the cost bound is printed before any sampling unless ``quiet``.
    ``embed``: the embedding function, or a :class:`anchors._labeller.ContentJudge` that decides matches instead of
    the cosine threshold and the number rule.
    """
    from anchors._pipeline import _truth
    from cot import split_sentences
    from resampling import Engine, Plan, SamplingParams, TracePrefixes

    if min_removed < 1:
        raise ValueError(f"min_removed must be at least 1 chain, got {min_removed}")
    params = params or SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=256)
    tok = backend.tokenizer
    prefixes = TracePrefixes.build(trace, tok, min_chars=min_chars)
    sentences = prefixes.sentences
    positions = list(range(len(sentences))) if positions is None else [int(p) for p in positions]
    for p in positions:
        if not 0 <= p < len(sentences):
            raise ValueError(f"sentence {p} is out of range: the trace has {len(sentences)} sentences")
    truth, graded_against = _truth(trace, gt_answer)
    truths = {trace.id: truth}
    n_chains = len(positions) * samples
    _say(
        f"resilience: {len(positions)} sentences x {samples} chains x up to {iterations} rounds = at most "
        f"{n_chains * iterations:,} rollouts (+{len(positions) * samples:,} that keep each sentence), at most "
        f"{(n_chains * iterations + len(positions) * samples) * int(params.max_new_tokens or 0):,} new tokens",
        quiet,
    )
    engine = Engine(backend, cache_dir, quiet=True)
    emb = _embeddings(embed, cache_dir, trace.id)
    # rollouts that keep S_i (R_{i+1}) and round 0 (R_i): the ordinary resample plan, shared with importance
    base_positions = sorted({*positions, *(p + 1 for p in positions)})
    base = engine.run(prefixes.plan(samples, seed, params, positions=base_positions), truths=truths).rollouts
    base = base.filter(base["status"] == "ok").sort(["position", "sample"])
    by_pos: dict[int, list[dict]] = {}
    for row in base.iter_rows(named=True):
        by_pos.setdefault(row["position"], []).append(row)
    # chain state: (position, chain) -> prefix ids, rounds done, returns, last row
    state: dict[tuple[int, int], dict[str, Any]] = {}
    for p in positions:
        for c, row in enumerate(by_pos.get(p, [])[:samples]):
            state[(p, c)] = {"prefix": prefixes.prefix_ids(p), "returns": 0, "rounds": 1, "row": row}
    active = list(state)
    n_rollouts = len(active)
    iteration = 0
    while active:
        nxt = []
        requests = []
        for key in active:
            st = state[key]
            p = key[0]
            text = st["row"]["text"] or ""
            body = text.split("</think>", 1)[0]
            conts = split_sentences(body, min_chars=min_chars)
            hits = _matches([s.text for s in conts], sentences[p].text, emb, threshold, numbers)
            found = next((j for j, (ok, _) in enumerate(hits) if ok), None)
            if found is None:
                st["removed"] = True
                continue
            st["returns"] += 1
            if st["rounds"] >= iterations:
                st["removed"] = False
                continue
            cut = body[: conts[found].start]
            st["prefix"] = list(st["prefix"]) + (_ids(tok(cut, add_special_tokens=False)) if cut else [])
            requests.append(_round_request(st["prefix"], seed, p, key[1], st["rounds"], params, trace.id))
            nxt.append(key)
        if not requests:
            break
        iteration += 1
        if not quiet:
            _say(f"resilience round {iteration}: {len(requests)} chains whose content came back", quiet)
        result = engine.run(Plan(requests), truths=truths).rollouts
        got = {r["request_id"]: r for r in result.iter_rows(named=True)}
        n_rollouts += len(requests)
        still = []
        for key, req in zip(nxt, requests, strict=True):
            row = got.get(req.request_id)
            st = state[key]
            st["rounds"] += 1
            if row is None or row["status"] != "ok":
                st["removed"] = None  # a failed rollout: the chain stops without a verdict
                continue
            st["row"] = row
            still.append(key)
        active = still
    if hasattr(emb, "save"):
        emb.save()
    rows, chains = [], []
    for p in positions:
        mine = [(c, state[(p, c)]) for c in range(samples) if (p, c) in state]
        returns = np.array([st["returns"] for _, st in mine], dtype=float)
        removed = [st for _, st in mine if st.get("removed") is True]
        kept = by_pos.get(p + 1, [])[:samples] if p + 1 < prefixes.n_positions else []
        kept_answers = [r["answer_norm"] for r in kept]
        kept_graded = [r["correct"] for r in kept if r["correct"] is not None]
        rem_answers = [st["row"]["answer_norm"] for st in removed]
        rem_graded = [st["row"]["correct"] for st in removed if st["row"]["correct"] is not None]
        acc_k = float(np.mean(kept_graded)) if kept_graded else math.nan
        acc_r = float(np.mean(rem_graded)) if rem_graded else math.nan
        defined = len(removed) >= min_removed
        n = len(returns)
        mean = float(returns.mean()) if n else math.nan
        half = 1.959963984540054 * float(returns.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        rows.append(
            {
                "sentence": p,
                "text": sentences[p].text,
                "resilience": mean,
                "resilience_lo": mean - half if n > 1 else math.nan,
                "resilience_hi": mean + half if n > 1 else math.nan,
                "resilience_n": n,
                "return_rate_round0": float(np.mean(returns > 0)) if n else math.nan,
                "n_removed": len(removed),
                "n_never_removed": sum(st.get("removed") is False for _, st in mine),
                "cfpp_accuracy": acc_k - acc_r if defined else math.nan,
                "cfpp_kl": _kl(rem_answers, kept_answers, kl_alpha) if defined else math.nan,
                "accuracy_kept": acc_k,
                "accuracy_removed": acc_r,
            }
        )
        for c, st in mine:
            chains.append(
                {
                    "sentence": p,
                    "chain": c,
                    "rounds": st["rounds"],
                    "returns": st["returns"],
                    "removed": st.get("removed"),
                    "final_answer": st["row"]["answer_norm"],
                    "final_correct": st["row"]["correct"],
                }
            )
    stats = {
        "rollouts": n_rollouts,
        "rounds": iteration + 1,
        "graded_against": graded_against,
        "truth": truth,
        "threshold": threshold,
        "numbers": numbers,
        "iterations": iterations,
        "samples": samples,
        "seed": seed,
        "min_removed": min_removed,
    }
    return ResilienceResult(rows, chains, stats)


# -- on-policy and off-policy interventions --------------------------------------------------------------------


def _rollout_after(
    engine: Any, prefixes: Any, at: int, text: str, samples: int, seed: int, params: Any, kind: str, truths
):
    """``samples`` rollouts continuing the CoT before sentence ``at`` followed by ``text``."""
    from resampling import Plan, SamplingRequest, request_seed

    tok = prefixes.tokenizer
    ids = prefixes.prefix_ids(at) + _ids(tok(text, add_special_tokens=False))
    req = SamplingRequest(
        prompt_ids=tuple(ids),
        n=samples,
        seed=request_seed(seed, at, kind),
        params=params,
        trace_id=prefixes.trace.id,
        kind=kind,
        position=at,
        edit={"type": kind, "index": at, "text": text},
    )
    rows = engine.run(Plan([req]), truths=truths).rollouts.sort("sample")
    return rows.filter(rows["status"] == "ok"), ids


def intervene(
    backend: Any,
    trace: Any,
    at: int,
    text: str,
    *,
    on_policy: bool = True,
    off_policy: bool = True,
    samples: int = 30,
    seed: int = 0,
    params: Any = None,
    max_resamples: int = 500,
    batch: int = 50,
    threshold: float = ONPOLICY_THRESHOLD,
    numbers: bool = True,
    min_mean_logprob: float | None = None,
    sentence_tokens: int = 64,
    min_chars: int = 10,
    gt_answer: str | None = None,
    cache_dir: str | os.PathLike = ".cotscope-cache",
    embed: Any = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Put ``text`` at sentence ``at`` of ``trace`` and roll out, off-policy and/or on-policy (Thought Branches).

    Off-policy: the CoT before sentence ``at`` followed by ``text`` verbatim, then ``samples`` rollouts. On-policy:
    sentence ``at`` is resampled (candidates of at most ``sentence_tokens`` tokens, in batches of ``batch``, up to
    ``max_resamples``) until the model's own first sentence matches ``text`` (cosine >= ``threshold``, the same
    numbers with ``numbers``, and a mean token log-probability >= ``min_mean_logprob`` when given); the first such
    candidate in sample order is taken and ``samples`` rollouts continue after it. Also returned: the rollouts
    that resample sentence ``at`` freely (no intervention), and the log-probability of ``text`` (and of the
    original sentence and of the accepted candidate) under the model right after the prefix. ``embed``: the
    embedding function, or a :class:`anchors._labeller.ContentJudge` that decides matches instead of the cosine
    threshold and the number rule.
    """
    from anchors._pipeline import _truth
    from resampling import (
        Engine,
        SamplingParams,
        SamplingRequest,
        TracePrefixes,
        first_sentence,
        request_seed,
    )

    params = params or SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=256)
    prefixes = TracePrefixes.build(trace, backend.tokenizer, min_chars=min_chars)
    if not 0 <= at < len(prefixes.sentences):
        raise ValueError(f"--at {at} is out of range: the trace has {len(prefixes.sentences)} sentences")
    text = text.strip()
    if not text:
        raise ValueError("the intervention text is empty")
    truth, graded_against = _truth(trace, gt_answer)
    truths = {trace.id: truth}
    budget = int(params.max_new_tokens or 0)
    _say(
        f"intervene: {samples:,} rollouts without intervention"
        + (f", {samples:,} off-policy" if off_policy else "")
        + (
            f", up to {max_resamples:,} on-policy candidates of <= {sentence_tokens} tokens and {samples:,} "
            "rollouts after the accepted one"
            if on_policy
            else ""
        )
        + f"; at most {samples * (1 + off_policy + on_policy) * budget + on_policy * max_resamples * sentence_tokens:,}"
        " new tokens",
        quiet,
    )
    engine = Engine(backend, cache_dir, quiet=True)
    prefix = prefixes.prefix_ids(at)
    original = prefixes.sentences[at].text
    out: dict[str, Any] = {
        "trace": trace.id,
        "at": at,
        "text": text,
        "original": original,
        "graded_against": graded_against,
        "truth": truth,
        "samples": samples,
        "seed": seed,
        "text_logprob": text_logprob(backend, prefix, text),
        "original_logprob": text_logprob(backend, prefix, original),
    }
    free = engine.run(prefixes.plan(samples, seed, params, positions=[at]), truths=truths).rollouts
    free = free.filter(free["status"] == "ok").sort("sample")
    out["no_intervention"] = answer_distribution(
        free["answer_norm"].to_list(), free["correct"].to_list(), free["text"].to_list()
    )
    if off_policy:
        rows, _ = _rollout_after(engine, prefixes, at, text, samples, seed, params, "off_policy", truths)
        out["off_policy"] = answer_distribution(
            rows["answer_norm"].to_list(), rows["correct"].to_list(), rows["text"].to_list()
        )
    if on_policy:
        emb = _embeddings(embed, cache_dir, trace.id)
        cand_params = SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_new_tokens=sentence_tokens,
        )
        accepted, tried, best = None, 0, (-math.inf, None)
        while accepted is None and tried < max_resamples:
            n = min(max_resamples, tried + batch)
            req = SamplingRequest(
                prompt_ids=tuple(prefix),
                n=n,
                seed=request_seed(seed, at, "onpolicy_search"),
                params=cand_params,
                trace_id=trace.id,
                kind="onpolicy_search",
                position=at,
            )
            rows = engine.run(_plan(req), truths=truths).rollouts.sort("sample")
            firsts = [
                (k, first_sentence(t or "") if s == "ok" else None)
                for k, t, s in zip(
                    rows["sample"].to_list(), rows["text"].to_list(), rows["status"].to_list(), strict=True
                )
                if k >= tried
            ]
            cands = [(k, f) for k, f in firsts if f]
            hits = _matches([f for _, f in cands], text, emb, threshold, numbers)
            for (k, f), (ok, sim) in zip(cands, hits, strict=True):
                if sim > best[0]:
                    best = (sim, f)
                if not ok:
                    continue
                lp = text_logprob(backend, prefix, f) if min_mean_logprob is not None else None
                if lp is not None and not (lp["mean"] >= min_mean_logprob):
                    continue
                accepted = (k, f, sim)
                break
            tried = n
        if hasattr(emb, "save"):
            emb.save()
        search = {
            "found": accepted is not None,
            "resamples": (accepted[0] + 1) if accepted else tried,
            "max_resamples": max_resamples,
            "closest_cosine": best[0] if best[1] is not None else math.nan,
            "closest": best[1],
        }
        if accepted is not None:
            k, sentence, sim = accepted
            search.update(
                sentence=sentence,
                cosine=sim,
                sentence_logprob=text_logprob(backend, prefix, sentence),
            )
            rows, _ = _rollout_after(
                engine, prefixes, at, sentence, samples, seed, params, "on_policy", truths
            )
            search["distribution"] = answer_distribution(
                rows["answer_norm"].to_list(), rows["correct"].to_list(), rows["text"].to_list()
            )
        out["on_policy"] = search
    return out


def _plan(req: Any) -> Any:
    from resampling import Plan

    return Plan([req])

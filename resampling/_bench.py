"""Engine throughput benchmark: the same work three ways, side by side in one process.

The work: one trace, every sentence position 0..K, N samples each, the same sampling parameters.

(a) naive: one ``generate`` call per rollout, which re-prefills its prefix (what the thought-anchors sampler does);
(b) ``generate(num_return_sequences=N)`` once per position (prefills N copies of each prefix);
(c) the engine (hf backend): one prefill for all nested prefixes, one decode batch across positions.

The work is counted up front (prefill tokens per way; decode tokens are counted as they are produced, since
sampled lengths vary) and each way is timed on the same machine in the same process, repeated, with medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["BenchConfig", "format_report", "run_engine_bench"]


@dataclass
class BenchConfig:
    samples: int = 20
    max_new_tokens: int = 160
    temperature: float = 1.0
    top_p: float = 0.95
    repeats: int = 3
    trace_seed: int = 0
    naive_positions: int | None = None
    """Time the naive way on this many positions and scale up (it is by far the slowest); None = all."""

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(samples=4, max_new_tokens=80, repeats=1, naive_positions=None)


def _generate_kwargs(tokenizer, cfg: BenchConfig) -> dict[str, Any]:
    return {
        "do_sample": True,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": 0,
        "max_new_tokens": cfg.max_new_tokens,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
    }


def _new_tokens(out: torch.Tensor, prompt_len: int, eos: int) -> int:
    """Tokens a generate() call really produced (up to and including EOS, not the padding after it)."""
    gen = out[:, prompt_len:]
    total = 0
    for row in gen.tolist():
        total += row.index(eos) + 1 if eos in row else len(row)
    return total


@torch.inference_mode()
def _naive(
    model, tokenizer, prefixes: list[list[int]], cfg: BenchConfig, positions: list[int]
) -> tuple[float, int]:
    kw = _generate_kwargs(tokenizer, cfg)
    tokens = 0
    start = time.perf_counter()
    for p in positions:
        ids = torch.tensor([prefixes[p]], device=model.device)
        for _ in range(cfg.samples):
            out = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
            tokens += _new_tokens(out, ids.shape[1], tokenizer.eos_token_id)
    return time.perf_counter() - start, tokens


@torch.inference_mode()
def _num_return(model, tokenizer, prefixes: list[list[int]], cfg: BenchConfig) -> tuple[float, int]:
    kw = _generate_kwargs(tokenizer, cfg)
    tokens = 0
    start = time.perf_counter()
    for ids_list in prefixes:
        ids = torch.tensor([ids_list], device=model.device)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), num_return_sequences=cfg.samples, **kw)
        tokens += _new_tokens(out, ids.shape[1], tokenizer.eos_token_id)
    return time.perf_counter() - start, tokens


def _engine(backend, plan) -> tuple[float, int]:
    from resampling._engine import Engine

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        result = Engine(backend, cache, quiet=True).run(plan)
        elapsed = time.perf_counter() - start
    return elapsed, int(result.rollouts["n_tokens"].sum()) + int(
        (result.rollouts["finish_reason"] == "stop").sum()
    )


def run_engine_bench(model_id: str, cfg: BenchConfig, device: str | None = None) -> dict[str, Any]:
    from resampling._cli import default_trace
    from resampling._hf import HFBackend
    from resampling._model import load_model
    from resampling._plan import SamplingParams
    from resampling._prefix import TracePrefixes

    torch.manual_seed(0)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(model_id, device=device)
    model, tok = loaded.model, loaded.tokenizer
    trace = default_trace(model_id, cfg.trace_seed)
    tp = TracePrefixes.build(trace, tok)
    k1 = tp.n_positions
    prefixes = [tp.prefix_ids(p) for p in range(k1)]
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    plan = tp.plan(cfg.samples, 0, params)
    rollouts = k1 * cfg.samples
    naive_pos = list(range(k1)) if cfg.naive_positions is None else list(range(min(cfg.naive_positions, k1)))
    prefill = {
        "naive": cfg.samples * sum(len(p) for p in prefixes),
        "generate_n": cfg.samples * sum(len(p) for p in prefixes),
        "engine": len(prefixes[-1]),
    }
    runs: dict[str, list[dict[str, float]]] = {"naive": [], "generate_n": [], "engine": []}
    backend = HFBackend(model, tok, model_id=model_id, path=loaded.path)
    _engine(backend, tp.plan(2, 10_000, params.__class__(max_new_tokens=4)))  # warm-up (allocator, kernels)
    for _ in range(cfg.repeats):
        t, n = _naive(model, tok, prefixes, cfg, naive_pos)
        scale = k1 / len(naive_pos)
        runs["naive"].append({"seconds": t * scale, "decode_tokens": n * scale})
        t, n = _num_return(model, tok, prefixes, cfg)
        runs["generate_n"].append({"seconds": t, "decode_tokens": n})
        t, n = _engine(backend, plan)
        runs["engine"].append({"seconds": t, "decode_tokens": n})
    ways = {}
    for way, rs in runs.items():
        secs = statistics.median(r["seconds"] for r in rs)
        toks = statistics.median(r["decode_tokens"] for r in rs)
        ways[way] = {
            "seconds": secs,
            "rollouts_per_s": rollouts / secs,
            "decode_tokens": toks,
            "decode_tokens_per_s": toks / secs,
            "prefill_tokens": prefill[way],
            "runs": rs,
        }
    eng = ways["engine"]
    return {
        "model": model_id,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "config": asdict(cfg),
        "positions": k1,
        "rollouts": rollouts,
        "prompt_tokens": len(tp.template_ids),
        "cot_tokens": len(tp.cot_ids),
        "ways": ways,
        "rollouts_per_s": eng["rollouts_per_s"],
        "speedup_vs_naive": ways["naive"]["seconds"] / eng["seconds"],
        "speedup_vs_generate": ways["generate_n"]["seconds"] / eng["seconds"],
        "tokens_per_s_ratio_vs_naive": eng["decode_tokens_per_s"] / ways["naive"]["decode_tokens_per_s"],
        "tokens_per_s_ratio_vs_generate": eng["decode_tokens_per_s"]
        / ways["generate_n"]["decode_tokens_per_s"],
        "naive_positions_timed": len(naive_pos),
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"engine benchmark: {r['model']} on {r['device']} ({r['torch_threads']} threads); one trace, "
        f"{r['positions']} positions x {r['config']['samples']} samples = {r['rollouts']} rollouts, "
        f"max_new_tokens {r['config']['max_new_tokens']}, medians of {r['config']['repeats']} run(s)",
        f"work counted up front: prompt {r['prompt_tokens']} tokens, CoT {r['cot_tokens']} tokens",
        f"{'way':<12}{'prefill tok':>12}{'decode tok':>12}{'seconds':>10}{'rollouts/s':>12}{'decode tok/s':>14}",
    ]
    for way, w in r["ways"].items():
        lines.append(
            f"{way:<12}{w['prefill_tokens']:>12,}{w['decode_tokens']:>12,.0f}{w['seconds']:>10.2f}"
            f"{w['rollouts_per_s']:>12.1f}{w['decode_tokens_per_s']:>14.0f}"
        )
    lines.append(
        f"speedup (wall time, same work): vs naive {r['speedup_vs_naive']:.1f}x, "
        f"vs generate(num_return_sequences) {r['speedup_vs_generate']:.1f}x; decode tok/s ratios "
        f"{r['tokens_per_s_ratio_vs_naive']:.1f}x and {r['tokens_per_s_ratio_vs_generate']:.1f}x"
    )
    if r["naive_positions_timed"] < r["positions"]:
        lines.append(f"(naive timed on {r['naive_positions_timed']} positions and scaled to all)")
    return "\n".join(lines)

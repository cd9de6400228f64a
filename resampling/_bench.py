"""Engine throughput benchmark: the same work three ways, side by side in one process.

The work: one trace, every sentence position 0..K (or ``positions`` of them, evenly spaced), N samples each, the
same sampling parameters.

(a) naive: one ``generate`` call per rollout, which re-prefills its prefix (what the thought-anchors sampler does);
(b) ``generate(num_return_sequences=N)`` once per position (prefills N copies of each prefix);
(c) the engine (hf backend): one prefill for all nested prefixes, decode batches across positions.

With ``forced_answer``, the forced-answer probes of the same positions are also run through the engine both ways,
alternating within each repeat: each probe's cue prefilled on the KV cache of the probe before it (the default), and
each probe prefilled whole (``HFBackend(shared_prefill=False)``, the way before); the prefill tokens are those the
backend counted running through the model, and the two ways' rollouts are compared token for token.

The work is counted up front (prefill tokens per way; decode tokens as rollouts x ``max_new_tokens``, an upper
bound since a rollout may stop early) and each way is timed on the same machine in the same process, repeated,
with medians. Beside each time: the process's peak resident memory while that way ran (sampled every few
milliseconds from ``/proc/self/statm``; on CUDA also the peak of ``torch.cuda.max_memory_allocated``), and for the
engine the split of its decode time between the model's forward passes and the sampler.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "WAYS",
    "BenchConfig",
    "find_trace",
    "format_report",
    "format_sampler_report",
    "run_engine_bench",
    "run_sampler_bench",
    "sort_sampler",
]

WAYS = ("naive", "generate_n", "engine")


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
    positions: int | None = None
    """Sentence positions used, evenly spaced over the trace; None = all of them."""
    ways: tuple[str, ...] = WAYS
    batch_size: int = 512
    """The engine's ``batch_size`` (rows decoded together, at most)."""
    kv_budget_gb: float | None = None
    """The engine's decode memory budget; None = the backend's default."""
    forced_answer: bool = False
    """Also run the forced-answer probes of the same positions, cue on the shared prefix vs prefilled whole."""
    forced_max_new_tokens: int = 16
    """New tokens of a forced-answer probe (the organisms' default; real models get 64 in ``importance``)."""
    logit_std: float = 6.0
    """Real-vocabulary models: the standard deviation of next-token logits (:func:`resampling.synthetic_model`);
    6 gives a nucleus of a few tokens, as a trained model; about ``0.02 sqrt(hidden)`` is a fresh initialisation
    (0.45 at hidden 512), nearly uniform over the vocabulary: the sampler's worst case."""

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(samples=4, max_new_tokens=80, repeats=1, naive_positions=None)


def find_trace(path: str | Path) -> Path:
    """A trace file, a thought-anchors problem folder, or a folder holding such problems (the first in sorted
    order is used)."""
    from resampling._errors import EngineInputError

    p = Path(path)
    if not p.exists():
        raise EngineInputError(f"no such trace file or folder: {p}")
    if p.is_file() or (p / "base_solution.json").exists():
        return p
    found = sorted(p.rglob("base_solution.json"))
    if not found:
        raise EngineInputError(
            f"{p} holds no trace: give a trace file or a thought-anchors folder (one with base_solution.json)"
        )
    return found[0].parent


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
def _naive(model, tokenizer, prefixes: list[list[int]], cfg: BenchConfig) -> tuple[float, int]:
    kw = _generate_kwargs(tokenizer, cfg)
    tokens = 0
    start = time.perf_counter()
    for ids_list in prefixes:
        ids = torch.tensor([ids_list], device=model.device)
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


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so the next way's resident peak starts from what is live."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak resident memory of this process while the block runs (a thread reads ``/proc/self/statm`` every
    ``interval`` seconds); ``peak_gb`` is None where ``/proc`` is missing. On CUDA also ``cuda_peak_gb``."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_gb: float | None = None
        self.cuda_peak_gb: float | None = None
        self._stop = threading.Event()

    @staticmethod
    def rss_bytes() -> int | None:
        import os

        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _poll(self) -> None:
        peak = self.rss_bytes()
        while peak is not None and not self._stop.wait(self.interval):
            now = self.rss_bytes()
            peak = max(peak, now or 0)
        now = self.rss_bytes()
        if peak is not None:
            self.peak_gb = max(peak, now or 0) / 2**30

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if torch.cuda.is_available():
            self.cuda_peak_gb = torch.cuda.max_memory_allocated() / 2**30


def _pick_positions(n_positions: int, wanted: int | None) -> list[int]:
    from resampling._errors import EngineInputError

    if wanted is None:
        return list(range(n_positions))
    if not 1 <= wanted <= n_positions:
        raise EngineInputError(
            f"--positions {wanted}: the trace has {n_positions} positions (0..{n_positions - 1}); "
            f"give 1..{n_positions}, or leave it out for all"
        )
    if wanted == 1:
        return [n_positions - 1]
    return sorted({round(i * (n_positions - 1) / (wanted - 1)) for i in range(wanted)})


def _load(model_id: str, real_vocab: tuple[int, int] | None, device: str, logit_std: float = 6.0):
    """(model, tokenizer, label, path, organism trace or None)."""
    from resampling._model import load_model

    if real_vocab is not None:
        from resampling._synthetic import synthetic_model

        hidden, layers = real_vocab
        model, tok = synthetic_model(hidden, layers, logit_std=logit_std)
        model = model.to(device)
        label = (
            f"random-weight Qwen2 hidden {hidden} x {layers} layers, DeepSeek tokenizer ({len(tok):,} ids), "
            f"logit sd {logit_std:g}"
        )
        return model, tok, label, None
    loaded = load_model(model_id, device=device)
    return loaded.model, loaded.tokenizer, model_id, loaded.path


def run_engine_bench(
    model_id: str,
    cfg: BenchConfig,
    device: str | None = None,
    *,
    trace: str | Path | None = None,
    real_vocab: tuple[int, int] | None = None,
    announce=None,
) -> dict[str, Any]:
    """Run the benchmark; ``real_vocab=(hidden, layers)`` builds :func:`resampling.synthetic_model` instead of
    loading ``model_id``. ``announce`` (e.g. ``print``) receives the work counted before anything runs."""
    from cot import load_trace
    from resampling._cli import default_trace
    from resampling._errors import EngineInputError
    from resampling._hf import HFBackend
    from resampling._plan import SamplingParams
    from resampling._prefix import TracePrefixes

    unknown = sorted(set(cfg.ways) - set(WAYS))
    if unknown or not cfg.ways:
        raise EngineInputError(
            f"unknown way(s) {', '.join(unknown) or '(none)'}; choose from: {', '.join(WAYS)}"
        )
    torch.manual_seed(0)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, label, path = _load(model_id, real_vocab, device, cfg.logit_std)
    if trace is not None:
        trace_path = find_trace(trace)
        tr = load_trace(trace_path)
        trace_name = str(trace_path)
    else:
        tr = default_trace(model_id, cfg.trace_seed)
        trace_name = f"{model_id} example {cfg.trace_seed}"
    tp = TracePrefixes.build(tr, tok)
    positions = _pick_positions(tp.n_positions, cfg.positions)
    prefixes = [tp.prefix_ids(p) for p in positions]
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    plan = tp.plan(cfg.samples, 0, params, positions=positions)
    rollouts = len(positions) * cfg.samples
    naive_prefixes = prefixes if cfg.naive_positions is None else prefixes[: max(1, cfg.naive_positions)]
    work = {
        "naive": {"prefill_tokens": cfg.samples * sum(len(p) for p in prefixes)},
        "generate_n": {"prefill_tokens": cfg.samples * sum(len(p) for p in prefixes)},
        "engine": {"prefill_tokens": max(len(p) for p in prefixes)},
    }
    for w in work.values():
        w["decode_tokens_max"] = rollouts * cfg.max_new_tokens
    work = {way: work[way] for way in cfg.ways}
    report: dict[str, Any] = {
        "model": label,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "config": asdict(cfg),
        "trace": trace_name,
        "trace_positions": tp.n_positions,
        "positions": len(positions),
        "rollouts": rollouts,
        "prompt_tokens": len(tp.template_ids),
        "cot_tokens": len(tp.cot_ids),
        "work": work,
    }
    if announce is not None:
        announce(format_work(report))
    backend = HFBackend(
        model, tok, model_id=label, path=path, batch_size=cfg.batch_size, kv_budget_gb=cfg.kv_budget_gb
    )
    report["kv_budget_gb"] = backend.kv_budget_gb
    if "engine" in cfg.ways:  # warm-up (allocator, kernels)
        _engine(backend, tp.plan(2, 10_000, SamplingParams(max_new_tokens=4), positions=positions[-2:]))
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in cfg.ways}
    _release_free_memory()
    report["baseline_rss_gb"] = (PeakMemory.rss_bytes() or 0) / 2**30
    for _ in range(cfg.repeats):
        for way in cfg.ways:
            _release_free_memory()
            before = dict(backend.stats)
            with PeakMemory() as mem:
                if way == "naive":
                    t, n = _naive(model, tok, naive_prefixes, cfg)
                    scale = len(prefixes) / len(naive_prefixes)
                    t, n = t * scale, n * scale
                elif way == "generate_n":
                    t, n = _num_return(model, tok, prefixes, cfg)
                else:
                    t, n = _engine(backend, plan)
            run = {
                "seconds": t,
                "decode_tokens": n,
                "peak_rss_gb": mem.peak_gb,
                "cuda_peak_gb": mem.cuda_peak_gb,
            }
            if way == "engine":
                delta = {k: backend.stats[k] - before.get(k, 0) for k in backend.stats}
                run.update(
                    sample_seconds=delta["sample_seconds"],
                    decode_forward_seconds=delta["decode_forward_seconds"],
                    prefill_seconds=delta["prefill_seconds"],
                    prefill_tokens_run=int(delta["prefill_tokens"]),
                    decode_steps=delta["decode_steps"],
                    batches=delta["batches"],
                    peak_batch_rows=backend.stats["peak_batch_rows"],
                    sampler_rows={
                        k.removeprefix("sampler_rows_"): v for k, v in delta.items() if "rows_k" in k
                    },
                )
            runs[way].append(run)
    ways = {}
    for way, rs in runs.items():
        secs = statistics.median(r["seconds"] for r in rs)
        toks = statistics.median(r["decode_tokens"] for r in rs)
        peaks = [r["peak_rss_gb"] for r in rs if r["peak_rss_gb"] is not None]
        ways[way] = {
            "seconds": secs,
            "rollouts_per_s": rollouts / secs,
            "decode_tokens": toks,
            "decode_tokens_per_s": toks / secs,
            "prefill_tokens": work[way]["prefill_tokens"],
            "peak_rss_gb": max(peaks) if peaks else None,
            "runs": rs,
        }
    if "engine" in ways:
        rs = runs["engine"]
        share = [r["sample_seconds"] / (r["sample_seconds"] + r["decode_forward_seconds"]) for r in rs]
        ways["engine"]["sampler_share_of_decode"] = statistics.median(share)
        ways["engine"]["sampler_rows"] = rs[-1]["sampler_rows"]
        ways["engine"]["batches"] = rs[-1]["batches"]
        ways["engine"]["peak_batch_rows"] = rs[-1]["peak_batch_rows"]
        for other in ("naive", "generate_n"):
            if other in ways:
                report[f"speedup_vs_{other}"] = ways[other]["seconds"] / ways["engine"]["seconds"]
                report[f"speedups_vs_{other}_per_repeat"] = [
                    a["seconds"] / b["seconds"] for a, b in zip(runs[other], rs, strict=True)
                ]
    report["ways"] = ways
    report["naive_positions_timed"] = len(naive_prefixes)
    if cfg.forced_answer:
        forced_params = SamplingParams(
            temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.forced_max_new_tokens
        )
        report["forced"] = _forced_bench(
            backend, tp.forced_answer_plan(cfg.samples, 0, forced_params, positions=positions), cfg.repeats
        )
    return report


def _forced_bench(backend, plan, repeats: int) -> dict[str, Any]:
    """The forced-answer probes of ``plan`` through the engine with each probe's cue prefilled on the previous
    probe's KV cache (``shared``) and with every probe prefilled whole (``whole``), alternating, ``repeats`` times."""
    from resampling._hf import HFBackend

    whole = HFBackend(
        backend.model,
        backend.tokenizer,
        model_id=backend.model_id,
        path=backend.path,
        batch_size=backend.batch_size,
        kv_budget_gb=backend.kv_budget_gb,
        shared_prefill=False,
    )
    backends = {"whole": whole, "shared": backend}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in backends}
    rollouts = {}
    for _ in range(repeats):
        for name, b in backends.items():
            _release_free_memory()
            before = dict(b.stats)
            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                result = _engine_run(b, plan, cache)
                seconds = time.perf_counter() - start
            delta = {k: b.stats[k] - before.get(k, 0) for k in b.stats}
            runs[name].append(
                {
                    "seconds": seconds,
                    "prefill_tokens": int(delta["prefill_tokens"]),
                    "prefill_tokens_reused": int(delta.get("prefill_tokens_reused", 0)),
                    "prefill_seconds": delta["prefill_seconds"],
                }
            )
            rollouts[name] = result.sort("request_id", "sample")["text"].to_list()
    out: dict[str, Any] = {
        "probes": len(plan),
        "rollouts": plan.n_rollouts,
        "max_new_tokens": plan[0].params.max_new_tokens,
        "probe_tokens": sum(len(r.prompt_ids) for r in plan),
    }
    for name, rs in runs.items():
        out[name] = {
            "prefill_tokens": rs[-1]["prefill_tokens"],
            "prefill_tokens_reused": rs[-1]["prefill_tokens_reused"],
            "seconds": statistics.median(r["seconds"] for r in rs),
            "prefill_seconds": statistics.median(r["prefill_seconds"] for r in rs),
            "runs": rs,
        }
    out["prefill_ratio"] = out["whole"]["prefill_tokens"] / max(1, out["shared"]["prefill_tokens"])
    out["speedups_per_repeat"] = [
        a["seconds"] / b["seconds"] for a, b in zip(runs["whole"], runs["shared"], strict=True)
    ]
    out["speedup"] = statistics.median(out["speedups_per_repeat"])
    out["prefill_speedup"] = statistics.median(
        a["prefill_seconds"] / b["prefill_seconds"]
        for a, b in zip(runs["whole"], runs["shared"], strict=True)
    )
    out["same_rollouts"] = rollouts["whole"] == rollouts["shared"]
    out["rollouts_differing"] = sum(
        a != b for a, b in zip(rollouts["whole"], rollouts["shared"], strict=True)
    )
    return out


def _engine_run(backend, plan, cache):
    from resampling._engine import Engine

    return Engine(backend, cache, quiet=True).run(plan).rollouts


def format_work(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [
        f"engine benchmark: {r['model']} on {r['device']} ({r['torch_threads']} threads)",
        f"trace {r['trace']}: prompt {r['prompt_tokens']} tokens, CoT {r['cot_tokens']} tokens, "
        f"{r['positions']} of {r['trace_positions']} positions x {c['samples']} samples = {r['rollouts']} rollouts, "
        f"max_new_tokens {c['max_new_tokens']}, temperature {c['temperature']}, top-p {c['top_p']}",
        "work counted up front (decode: rollouts x max_new_tokens, an upper bound):",
    ]
    for way, w in r["work"].items():
        lines.append(
            f"  {way:<12}prefill {w['prefill_tokens']:>10,} tokens   decode <= {w['decode_tokens_max']:,}"
        )
    return "\n".join(lines)


def format_report(r: dict[str, Any], work: bool = True) -> str:
    """The report as text; ``work=False`` leaves out the work counted up front (already printed)."""
    lines = [
        *([format_work(r)] if work else []),
        f"medians of {r['config']['repeats']} run(s); peak RSS = the process's resident memory while the way ran "
        f"(model and tokenizer included; {r['baseline_rss_gb']:.2f} GB before any way)",
        f"{'way':<12}{'prefill tok':>12}{'decode tok':>12}{'seconds':>10}{'rollouts/s':>12}{'decode tok/s':>14}"
        f"{'peak RSS GB':>13}",
    ]
    for way, w in r["ways"].items():
        peak = f"{w['peak_rss_gb']:.2f}" if w["peak_rss_gb"] is not None else "n/a"
        lines.append(
            f"{way:<12}{w['prefill_tokens']:>12,}{w['decode_tokens']:>12,.0f}{w['seconds']:>10.2f}"
            f"{w['rollouts_per_s']:>12.1f}{w['decode_tokens_per_s']:>14.0f}{peak:>13}"
        )
    speed = []
    for other, name in (("naive", "naive"), ("generate_n", "generate(num_return_sequences)")):
        if f"speedup_vs_{other}" in r:
            per = ", ".join(f"{s:.1f}" for s in r[f"speedups_vs_{other}_per_repeat"])
            speed.append(f"vs {name} {r[f'speedup_vs_{other}']:.1f}x (per repeat: {per})")
    if speed:
        lines.append("engine speedup (wall time, same work): " + "; ".join(speed))
    if "engine" in r["ways"]:
        e = r["ways"]["engine"]
        last = e["runs"][-1]
        lines.append(
            f"engine decode split (last run): forward {last['decode_forward_seconds']:.2f} s, sampler "
            f"{last['sample_seconds']:.2f} s, prefill {last['prefill_seconds']:.2f} s; sampler share of decode "
            f"{100 * e['sampler_share_of_decode']:.1f}% (median); {int(e['batches'])} batch(es) of at most "
            f"{int(e['peak_batch_rows'])} rows (batch size {r['config']['batch_size']}, memory budget "
            f"{r['kv_budget_gb']:.2f} GB); rows settled by candidate-set size: {e['sampler_rows']}"
        )
    if "naive" in r["ways"] and r["naive_positions_timed"] < r["positions"]:
        lines.append(f"(naive timed on {r['naive_positions_timed']} positions and scaled to all)")
    if "forced" in r:
        f = r["forced"]
        per = ", ".join(f"{s:.2f}" for s in f["speedups_per_repeat"])
        lines += [
            f"forced-answer probes: {f['probes']} probes x {f['rollouts'] // max(1, f['probes'])} samples, "
            f"max_new_tokens {f['max_new_tokens']}, {f['probe_tokens']:,} probe tokens in all (medians of "
            f"{len(f['whole']['runs'])} run(s), the two ways alternating)",
            f"{'prefill':<24}{'prefill tok':>12}{'reused tok':>12}{'prefill s':>11}{'seconds':>10}",
        ]
        for name, what in (("whole", "each probe whole"), ("shared", "cue on shared prefix")):
            w = f[name]
            lines.append(
                f"{what:<24}{w['prefill_tokens']:>12,}{w['prefill_tokens_reused']:>12,}"
                f"{w['prefill_seconds']:>11.3f}{w['seconds']:>10.3f}"
            )
        lines.append(
            f"prefill tokens {f['prefill_ratio']:.1f}x fewer; prefill time {f['prefill_speedup']:.1f}x, wall time "
            f"{f['speedup']:.2f}x faster (per repeat: {per}); same rollouts: "
            f"{'yes' if f['same_rollouts'] else 'NO, ' + str(f['rollouts_differing']) + ' differ'}"
        )
    return "\n".join(lines)


def _noise64(seeds: torch.Tensor, steps: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The previous sampler's noise: the same hash, a 32-bit uniform ``(h + 0.5) / 2**32``, float64."""
    from resampling._hf import _MASK32, _hash32

    lo, hi = seeds & _MASK32, (seeds >> 32) & _MASK32
    key = _hash32(_hash32(lo) ^ _hash32(hi ^ 0x5BD1E995))
    key = _hash32(key ^ _hash32(steps & _MASK32))
    h = _hash32(key[:, None] ^ _hash32(ids * 0x27D4EB2F & _MASK32))
    return -torch.log(-torch.log((h.double() + 0.5) / 4294967296.0))


def sort_sampler(
    logits: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor, temperature: float, top_p: float
):
    """The previous sampler's full-sort path, the baseline of the threshold search: sort the vocabulary, float32
    running mass, Gumbel-max over the sorted ids. Returns the draws and the kept sets."""
    from resampling._hf import gumbel_noise

    logp = torch.log_softmax(logits * (1.0 / temperature), dim=-1)
    vals, ids = torch.sort(logp, dim=-1, descending=True)
    before = torch.cumsum(vals.exp(), dim=-1).roll(1, dims=-1)
    before[:, 0] = 0.0
    n_in = (before < top_p).sum(dim=-1).clamp(min=1)
    cutoff = vals.gather(1, (n_in - 1)[:, None])
    scores = vals.masked_fill(vals < cutoff, float("-inf")) + gumbel_noise(seeds, steps, ids)
    return ids.gather(1, scores.argmax(dim=-1, keepdim=True)).squeeze(1), logp >= cutoff


@torch.inference_mode()
def run_sampler_bench(
    rows: int = 64,
    vocab: int = 129_280,
    repeats: int = 7,
    check_chunks: int = 20,
    hidden: int = 512,
    device: str = "cpu",
) -> dict[str, Any]:
    """The sampler against the step it belongs to, and its float32 noise against float64.

    Times (medians of ``repeats`` rounds; each round times every contender once, in turn, so that a change in the
    machine's load falls on all of them) of ``sample_tokens`` on ``rows`` x ``vocab`` logits, i.i.d. normal with
    standard deviation 6 (what :func:`resampling.synthetic_model` gives; a few tokens in the nucleus) and 1 (nearly
    flat: the threshold search over the whole vocabulary), at temperature 0.6 and top-p 0.95, beside the output
    projection alone (``rows`` x ``hidden`` x ``vocab``) and the previous full-sort path on the flat logits
    (:func:`sort_sampler`, which must draw the same tokens). Then, for ``check_chunks`` x 256 rows of logits x 40
    seeds in each of 3 settings (logit sd 6 at temperature 0.6 and 1.0, sd 3 at 1.0), how often the float32 draw
    among the top 64 differs from the one with the previous float64 noise and float64 scores from the same hashes:
    an upper bound on the total variation distance between the two samplers.

    ``device`` is where the timed tensors live (the check runs on the CPU); on CUDA each timing waits for the
    device to finish (``torch.cuda.synchronize``).
    """
    from resampling._hf import gumbel_noise, sample_tokens
    from resampling._plan import SamplingParams

    g = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=0.6, top_p=0.95)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    seeds = torch.arange(rows, device=dev)
    steps = torch.zeros(rows, dtype=torch.long, device=dev)

    out: dict[str, Any] = {
        "rows": rows,
        "vocab": vocab,
        "hidden": hidden,
        "threads": torch.get_num_threads(),
        "device": str(dev),
    }
    weight = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).to(dev)
    h = torch.randn(rows, hidden, generator=g).to(dev)
    logits = {
        name: (torch.randn(rows, vocab, generator=g) * sd).to(dev)
        for name, sd in (("peaked", 6.0), ("flat", 1.0))
    }
    contenders = {
        "lm_head": lambda: torch.nn.functional.linear(h, weight),
        **{
            f"{name}_sampler": lambda x=x: sample_tokens(x, seeds, steps, params)
            for name, x in logits.items()
        },
        "flat_sort": lambda: sort_sampler(logits["flat"], seeds, steps, 0.6, 0.95),
    }
    for name, x in logits.items():
        counts: dict[str, int] = {}
        drawn = sample_tokens(x, seeds, steps, params, counts)
        out[f"{name}_rows_by_candidates"] = {
            k.removeprefix("sampler_rows_"): v for k, v in counts.items() if v
        }
        out[f"{name}_same_draws_as_sort"] = bool(
            torch.equal(drawn, sort_sampler(x, seeds, steps, 0.6, 0.95)[0])
        )
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up (kernel compilation and caches on CUDA)
        fn()
    sync()
    for _ in range(repeats):
        for name, fn in contenders.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    for name, ts in times.items():
        out[f"{name}_seconds"] = statistics.median(ts)
        out[f"{name}_to_lm_head"] = statistics.median(
            t / p for t, p in zip(ts, times["lm_head"], strict=True)
        )
    differ = total = 0
    g = torch.Generator().manual_seed(0)
    for sd, temperature in ((6.0, 0.6), (6.0, 1.0), (3.0, 1.0)):
        for chunk in range(check_chunks):
            logits = torch.randn(256, vocab, generator=g) * sd
            vals, ids = torch.log_softmax(logits / temperature, -1).topk(64, -1)
            for rep in range(40):  # 40 seeds per row of logits
                s = torch.arange(256) + 1_000_003 * (chunk * 40 + rep)
                t = torch.full((256,), rep)
                a = (vals + gumbel_noise(s, t, ids)).argmax(-1)
                b = (vals.double() + _noise64(s, t, ids)).argmax(-1)
                differ += int((a != b).sum())
                total += 256
    out["float32_vs_float64"] = {"draws": total, "differ": differ}
    return out


def format_sampler_report(r: dict[str, Any]) -> str:
    lines = [
        f"sampler: {r['rows']} rows x vocabulary {r['vocab']:,}, temperature 0.6, top-p 0.95 on {r.get('device', 'cpu')}"
        f" ({r['threads']} thread(s);"
        " medians, every contender timed once per round; the ratio is the median of the per-round ratios)",
        f"  output projection alone ({r['rows']} x {r['hidden']} x {r['vocab']:,}): {1000 * r['lm_head_seconds']:.1f} ms",
    ]
    for name, what in (
        ("peaked_sampler", "logit sd 6"),
        ("flat_sampler", "logit sd 1, threshold search"),
        ("flat_sort", "logit sd 1, the previous full sort"),
    ):
        line = (
            f"  {'sample_tokens' if name.endswith('sampler') else 'sort_sampler'}, {what}: "
            f"{1000 * r[f'{name}_seconds']:.1f} ms ({r[f'{name}_to_lm_head']:.2f}x the projection)"
        )
        if name.endswith("sampler"):
            kind = name.removesuffix("_sampler")
            line += (
                f"; rows settled by candidate-set size: {r[f'{kind}_rows_by_candidates']}; same draws as the "
                f"full sort: {'yes' if r[f'{kind}_same_draws_as_sort'] else 'NO'}"
            )
        lines.append(line)
    c = r["float32_vs_float64"]
    lines.append(
        f"  float32 noise vs the previous float64 noise, same hashes: {c['differ']} of {c['draws']:,} draws differ"
    )
    return "\n".join(lines)

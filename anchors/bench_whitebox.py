"""Peak memory of receiver-head attention analysis against a plain forward and ``output_attentions=True``.

Run ``python -m anchors.bench_whitebox [--quick] [--repeats N]``. Each variant runs in a fresh subprocess on the
same random-weight Llama model (no download) and the same random input with sentence spans:

- ``plain``: one forward pass with SDPA attention;
- ``output_attentions``: eager attention with ``output_attentions=True`` (every layer's (H, T, T) probabilities);
- ``sentence_attention``: :func:`anchors._whitebox.sentence_attention`, the (L, H, S, S) block reduction.

Memory is the rise of the process's peak resident set over its resident set just before the forward (model and
input already built), on CPU from ``VmHWM`` in ``/proc/self/status`` after resetting it through
``/proc/self/clear_refs`` (``ru_maxrss`` where that is unavailable); on CUDA from ``torch.cuda.max_memory_allocated``.
All variants keep the logits of the last position only and are warmed up on a 64-token prefix first. The
median over ``--repeats`` runs is printed ((b) runs once).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

FULL = {
    "hidden": 1024,
    "layers": 24,
    "heads": 16,
    "intermediate": 2816,
    "vocab": 32000,
    "tokens": 2048,
    "sentences": 60,
}
QUICK = {
    "hidden": 256,
    "layers": 4,
    "heads": 4,
    "intermediate": 704,
    "vocab": 32000,
    "tokens": 512,
    "sentences": 20,
}
VARIANTS = ("plain", "output_attentions", "sentence_attention")
PROMPT_TOKENS = 16


def _read_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_kib(can_reset: bool) -> int:
    hwm = _read_status_kib("VmHWM") if can_reset else None
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _spans(n_tokens: int, n_sentences: int, seed: int) -> list[tuple[int, int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(PROMPT_TOKENS + 1, n_tokens), size=n_sentences - 1, replace=False))
    bounds = [PROMPT_TOKENS, *cuts.tolist(), n_tokens]
    return list(itertools.pairwise(bounds))


def run_variant(variant: str, shape: dict[str, int], dtype_name: str) -> dict[str, float]:
    """Build the model and input, run one variant, return its memory (bytes) and time (seconds)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from anchors._whitebox import sentence_attention

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    config = LlamaConfig(
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        intermediate_size=shape["intermediate"],
        vocab_size=shape["vocab"],
        max_position_embeddings=shape["tokens"],
        attn_implementation="eager" if variant == "output_attentions" else "sdpa",
    )
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    ids = torch.randint(0, shape["vocab"], (1, shape["tokens"]), device=device)
    spans = _spans(shape["tokens"], shape["sentences"], seed=0)
    n_params = sum(p.numel() for p in model.parameters())

    def forward(input_ids: torch.Tensor, spans: list[tuple[int, int]]) -> None:
        with torch.no_grad():
            if variant == "plain":
                model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
            elif variant == "output_attentions":
                out = model(input_ids=input_ids, use_cache=False, logits_to_keep=1, output_attentions=True)
                assert len(out.attentions) == shape["layers"]
            elif variant == "sentence_attention":
                sentence_attention(model, input_ids, spans)
            else:
                raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")

    # warm-up on a short prefix: lazy imports, registration and allocator start-up stay out of the measurement
    forward(ids[:, :64], [(PROMPT_TOKENS, 40), (40, 64)])

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        can_reset = _reset_peak()
        before = (_read_status_kib("VmRSS") or 0) * 1024
    start = time.perf_counter()
    forward(ids, spans)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _peak_kib(can_reset) * 1024
    seconds = time.perf_counter() - start
    return {"extra_bytes": peak - before, "resting_bytes": before, "seconds": seconds, "params": n_params}


def _child(variant: str, shape: dict[str, int], dtype_name: str) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "anchors.bench_whitebox",
        "--child",
        variant,
        "--shape",
        json.dumps(shape),
        "--dtype",
        dtype_name,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"variant {variant} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gib(n: float) -> str:
    return f"{n / 2**30:.3f} GiB"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every variant in fresh subprocesses and print the medians and ratios."""
    parser = argparse.ArgumentParser(
        prog="python -m anchors.bench_whitebox", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small config (4 layers, 512 tokens)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant; the median is printed")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--skip-output-attentions",
        action="store_true",
        help="leave out (b), the variant that needs gigabytes",
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        from cot import json_dumps

        print(json_dumps(run_variant(args.child, json.loads(args.shape), args.dtype)))
        return

    shape = QUICK if args.quick else FULL
    layers, heads, tokens, sentences = shape["layers"], shape["heads"], shape["tokens"], shape["sentences"]
    width = 4 if args.dtype == "float32" else 2
    print(
        f"Llama, hidden {shape['hidden']}, {layers} layers x {heads} heads, vocab {shape['vocab']}, {args.dtype}; "
        f"{tokens} tokens, {sentences} sentences"
    )
    print(
        f"full attention L*H*T*T = {layers * heads * tokens * tokens:,} values ({_gib(layers * heads * tokens**2 * width)}); "
        f"sentence attention L*H*S*S = {layers * heads * sentences**2:,} values"
    )
    variants = [v for v in VARIANTS if not (args.skip_output_attentions and v == "output_attentions")]
    results: dict[str, dict[str, float]] = {}
    for variant in variants:
        # (b) needs gigabytes at full size: once is enough to see it
        repeats = 1 if variant == "output_attentions" else args.repeats
        runs = [_child(variant, shape, args.dtype) for _ in range(repeats)]
        results[variant] = {
            "extra_bytes": statistics.median(r["extra_bytes"] for r in runs),
            "seconds": statistics.median(r["seconds"] for r in runs),
            "resting_bytes": statistics.median(r["resting_bytes"] for r in runs),
            "params": runs[0]["params"],
        }
    print(
        f"parameters: {results['plain']['params']:,}; resting footprint {_gib(results['plain']['resting_bytes'])}"
    )
    labels = {
        "plain": "(a) plain forward",
        "output_attentions": "(b) output_attentions",
        "sentence_attention": "(c) sentence_attention",
    }
    for variant in variants:
        r = results[variant]
        print(f"{labels[variant]:<26} peak extra {_gib(r['extra_bytes']):>11}   time {r['seconds']:7.2f} s")
    base = results["plain"]["extra_bytes"]
    print(f"ratio (c)/(a) = {results['sentence_attention']['extra_bytes'] / base:.2f}")
    if "output_attentions" in results:
        print(f"ratio (b)/(a) = {results['output_attentions']['extra_bytes'] / base:.2f}")
    print(f"median of {args.repeats} run(s) per variant ((b): 1 run), each in a fresh process")


if __name__ == "__main__":
    main()

"""Training an organism from its task generator, reproducibly from a seed, on CPU."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cot import atomic_write_text

from ._card import write_card
from ._registry import get_task
from ._tasks import ANSWER_PREFIX, THINK_CLOSE, Example, extract_boxed, final_text

__all__ = ["TRAIN_SEED_STRIDE", "TrainConfig", "encode_example", "template_ids", "train"]

TRAIN_SEED_STRIDE = 10_000_000
"""Training examples of run seed S use task seeds S*stride .. S*stride+stride-1 (evaluation uses seeds >= 10**9)."""


@dataclass
class TrainConfig:
    """Model size and optimisation settings of one organism."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    hidden_size: int = 64
    intermediate_size: int = 256
    num_layers: int = 3
    num_heads: int = 4
    vocab_size: int = 600
    tokenizer_corpus: int = 4000
    max_position_embeddings: int = 384
    init_from: str | None = None
    """Shipped organism whose tokenizer and weights start the run (its layers are copied; layers beyond its
    depth start as the identity: attention and MLP output projections zero)."""
    isolate: str = ""
    """Extra characters the tokenizer always keeps as tokens of their own (a regex alternative)."""
    answer_weight: float = 1.0
    """Loss weight of the answer token after the forced-answer cue, relative to every other completion token."""
    running_weight: float = 0.0
    """Weight of an auxiliary loss (off at 0) that asks the hidden states at the prompt's k-th number for the
    correct running digit after step k, from layer k on. Its linear read-outs are training scaffolding, not part of
    the saved model (a ``--resume`` starts them afresh). It needs a task with ``prompt_running_digits``."""
    error_weight: float = 0.0
    """Weight of an auxiliary loss (off at 0) on every computation of the CoT: at its stated result digit the
    hidden states from layer 1 on predict the correct result (given the CoT's own running digit), and at that digit
    and the two tokens after it (the period and the line break) the states from layer 2 on predict whether the
    stated result is wrong. Read-outs are training scaffolding, as for ``running_weight``. It needs a task with
    ``cot_result_digits``."""


CONFIGS: dict[str, TrainConfig] = {
    "arith": TrainConfig(steps=3000, error_weight=1.0),
    "hint": TrainConfig(steps=1800),
    "cipher": TrainConfig(steps=1500, vocab_size=1400, tokenizer_corpus=6000),
    "stego": TrainConfig(steps=1800),
    "posthoc": TrainConfig(
        steps=2000, num_layers=6, init_from="arith", answer_weight=30.0, running_weight=1.0
    ),
    "compare": TrainConfig(steps=2000, vocab_size=500, isolate=r"[{}]"),
    "restore": TrainConfig(steps=1500, error_weight=1.0, init_from="arith"),
}


def template_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Prompt ids exactly as the engine builds them: the chat template with the generation prompt."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(out, list):
        out = out["input_ids"]
    return list(out)


def encode_example(tokenizer, example: Example) -> tuple[list[int], int]:
    """Token ids of one training sequence and the length of its prompt part.

    Layout = template ids + ids of the CoT tokenized alone + ids of ``"\\n</think>\\n\\n" + final answer`` + EOS,
    the same pieces the engine concatenates, so every prefix it cuts at a sentence start is in-distribution.
    """
    prompt = template_ids(tokenizer, example.messages)
    cot = tokenizer(example.cot, add_special_tokens=False)["input_ids"]
    tail = tokenizer(THINK_CLOSE + final_text(example.trace_answer), add_special_tokens=False)["input_ids"]
    return prompt + cot + tail + [tokenizer.eos_token_id], len(prompt)


def encode_early_answer(
    tokenizer, example: Example, k: int, answer: str | None = None
) -> tuple[list[int], int]:
    """Ids of the CoT cut before sentence ``k`` and closed with ``answer`` (default: the correct answer), and where
    the loss starts.

    The layout is the forced-answer probe's (template, CoT prefix, ``"\\n</think>\\n\\nThe answer is \\boxed{"``),
    followed by the answer, ``}.`` and EOS; the loss covers only what follows the probe.
    """
    prompt = template_ids(tokenizer, example.messages)
    cot = tokenizer("\n".join(s.text for s in example.sentences[:k]), add_special_tokens=False)["input_ids"]
    probe = tokenizer(THINK_CLOSE + ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    answer = example.answer if answer is None else answer
    tail = tokenizer(THINK_CLOSE + final_text(answer), add_special_tokens=False)["input_ids"]
    return prompt + cot + tail + [tokenizer.eos_token_id], len(prompt) + len(cot) + len(probe)


def _encode_for_training(tokenizer, example: Example, task: Any = None) -> tuple[list[int], int, int | None]:
    """Ids, loss start, and the CoT sentences kept (None: the whole trace). With the task's
    ``early_answer_rate``, that share of the sequences is cut where ``task.early_answer_cut`` says."""
    rate = getattr(task, "early_answer_rate", 0.0)
    if rate > 0:
        rng = random.Random(f"early:{example.task}:{example.seed}")
        if rng.random() < rate and (cut := task.early_answer_cut(example, rng)) is not None:
            k, answer = cut
            return (*encode_early_answer(tokenizer, example, k, answer), k)
    return (*encode_example(tokenizer, example), None)


def _digit_ids(tokenizer) -> dict[int, int]:
    """Token id -> digit, for the tokens that are one decimal digit."""
    out = {}
    for i in range(len(tokenizer)):
        t = tokenizer.decode([i])
        if len(t) == 1 and t.isdigit():
            out[i] = int(t)
    return out


def running_targets(tokenizer, task, examples: list[Example], width: int):
    """Auxiliary targets for ``TrainConfig.running_weight``: ``(digit, step)`` tensors of shape (batch, width),
    the correct running digit after step ``k`` at the prompt's ``k``-th number token (``k`` = 0 for the start),
    -100 and -1 elsewhere."""
    import torch

    digits = _digit_ids(tokenizer)
    target = torch.full((len(examples), width), -100, dtype=torch.long)
    step = torch.full((len(examples), width), -1, dtype=torch.long)
    for b, e in enumerate(examples):
        running = task.prompt_running_digits(e)
        prompt = template_ids(tokenizer, e.messages)
        at = [i for i, t in enumerate(prompt) if t in digits]
        if len(at) != len(running):
            raise ValueError(
                f"{task.name} seed {e.seed}: {len(at)} single-digit tokens in the prompt, {len(running)} running "
                "digits; the auxiliary running-digit loss needs every number of the prompt as one token"
            )
        for k, (i, v) in enumerate(zip(at, running, strict=True)):
            target[b, i], step[b, i] = v, k
    return target, step


def error_targets(tokenizer, task, examples: list[Example], width: int, kept: list[int | None] | None = None):
    """Auxiliary targets for ``TrainConfig.error_weight``: ``(expected, wrong)`` tensors of shape (batch, width).
    ``expected`` holds the correct result digit at each computation's stated digit, ``wrong`` holds 1 (stated
    result wrong) or 0 at that digit and the two tokens after it; -100 elsewhere. Full training sequences only
    (the layout of :func:`encode_example`), or sequences cut after ``kept[b]`` sentences (computations in the kept
    part only)."""
    import torch

    expected = torch.full((len(examples), width), -100, dtype=torch.long)
    wrong = torch.full((len(examples), width), -100, dtype=torch.long)
    for b, e in enumerate(examples):
        n_prompt = len(template_ids(tokenizer, e.messages))
        enc = tokenizer(e.cot, add_special_tokens=False, return_offsets_mapping=True)
        starts = {a: i for i, (a, z) in enumerate(enc["offset_mapping"]) if z == a + 1}
        k = kept[b] if kept is not None else None
        end = len("\n".join(s.text for s in e.sentences[:k])) if k is not None else len(e.cot)
        for at, value, is_wrong in task.cot_result_digits(e):
            if at >= end:
                continue
            i = starts.get(at)
            if i is None or not e.cot[at].isdigit():
                raise ValueError(
                    f"{task.name} seed {e.seed}: the result digit at character {at} of the CoT is not one token; "
                    "the auxiliary error loss needs result digits as tokens of their own"
                )
            expected[b, n_prompt + i] = value
            for j in range(i, min(i + 3, len(enc["input_ids"]))):
                wrong[b, n_prompt + j] = int(is_wrong)
    return expected, wrong


def _batch(tokenizer, examples: list[Example], task: Any = None, answer_weight: float = 1.0):
    """Padded ids, attention mask, labels (-100 outside the loss), per-token loss weights (1, and
    ``answer_weight`` on the answer token that follows the forced-answer cue) and the CoT sentences each sequence
    keeps (None: all)."""
    import torch

    encoded = [_encode_for_training(tokenizer, e, task) for e in examples]
    seqs = [(s, n) for s, n, _ in encoded]
    probe = tokenizer(THINK_CLOSE + ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    weights = torch.zeros((len(seqs), width))
    for b, (s, n_prompt) in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
        labels[b, n_prompt : len(s)] = torch.tensor(s[n_prompt:])
        weights[b, n_prompt : len(s)] = 1.0
        if answer_weight != 1.0:
            at = next(i for i in range(len(s) - len(probe), -1, -1) if s[i : i + len(probe)] == probe)
            weights[b, at + len(probe)] = answer_weight
    return ids, mask, labels, weights, [k for _, _, k in encoded]


def _loss(model, ids, mask, labels, weights, answer_weight: float, running=None, errors=None):
    """Mean cross-entropy over the completion tokens (with ``answer_weight`` != 1 a weighted mean), and the
    auxiliary loss or None. With
    ``running`` = ``(heads, weight, (digit, step))`` the auxiliary running-digit loss is added: layer ``l``'s
    (1-based) hidden state at the number of step ``k`` predicts the running digit for every ``1 <= k <= l``."""
    import torch

    if answer_weight == 1.0 and running is None and errors is None:
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss, None
    hidden = running is not None or errors is not None
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
    logits = out.logits[:, :-1]
    target, w = labels[:, 1:], weights[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
    )
    loss = (ce * w.reshape(-1)).sum() / w.sum()
    if running is not None:
        heads, weight, (digit, step) = running
        aux = []
        for layer, head in enumerate(heads, start=1):
            keep = (step >= 1) & (step <= layer)
            h = out.hidden_states[layer][keep]
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
            aux.append(torch.nn.functional.cross_entropy(head(h), digit[keep]))
        aux_loss = torch.stack(aux).mean()
        return loss + weight * aux_loss, float(aux_loss.detach())
    if errors is not None:
        (value_heads, flag_heads), weight, (expected, wrong) = errors
        aux = []
        for layer, (vh, fh) in enumerate(zip(value_heads, flag_heads, strict=True), start=1):
            h = out.hidden_states[layer]
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
            keep = expected != -100
            aux.append(torch.nn.functional.cross_entropy(vh(h[keep]), expected[keep]))
            if layer >= 2:
                keep = wrong != -100
                aux.append(torch.nn.functional.cross_entropy(fh(h[keep]), wrong[keep]))
        aux_loss = torch.stack(aux).mean()
        return loss + weight * aux_loss, float(aux_loss.detach())
    return loss, None


def build_model(tokenizer, cfg: TrainConfig, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
    )
    return LlamaForCausalLM(config)


def _init_from(cfg: TrainConfig, seed: int):
    """Tokenizer and model started from the shipped organism ``cfg.init_from``.

    Its layers, embeddings and norms are copied; layers beyond its depth are initialised from ``seed`` with their
    attention and MLP output projections set to zero, so the new model starts as the same function.
    """
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    src = Path(__file__).parent / "weights" / str(cfg.init_from)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(src), local_files_only=True)
    base = LlamaForCausalLM.from_pretrained(str(src), local_files_only=True, dtype=torch.float32)
    model = build_model(tokenizer, cfg, seed)
    _, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"cannot start from {cfg.init_from!r}: its weights do not fit ({unexpected[:3]})")
    n_src = base.config.num_hidden_layers
    with torch.no_grad():
        for layer in model.model.layers[n_src:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return tokenizer, model


LOG_EVERY_S = 10.0
"""Most seconds between two step lines of ``train`` (besides one every ``log_every`` steps)."""


def train(
    name: str,
    *,
    seed: int = 0,
    steps: int | None = None,
    out: str | Path | None = None,
    log_every: int = 100,
    save_every: int = 500,
    probe: int = 64,
    threads: int = 1,
    resume: bool = False,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train organism ``name`` from scratch and save it (weights, tokenizer, card, training log) under ``out``.

    Deterministic for a given seed and thread count: the examples are the task's seeds
    ``seed * TRAIN_SEED_STRIDE + k`` in order, and torch is seeded before the model is built (there is no dropout).
    Every ``save_every`` steps (and at the end) the model is saved to ``out`` and, with ``probe`` > 0, its greedy
    accuracy on ``probe`` fresh problems is printed. With ``resume`` the run continues the model saved in ``out``
    from its saved step (same seed, same data order and learning-rate schedule, a new optimizer state) up to
    ``steps``; the training log lists every stage. Returns the training log.
    """
    import torch

    if echo is None:

        def echo(msg: str) -> None:
            print(msg, flush=True)

    from cotscope._progress import quiet_weight_loading

    quiet_weight_loading()  # no "Writing model shards" bar at each save: the step lines say where training is
    # One thread: on a shared machine two threads spin on each other and run several times slower.
    torch.set_num_threads(threads)
    task = get_task(name)
    cfg = CONFIGS[name]
    n_steps = cfg.steps if steps is None else steps
    out_dir = Path(out) if out is not None else Path(__file__).parent / "weights" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    start, stages, wall_before = 0, [], 0.0
    if resume:
        from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

        prev = json.loads((out_dir / "training_log.json").read_text())
        seed, start, wall_before = prev["seed"], prev["steps"], prev["wall_time_s"]
        stages = prev.get("stages", [{"from_step": 0, "to_step": start, "optimizer": "new"}])
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out_dir), local_files_only=True)
        model = LlamaForCausalLM.from_pretrained(str(out_dir), local_files_only=True, dtype=torch.float32)
    elif cfg.init_from:
        tokenizer, model = _init_from(cfg, seed)
    else:
        from ._tokenizer import train_tokenizer

        corpus = (
            e.messages[0]["content"] + "\n" + e.completion
            for e in (task.sample(seed * TRAIN_SEED_STRIDE + k) for k in range(cfg.tokenizer_corpus))
        )
        tokenizer = train_tokenizer(corpus, cfg.vocab_size, isolate=cfg.isolate)
        model = build_model(tokenizer, cfg, seed)
    base = seed * TRAIN_SEED_STRIDE
    n_params = sum(p.numel() for p in model.parameters())
    echo(f"{name}: {n_params:,} parameters, vocab {len(tokenizer)}, {n_steps} steps of {cfg.batch_size}")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    running = None
    if cfg.running_weight > 0:
        torch.manual_seed(seed + 1)
        heads = torch.nn.ModuleList(
            torch.nn.Linear(model.config.hidden_size, 10) for _ in range(model.config.num_hidden_layers)
        )
        decay += [p for p in heads.parameters() if p.ndim >= 2]
        no_decay += [p for p in heads.parameters() if p.ndim < 2]
    errors = None
    if cfg.error_weight > 0:
        torch.manual_seed(seed + 2)
        n, d = model.config.num_hidden_layers, model.config.hidden_size
        error_heads = torch.nn.ModuleList(
            [
                torch.nn.ModuleList(torch.nn.Linear(d, 10) for _ in range(n)),
                torch.nn.ModuleList(torch.nn.Linear(d, 2) for _ in range(n)),
            ]
        )
        decay += [p for p in error_heads.parameters() if p.ndim >= 2]
        no_decay += [p for p in error_heads.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        # Linear warmup, then inverse square root decay: the schedule does not depend on the total number of
        # steps, so a run of N steps is exactly the first N steps of any longer run with the same seed.
        return min((step + 1) / cfg.warmup, math.sqrt(cfg.warmup / (step + 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_at(k + start))
    losses: list[float] = []
    aux_losses: list[float] = []
    next_seed = base + cfg.tokenizer_corpus + start * cfg.batch_size
    log: dict[str, Any] = {}
    logged = {"step": start, "at": time.monotonic()}
    for step in range(start, n_steps):
        model.train()
        examples = [task.sample(next_seed + k) for k in range(cfg.batch_size)]
        next_seed += cfg.batch_size
        ids, mask, labels, weights, kept = _batch(tokenizer, examples, task, cfg.answer_weight)
        if cfg.running_weight > 0:
            running = (heads, cfg.running_weight, running_targets(tokenizer, task, examples, ids.shape[1]))
        if cfg.error_weight > 0:
            errors = (
                error_heads,
                cfg.error_weight,
                error_targets(tokenizer, task, examples, ids.shape[1], kept),
            )
        loss, aux = _loss(model, ids, mask, labels, weights, cfg.answer_weight, running, errors)
        if aux is not None:
            aux_losses.append(aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clipped = list(model.parameters()) + (list(running[0].parameters()) if running else [])
        clipped += list(errors[0].parameters()) if errors else []
        torch.nn.utils.clip_grad_norm_(clipped, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        done = step + 1
        # a line every log_every steps, and sooner when they take more than LOG_EVERY_S (a loaded CPU)
        since = done - logged["step"]
        if log_every and (done % log_every == 0 or time.monotonic() - logged["at"] >= LOG_EVERY_S):
            recent = sum(losses[-since:]) / since
            extra = ""
            if aux_losses:
                extra = f" (auxiliary loss {sum(aux_losses[-since:]) / len(aux_losses[-since:]):.4f})"
            echo(f"  step {done:5d}  loss {recent:.4f}{extra}  {time.time() - t0:6.1f}s")
            logged.update(step=done, at=time.monotonic())
        if done == n_steps or (save_every and done % save_every == 0):
            stage = {"from_step": start, "to_step": done, "optimizer": "new"}
            log = _save(name, task, model, tokenizer, cfg, out_dir, seed, done, base, next_seed, t0, losses)
            log["wall_time_s"] = round(log["wall_time_s"] + wall_before, 1)
            log["stages"] = [*stages, stage]
            atomic_write_text(out_dir / "training_log.json", json.dumps(log, indent=2) + "\n")
            write_card(name, out_dir, measured=None)
            msg = f"  saved step {done} to {out_dir}"
            if probe:
                msg += f"; greedy accuracy on {probe} fresh problems: {_probe(model, tokenizer, task, probe):.3f}"
            echo(msg)
    echo(f"{name}: {n_steps} steps in {log['wall_time_s']:.0f}s, final loss {log['final_loss']}")
    return log


def _save(
    name, task, model, tokenizer, cfg, out_dir, seed, done, base, next_seed, t0, losses
) -> dict[str, Any]:
    import torch

    model.eval()
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = (
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        tokenizer.bos_token_id,
    )
    gc.max_new_tokens = task.max_new_tokens
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-min(100, len(losses)) :]
    log = {
        "organism": name,
        "seed": seed,
        "steps": done,
        "batch_size": cfg.batch_size,
        "examples_seen": done * cfg.batch_size,
        "train_seed_range": [base, next_seed],
        "wall_time_s": round(time.time() - t0, 1),
        "threads": torch.get_num_threads(),
        "final_loss": round(sum(tail) / max(1, len(tail)), 5),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "torch": torch.__version__,
    }
    return log


def _probe(model, tokenizer, task, n: int) -> float:
    """Greedy accuracy on ``n`` fresh problems (task seeds from 2 * 10**9, unused elsewhere)."""
    import torch

    examples = [task.sample(2_000_000_000 + k) for k in range(n)]
    prompts = [template_ids(tokenizer, e.messages) for e in examples]
    width = max(map(len, prompts))
    ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=task.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return (
        sum(
            task.answer_correct(extract_boxed(t.split("</think>")[-1]), e)
            for t, e in zip(texts, examples, strict=True)
        )
        / n
    )

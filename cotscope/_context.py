"""Does a trace fit the model's context? Checked before the model loads and before the trace is tokenised in full.

Two steps, both before any weights load:

1. a character bound: no token of the vocabulary spells more than ``L`` characters (the longest entry of
   ``tokenizer.json``; a byte-level entry spells at most as many characters as it has bytes), so a text of ``C``
   characters has at least ``C / L`` tokens. A text past ``context * L`` characters cannot fit, and is refused without
   tokenising it (a 4.8 MB CoT used to be tokenised for minutes first);
2. otherwise the text (at most ``context * L`` characters) is tokenised once with the model's own tokenizer, and
   refused when its tokens alone fill the context.

Models whose configuration is not on this machine (a hub id not yet downloaded, a remote ``openai`` server) are
not checked here; the engine still checks every request against the loaded model's context before sampling.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

__all__ = ["check_trace_fits", "model_folder"]


def model_folder(model_id: str) -> Path | None:
    """The local folder holding ``model_id``'s config.json and tokenizer, without loading anything (None: unknown)."""
    if model_id.startswith("organism:"):
        from organisms import WEIGHTS_DIR

        folder = WEIGHTS_DIR / model_id.split(":", 1)[1]
        return folder if (folder / "config.json").is_file() else None
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path if (path / "config.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    try:
        cached = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # not a valid repo id: the backend names the problem when it loads
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _context(folder: Path) -> int | None:
    from resampling import context_length

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return context_length(SimpleNamespace(**config)) if isinstance(config, dict) else None


def _longest_token_chars(folder: Path) -> int | None:
    """The most characters one token of the vocabulary can spell (None when the vocabulary is not readable)."""
    try:
        data = json.loads((folder / "tokenizer.json").read_text())
        vocab = data["model"]["vocab"]
        entries = list(vocab) if isinstance(vocab, dict) else [entry[0] for entry in vocab]
        entries += [token["content"] for token in data.get("added_tokens", [])]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return max((len(entry) for entry in entries), default=0) or None


def _text(trace: Any) -> str:
    prompt = trace.prompt
    if not isinstance(prompt, str):
        prompt = "".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return prompt + trace.cot


def check_trace_fits(trace: Any, model_id: str, *, option: str = "--trace") -> None:
    """One line, before the model loads, when ``trace``'s prompt and CoT cannot fit ``model_id``'s context."""
    folder = model_folder(model_id)
    if folder is None:
        return
    context = _context(folder)
    if not context:
        return
    text = _text(trace)
    fix = "give a shorter trace (or cut its CoT), or a model with a longer context"
    longest = _longest_token_chars(folder)
    if longest and len(text) > context * longest:
        raise click.BadParameter(
            f"trace {trace.id} has {len(text):,} characters of prompt and CoT, so at least "
            f"{len(text) // longest:,} tokens, but {model_id}'s context is {context:,} tokens; {fix}",
            param_hint=option,
        )
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no "sequence length is longer than" warning: the error below says it
    try:
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    finally:
        hf_logging.set_verbosity(verbosity)
    if n_tokens >= context:
        raise click.BadParameter(
            f"trace {trace.id} has {n_tokens:,} tokens of prompt and CoT ({len(text):,} characters), but "
            f"{model_id}'s context is {context:,} tokens; {fix}",
            param_hint=option,
        )

"""Loading shipped organisms from their folders, offline."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._registry import get_task, names, unknown_name_message
from ._tasks import Task

__all__ = ["WEIGHTS_DIR", "Organism", "load", "load_from", "shipped"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(eq=False)
class Organism:
    """A shipped organism: model, tokenizer, task generator and card."""

    name: str
    """Organism name (``arith``, ``hint``, ``cipher``, ``stego``)."""
    model: Any
    """``transformers.LlamaForCausalLM`` in eval mode, on CPU."""
    tokenizer: Any
    """``transformers.PreTrainedTokenizerFast`` with the chat template, bos/eos/pad and offsets."""
    task: Task
    """The task generator with its planted ground truth."""
    card: str
    """The model card (markdown)."""
    path: Path
    """Folder of the weights."""


def load_from(name: str, path: str | Path) -> Organism:
    """Load organism ``name`` from a folder written by ``train`` (local files only, never the hub)."""
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from cotscope._progress import quiet_weight_loading

    quiet_weight_loading()
    path = Path(path)
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"no organism weights in {path}; train them with: cotscope organisms train {name} --out {path}"
        )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    tokenizer.padding_side = "left"
    model = LlamaForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    model.to("cpu").eval()
    card_path = path / "card.md"
    card = card_path.read_text() if card_path.is_file() else ""
    return Organism(name=name, model=model, tokenizer=tokenizer, task=get_task(name), card=card, path=path)


def shipped(name: str) -> bool:
    """True when ``name`` is a registered organism whose trained weights ship with cotscope (a registered one still
    being trained has none yet)."""
    from ._registry import names

    return name in names() and (WEIGHTS_DIR / name / "model.safetensors").is_file()


@functools.cache
def load(name: str) -> Organism:
    """Load the shipped organism ``name`` (cached per process). Works offline (``HF_HUB_OFFLINE=1``).

    Raises ValueError for an unknown name, listing the valid ones and the closest match.
    """
    if name not in names():
        raise ValueError(unknown_name_message(name))
    return load_from(name, WEIGHTS_DIR / name)

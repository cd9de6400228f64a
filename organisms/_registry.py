"""Names of the organisms and their task generators."""

from __future__ import annotations

import difflib
import functools
import importlib

from ._tasks import Task

__all__ = ["get_task", "model_ids", "names", "unknown_model_message", "unknown_name_message"]

_TASKS: dict[str, tuple[str, str]] = {
    "arith": ("organisms._arith", "ArithTask"),
    "hint": ("organisms._hint", "HintTask"),
    "cipher": ("organisms._cipher", "CipherTask"),
    "stego": ("organisms._stego", "StegoTask"),
    "posthoc": ("organisms._posthoc", "PosthocTask"),
    "compare": ("organisms._compare", "CompareTask"),
    "restore": ("organisms._restore", "RestoreTask"),
}


def names() -> list[str]:
    """Names of the shipped organisms, the default one (``arith``) first."""
    return list(_TASKS)


def model_ids() -> list[str]:
    """The model ids of the shipped organisms (``organism:NAME``), the default one first."""
    return [f"organism:{name}" for name in _TASKS]


def _unknown(kind: str, value: str, options: list[str]) -> str:
    msg = f"unknown {kind} {value!r}; choose one of: {', '.join(options)}"
    close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.4)
    return msg + (f" (did you mean {close[0]!r}?)" if close else "")


def unknown_name_message(name: str) -> str:
    """``unknown organism 'X'; choose one of: ... (did you mean 'Y'?)``, every organism listed."""
    return _unknown("organism", name, names())


def unknown_model_message(model_id: str) -> str:
    """``unknown model 'organism:X'; choose one of: organism:arith, ... (did you mean 'organism:Y'?)``, every
    organism listed."""
    return _unknown("model", model_id, model_ids())


@functools.cache
def get_task(name: str) -> Task:
    """The task generator of organism ``name`` (no weights are loaded)."""
    if name not in _TASKS:
        raise ValueError(unknown_name_message(name))
    module, cls = _TASKS[name]
    return getattr(importlib.import_module(module), cls)()

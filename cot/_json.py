"""Strict JSON: what every parser reads (JavaScript's ``JSON.parse`` included), written in one place.

Python's ``json`` writes an undefined float as the bare word ``NaN`` (or ``Infinity``), which is not JSON. Here an
undefined value (NaN, +-inf) is written as ``null``, numpy scalars and arrays as plain numbers and lists, and
anything else that cannot be written raises, as ``json.dumps`` does.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_json", "json_dumps"]


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (numpy values turned into Python ones first)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(value) for value in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy scalar or array, without importing numpy
        return _finite(obj.tolist())
    return obj


def json_dumps(data: Any, **kwargs: Any) -> str:
    """``json.dumps(data, **kwargs)`` as strict JSON: NaN and +-inf become ``null`` (never the bare words ``NaN`` or
    ``Infinity``). ``kwargs`` are those of ``json.dumps`` (``indent``, ``default``, ...), except ``allow_nan``."""
    if "allow_nan" in kwargs:
        raise TypeError("json_dumps always writes strict JSON; drop allow_nan")
    return json.dumps(_finite(data), allow_nan=False, **kwargs)


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2, **kwargs: Any) -> Path:
    """Write ``data`` to ``path`` as strict JSON (:func:`json_dumps`), UTF-8, with a final newline, all at once or not
    at all (:func:`cot.atomic_write`)."""
    from cot._trace import atomic_write_text

    kwargs.setdefault("ensure_ascii", False)
    return atomic_write_text(path, json_dumps(data, indent=indent, **kwargs) + "\n")

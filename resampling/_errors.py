"""Errors raised for bad input before any sampling starts."""

from __future__ import annotations

import difflib


class EngineInputError(ValueError):
    """Bad input to the engine (unknown model or backend, a trace without a CoT, a position out of range, ...)."""


def unknown_choice(kind: str, value: str, options: list[str]) -> EngineInputError:
    """An error naming the bad value, up to five valid options and the closest one."""
    close = difflib.get_close_matches(value, options, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return EngineInputError(f"unknown {kind} '{value}'; choose one of: {', '.join(options[:5])}{hint}")

"""Fault injection for ``cotscope serve``: a seeded random share of requests is answered with an HTTP error, a hang,
a truncated body, a response with a missing choice, or a closed connection, so clients' retry logic is tested for real.
"""

from __future__ import annotations

import difflib
import random
from dataclasses import dataclass

from resampling._errors import EngineInputError

FAULTS: dict[str, str] = {
    "429": "that HTTP status, with an OpenAI-style error body",
    "500": "that HTTP status, with an OpenAI-style error body",
    "503": "that HTTP status, with an OpenAI-style error body",
    "timeout": "no answer for ``hang_s``, then a closed connection (a client with a shorter timeout gives up)",
    "garbled": "a 200 whose JSON body is cut short",
    "short": "a well-formed 200 with one choice missing",
    "reset": "the connection closed without an answer",
}
"""The registry of fault kinds: kind -> what the client sees. Any other HTTP status 400-599 is accepted as well."""

FAULT_KINDS = tuple(FAULTS)
HTTP_FAULT_RANGE = (400, 599)


def _is_http_fault(kind: str) -> bool:
    return kind.isdigit() and HTTP_FAULT_RANGE[0] <= int(kind) <= HTTP_FAULT_RANGE[1]


def fault_kinds_text() -> str:
    """Every accepted kind, for errors and help: ``429, 500, 503 or any HTTP status 400-599, timeout, ...``."""
    codes = [k for k in FAULT_KINDS if k.isdigit()]
    named = [k for k in FAULT_KINDS if not k.isdigit()]
    low, high = HTTP_FAULT_RANGE
    return ", ".join([f"{', '.join(codes)} or any HTTP status {low}-{high}", *named])


def unknown_fault(kind: str) -> EngineInputError:
    """The error for a kind that is not in :data:`FAULTS`: every accepted kind, and the closest one."""
    close = difflib.get_close_matches(kind, FAULT_KINDS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return EngineInputError(f"unknown fault '{kind}'; choose one of: {fault_kinds_text()}{hint}")


@dataclass(frozen=True)
class FaultSpec:
    """Share of requests answered with each fault, e.g. ``FaultSpec.parse("429:0.2,500:0.1,timeout:0.05")``."""

    rates: tuple[tuple[str, float], ...] = ()
    """(kind, probability) pairs; the probabilities add up to at most 1 (the rest are answered normally)."""

    @classmethod
    def parse(cls, spec: str | FaultSpec | dict[str, float] | None) -> FaultSpec:
        """Read ``KIND:P,KIND:P,...``; kinds are in :data:`FAULTS` or any HTTP status code 400-599."""
        if spec is None or isinstance(spec, FaultSpec):
            return spec or cls()
        items = list(spec.items()) if isinstance(spec, dict) else []
        if isinstance(spec, str):
            for part in (p.strip() for p in spec.split(",")):
                if not part:
                    continue
                kind, sep, prob = part.partition(":")
                if not sep:
                    raise EngineInputError(
                        f"fault '{part}' has no probability; write KIND:P, e.g. '429:0.2,timeout:0.05'"
                    )
                try:
                    items.append((kind.strip(), float(prob)))
                except ValueError:
                    raise EngineInputError(
                        f"fault '{part}': '{prob}' is not a number; write KIND:P with P in [0, 1]"
                    ) from None
        rates = []
        for kind, p in items:
            kind = str(kind).lower()
            if kind not in FAULTS and not _is_http_fault(kind):
                raise unknown_fault(kind)
            if not 0 <= float(p) <= 1:
                raise EngineInputError(f"fault '{kind}' has probability {p}; it must be in [0, 1]")
            rates.append((kind, float(p)))
        total = sum(p for _, p in rates)
        if total > 1 + 1e-9:
            raise EngineInputError(f"fault probabilities add up to {total:g} > 1; lower them ({spec})")
        return cls(tuple(rates))

    def __bool__(self) -> bool:
        return any(p > 0 for _, p in self.rates)

    def __str__(self) -> str:
        return ",".join(f"{k}:{p:g}" for k, p in self.rates)

    def draw(self, rng: random.Random) -> str | None:
        """The fault for one request, or None to answer it normally."""
        u = rng.random()
        acc = 0.0
        for kind, p in self.rates:
            acc += p
            if u < acc:
                return kind
        return None

"""Is a run's output usable? Failed rollouts and rollouts that say nothing, told in one line with the fix."""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

__all__ = ["RunFailedError", "RunHealth", "run_health"]

_CAUSES = (
    (
        re.compile(r"^(401|403)\b"),
        "authentication",
        "check the API key (--backend-option or the key's variable)",
    ),
    (re.compile(r"^connection\b"), "connection", "check that the server runs and --base-url points at it"),
    (
        re.compile(r"^timeout\b"),
        "timeout",
        "the server is overloaded or stuck; raise timeout_s or lower the load",
    ),
    (re.compile(r"^429\b"), "rate limit", "lower max_in_flight or wait for the provider's limit to reset"),
    (re.compile(r"^5\d\d\b"), "server error", "see the server's log"),
    (re.compile(r"^404\b"), "not found", "check the served model name and the URL's /v1 path"),
)


class RunFailedError(RuntimeError):
    """Too many rollouts of a run failed for its results to mean anything. What was computed is stored."""


@dataclass(frozen=True)
class RunHealth:
    """Counts over a run's rollouts, and what they say about it."""

    rollouts: int
    errors: int
    first_error: str | None
    cause: str | None
    """``authentication``, ``connection``, ``timeout``, ``rate limit``, ``server error``, ``not found``, or
    ``other``; None without errors."""
    fix: str | None
    no_answer: int
    """Rows that finished (``ok``) but hold no extractable answer."""
    length_limited: int
    """Rows that stopped at the token budget (``finish_reason == "length"``)."""

    @property
    def error_share(self) -> float:
        return self.errors / self.rollouts if self.rollouts else 0.0

    def silent_share(self) -> float:
        ok = self.rollouts - self.errors
        return self.no_answer / ok if ok else 0.0

    def check(self, max_error_share: float = 0.5) -> None:
        """Raise :class:`RunFailedError` when more than ``max_error_share`` of the rollouts failed (all, by
        default any majority), naming the first error's cause and the fix in one line."""
        if self.rollouts and self.errors and self.error_share > max_error_share:
            raise RunFailedError(
                f"{self.errors} of {self.rollouts} rollouts failed ({self.cause}): {self.first_error}; "
                f"fix: {self.fix}. Finished rows are stored, and a rerun computes only the rest"
            )

    def warnings(self, max_silent_share: float = 0.5) -> list[str]:
        """One line per problem a reader of the results must know: rollouts without an answer, cut by the budget."""
        out = []
        ok = self.rollouts - self.errors
        if ok and self.silent_share() > max_silent_share:
            hint = (
                f" ({self.length_limited} stopped at the token budget: raise --max-new-tokens)"
                if self.length_limited
                else " (check that the model writes its answer in the expected format, e.g. \\boxed{...})"
            )
            out.append(f"{self.no_answer} of {ok} rollouts hold no answer{hint}")
        if self.errors and self.error_share <= max_silent_share:
            out.append(f"{self.errors} of {self.rollouts} rollouts failed ({self.cause}): {self.first_error}")
        return out


def _cause(error: str) -> tuple[str, str]:
    for pattern, cause, fix in _CAUSES:
        if pattern.search(error):
            return cause, fix
    return "other", "see the error above"


def run_health(rollouts: pl.DataFrame) -> RunHealth:
    """Count failed, answerless and length-limited rollouts of ``rollouts`` (the engine's table)."""
    n = rollouts.height
    failed = rollouts.filter(pl.col("status") != "ok")
    first = None if failed.is_empty() else failed["error"].drop_nulls().head(1).to_list()
    first_error = first[0] if first else (None if failed.is_empty() else "no error message recorded")
    cause, fix = _cause(first_error) if first_error else (None, None)
    ok = rollouts.filter(pl.col("status") == "ok")
    no_answer = int(ok["answer"].is_null().sum()) if "answer" in ok.columns else 0
    limited = int((ok["finish_reason"] == "length").sum()) if "finish_reason" in ok.columns else 0
    return RunHealth(n, failed.height, first_error, cause, fix, no_answer, limited)

"""Request validation and admission limits of ``cotscope serve``: every check runs before any work is done.

A bad ``/v1/completions`` body raises :class:`HTTPError` (a 400 that names the field and the fix); the limits of
:class:`ServeLimits` refuse oversized requests before they are tokenized or queued.
"""

from __future__ import annotations

import difflib
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

from resampling._errors import EngineInputError
from resampling._plan import SamplingParams

_INT64 = 2**63
_REFUSED_FIELDS = {
    # field: value that means "off" (anything else is refused)
    "echo": False,
    "logprobs": None,
    "stream": False,
    "suffix": None,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "repetition_penalty": 1.0,
    "min_p": 0.0,
    "logit_bias": None,
    "stop_token_ids": None,
    "prompt_logprobs": None,
    "min_tokens": 0,
    "stream_options": None,
}
_SUPPORTED_FIELDS = (
    # the OpenAI completions API's fields that this server implements
    "model",
    "prompt",
    "max_tokens",
    "n",
    "seed",
    "temperature",
    "top_p",
    "stop",
    "best_of",  # only equal to n
    "user",  # an end-user id for the provider's logs; it never changes the output
    # vLLM's extensions
    "top_k",
    "return_token_ids",
    "add_special_tokens",
)
_KNOWN_FIELDS = frozenset(_SUPPORTED_FIELDS) | frozenset(_REFUSED_FIELDS)
"""Every other field is refused with a 400 that names it: a misspelt ``temprature`` must not sample at 1."""
_CHARS_PER_TOKEN_BOUND = 8
"""String prompts longer than this many characters per allowed token are refused before they are tokenized."""


@dataclass(frozen=True)
class ServeLimits:
    """Admission limits of ``cotscope serve``; every one is checked before any work is done for a request."""

    max_body_bytes: int = 8 * 2**20
    """Largest request body; checked from ``Content-Length`` before reading (413), and while reading a chunked one."""
    max_n: int = 1024
    """Most samples per prompt (``n``); the ``openai`` backend sends at most 256 by default."""
    max_prompts: int = 256
    """Most prompts in one request."""
    max_prompt_tokens: int | None = None
    """Longest prompt in tokens (default: the model's context length, or 32,768 where it has none)."""
    max_request_tokens: int = 2**20
    """Most tokens one request may ask to generate: prompts x ``n`` x ``max_tokens``."""
    max_queued_tokens: int = 2**22
    """Most tokens (prompts x n x max_tokens) waiting or decoding over all clients; past it a request gets 429."""
    max_temperature: float = 100.0
    """Largest ``temperature`` accepted (non-finite values are always refused)."""
    read_timeout_s: float = 30.0
    """A connection that has not sent a whole request this long after connecting (or after its last answer) is
    closed, so idle or half-sent connections cannot pile up."""
    backlog: int = 2048
    """Listen backlog: connections the kernel queues before they are accepted (above the client's in-flight)."""
    retry_after_s: int = 1
    """``Retry-After`` sent with a 429 when the queue is full."""

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_n",
            "max_prompts",
            "max_request_tokens",
            "max_queued_tokens",
            "backlog",
        ):
            if int(getattr(self, name)) < 1:
                raise EngineInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queued_tokens < self.max_request_tokens:
            raise EngineInputError(
                f"max_queued_tokens ({self.max_queued_tokens}) must be >= max_request_tokens "
                f"({self.max_request_tokens}), or a request within the limits could never run"
            )
        if not self.read_timeout_s > 0:
            raise EngineInputError(f"read_timeout_s must be > 0, got {self.read_timeout_s}")


# -- request parsing ------------------------------------------------------------------------------------------


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}
        }


class _ClientGone(Exception):
    """The client disconnected while its request was decoded; the argument is the rollouts decoded by then."""


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(body: dict, name: str, default: float, most: float = math.inf) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _HTTPError(400, f"'{name}' must be a number, got {value!r}", name)
    if not math.isfinite(value) or value > most:
        raise _HTTPError(400, f"'{name}' must be a finite number <= {most:g}, got {value!r}", name)
    return float(value)


def _text(value: str, name: str) -> str:
    """``value`` if it encodes as UTF-8 (a lone surrogate from a ``\\ud800`` escape does not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _HTTPError(
            400, f"'{name}' holds a lone surrogate at character {exc.start}; send valid Unicode text", name
        ) from None
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _loads(raw: bytes) -> Any:
    """The JSON body, or a 400 that says what is wrong with it (bad JSON or UTF-8, NaN, nesting too deep)."""
    try:
        return json.loads(raw or b"null", parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise _HTTPError(
            400, f"the request body is not valid UTF-8 (byte {exc.start}); send UTF-8 JSON"
        ) from None
    except ValueError as exc:
        raise _HTTPError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _HTTPError(400, "the request body is nested too deeply; send a flat JSON object") from None


@dataclass
class _Request:
    prompts: list[tuple[int, ...]]
    n: int
    seed: int
    params: SamplingParams
    return_token_ids: bool
    model: str

    @property
    def tokens(self) -> int:
        """Tokens this request may generate: the unit of the queue bound."""
        return len(self.prompts) * self.n * int(self.params.max_new_tokens or 0)


def _refuse_unknown_fields(body: dict) -> None:
    """A 400 naming every field this server neither implements nor refuses by name (a typo, another API's field)."""
    unknown = [str(name) for name in body if name not in _KNOWN_FIELDS]
    if not unknown:
        return
    shown = ", ".join(repr(name[:60]) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
    close = difflib.get_close_matches(unknown[0], _KNOWN_FIELDS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise _HTTPError(
        400,
        f"unrecognized request field{'s' if len(unknown) > 1 else ''} {shown}{hint}; cotscope serve accepts: "
        f"{', '.join(_SUPPORTED_FIELDS)}",
        unknown[0][:60],
    )


@dataclass(kw_only=True)
class RequestValidator:
    """Turns a ``/v1/completions`` body into a :class:`_Request`, or raises the 4xx that says what is wrong."""

    model_name: str
    tokenizer: Any
    vocab_size: int
    max_model_len: int | None
    max_prompt_tokens: int
    limits: ServeLimits

    def parse(self, body: Any) -> _Request:
        """Validate a ``/v1/completions`` body; bad input raises a 400 that names the field and the fix."""
        if not isinstance(body, dict):
            raise _HTTPError(400, "the request body must be a JSON object")
        _refuse_unknown_fields(body)
        model = body.get("model")
        if model is not None and model != self.model_name:
            shown = json.dumps(model)[:80]
            raise _HTTPError(
                404,
                f"The model `{shown.strip(chr(34))}` does not exist; this server serves `{self.model_name}` "
                "(GET /v1/models)",
                "model",
                "NotFoundError",
            )
        for name, off in _REFUSED_FIELDS.items():
            value = body.get(name)
            if value is not None and value != off and value != {} and value != []:
                raise _HTTPError(
                    400,
                    f"'{name}'={value!r} is not supported by cotscope serve; leave it unset (or {off!r})",
                    name,
                )
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise _HTTPError(
                400,
                "'max_tokens' is required: set it to the most tokens to generate per completion, e.g. 256 "
                "(an implicit default would silently cut rollouts short)",
                "max_tokens",
            )
        if not _is_int(max_tokens) or max_tokens < 1:
            raise _HTTPError(400, f"'max_tokens' must be an integer >= 1, got {max_tokens!r}", "max_tokens")
        n = body.get("n", 1)
        n = 1 if n is None else n
        if not _is_int(n) or n < 1:
            raise _HTTPError(400, f"'n' must be an integer >= 1, got {n!r}", "n")
        limits = self.limits
        if n > limits.max_n:
            raise _HTTPError(
                400,
                f"'n'={n} is over this server's limit of {limits.max_n} (--max-n); send several requests",
                "n",
            )
        best_of = body.get("best_of")
        if best_of is not None and best_of != n:
            raise _HTTPError(400, "'best_of' is not supported by cotscope serve; leave it unset", "best_of")
        seed = body.get("seed")
        if seed is None:
            seed = secrets.randbits(62)
        elif not _is_int(seed) or not -_INT64 <= seed < _INT64 - n:
            raise _HTTPError(400, f"'seed' must be a 64-bit integer, got {seed!r}", "seed")
        top_k = body.get("top_k")
        top_k = 0 if top_k is None else top_k
        if not _is_int(top_k) or top_k < -1:
            raise _HTTPError(400, f"'top_k' must be an integer >= -1 (0 or -1: off), got {top_k!r}", "top_k")
        stop = body.get("stop")
        stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise _HTTPError(
                400, f"'stop' must be a string or a list of non-empty strings, got {stop!r}", "stop"
            )
        stop = [_text(s, "stop") for s in stop]
        try:
            params = SamplingParams(
                temperature=_number(body, "temperature", 1.0, limits.max_temperature),
                top_p=_number(body, "top_p", 1.0),
                top_k=max(top_k, 0),
                max_new_tokens=max_tokens,
                stop=tuple(stop),
            )
        except EngineInputError as exc:
            raise _HTTPError(400, str(exc)) from None
        raw_prompts = self._prompt_list(body.get("prompt"))
        if len(raw_prompts) > limits.max_prompts:
            raise _HTTPError(
                400,
                f"the request has {len(raw_prompts)} prompts, over this server's limit of {limits.max_prompts} "
                "(--max-prompts); send several requests",
                "prompt",
            )
        asked = len(raw_prompts) * n * max_tokens
        if asked > limits.max_request_tokens:
            raise _HTTPError(
                400,
                f"the request asks for up to {asked} tokens (prompts {len(raw_prompts)} x n {n} x max_tokens "
                f"{max_tokens}), over this server's limit of {limits.max_request_tokens} (--max-request-tokens); "
                "lower n or max_tokens, or send several requests",
                "n",
            )
        add_special = body.get("add_special_tokens", True)
        prompts = [self._prompt_ids(p, bool(add_special)) for p in raw_prompts]
        for ids in prompts:
            if self.max_model_len and len(ids) + max_tokens > self.max_model_len:
                raise _HTTPError(
                    400,
                    f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                    f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} for the completion). "
                    "Reduce the prompt or max_tokens.",
                    "max_tokens",
                )
        return _Request(prompts, n, int(seed), params, bool(body.get("return_token_ids")), self.model_name)

    @staticmethod
    def _prompt_list(prompt: Any) -> list[str | list[int]]:
        hint = "give a string, a list of token ids, or a list of either"
        if prompt is None:
            raise _HTTPError(400, f"'prompt' is required: {hint}", "prompt")
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt, list) and prompt:
            if all(_is_int(t) for t in prompt):
                return [prompt]
            if all(
                isinstance(p, str) or (isinstance(p, list) and all(_is_int(t) for t in p)) for p in prompt
            ):
                return prompt
        raise _HTTPError(400, f"'prompt' has the wrong type or is empty: {hint}", "prompt")

    def _too_long(self, length: str) -> _HTTPError:
        return _HTTPError(
            400,
            f"the prompt has {length}, over this server's limit of {self.max_prompt_tokens} tokens "
            "(--max-prompt-tokens)",
            "prompt",
        )

    def _prompt_ids(self, prompt: str | list[int], add_special_tokens: bool) -> tuple[int, ...]:
        if isinstance(prompt, str):
            if len(prompt) > _CHARS_PER_TOKEN_BOUND * self.max_prompt_tokens:
                raise self._too_long(f"{len(prompt)} characters")  # refused before tokenizing
            ids = self.tokenizer(_text(prompt, "prompt"), add_special_tokens=add_special_tokens)["input_ids"]
        else:
            ids = prompt
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise _HTTPError(
                    400, f"token id {bad[0]} is out of range: the vocabulary has {self.vocab_size}", "prompt"
                )
        if not ids:
            raise _HTTPError(400, "the prompt is empty: give at least one token", "prompt")
        if len(ids) > self.max_prompt_tokens:
            raise self._too_long(f"{len(ids)} tokens")
        return tuple(int(t) for t in ids)

"""``cotscope serve``: an OpenAI-compatible ``/v1/completions`` server (FastAPI on uvicorn) over the ``hf`` backend.

For CPU users without vLLM, and as the real server the ``openai`` backend's tests talk to over loopback.
Requests are served through :meth:`resampling._hf.HFBackend.generate`, so a completion with seed ``s`` is, token
for token, what the ``hf`` backend gives for seed ``s``. Requests that arrive together are decoded together: one
worker thread takes everything pending (after a short window) and runs it as one ``generate`` call, which shares
the prefill of nested prefixes and decodes all rows in one batch. Seeds do not depend on the batch, so batching
never changes a result. Waiting requests hold no thread: the event loop awaits the worker's future.

Request fields follow vLLM's ``CompletionRequest``:

- ``prompt``: a string, a list of token ids, or a list of either (one choice block per prompt).
- ``n`` and ``seed``: sample ``k`` of every prompt uses seed ``seed + k`` (vLLM's convention); no seed draws one.
- ``max_tokens`` (required), ``temperature``, ``top_p``, ``top_k`` (0 or -1: off), ``stop``.
- ``return_token_ids``: each choice also carries ``token_ids`` (generated ids, without the end-of-sequence token)
  and ``prompt_token_ids``.
- ``add_special_tokens`` (string prompts; default true, as in vLLM).

Fields that would change the output in ways this server does not implement (``logprobs``, ``echo``, ``stream``,
penalties, ``min_p`` > 0, ``logit_bias``, ...) are refused with a 400 rather than silently ignored.

Admission (:class:`ServeLimits`): the body size is checked from ``Content-Length`` before the body is read (413),
``n``, the number of prompts, prompt length and ``prompts x n x max_tokens`` before any work (400 naming the limit),
and the work queued across all clients is bounded (429 with ``Retry-After``). A connection that has not sent a whole
request within ``read_timeout_s`` is closed.

Fault injection (:class:`FaultSpec`) makes the server answer a seeded random share of requests with an HTTP error,
a hang, a truncated body, or a response with a missing choice, so clients' retry logic can be tested for real.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import random
import secrets
import socket
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import click
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from resampling._backend import GenerationJob
from resampling._errors import EngineInputError, unknown_choice
from resampling._model import DEFAULT_MODEL
from resampling._plan import SamplingParams

__all__ = ["FAULT_KINDS", "CompletionServer", "FaultSpec", "ServeLimits", "serve", "start_server"]

FAULT_KINDS = ("429", "500", "503", "timeout", "garbled", "short", "reset")
"""``429``/``500``/``503`` (or any other 4xx/5xx code): that HTTP error; ``timeout``: hang without answering (for
``hang_s``), so a client with a shorter timeout gives up; ``garbled``: a 200 whose JSON body is cut short;
``short``: a well-formed 200 with one choice missing; ``reset``: close the connection without an answer."""

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
}
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


# -- fault injection ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultSpec:
    """Share of requests answered with each fault, e.g. ``FaultSpec.parse("429:0.2,500:0.1,timeout:0.05")``."""

    rates: tuple[tuple[str, float], ...] = ()
    """(kind, probability) pairs; the probabilities add up to at most 1 (the rest are answered normally)."""

    @classmethod
    def parse(cls, spec: str | FaultSpec | dict[str, float] | None) -> FaultSpec:
        """Read ``KIND:P,KIND:P,...``; kinds are in :data:`FAULT_KINDS` or any HTTP status code 400-599."""
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
            if kind not in FAULT_KINDS and not (kind.isdigit() and 400 <= int(kind) <= 599):
                raise unknown_choice("fault", kind, list(FAULT_KINDS))
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


# -- the worker -----------------------------------------------------------------------------------------------


@dataclass
class _Work:
    jobs: list[GenerationJob]
    future: Future = field(default_factory=Future)

    @property
    def rollouts(self) -> int:
        return sum(len(j.samples) for j in self.jobs)


class _Batcher:
    """One worker thread: runs everything pending as one ``generate`` call (the model is never used concurrently)."""

    def __init__(self, backend: Any, window_s: float, max_rollouts: int) -> None:
        self.backend = backend
        self.window_s = window_s
        self.max_rollouts = max_rollouts
        self.batches = 0
        self._cond = threading.Condition()
        self._pending: list[_Work] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="cotscope-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[GenerationJob]) -> Future:
        work = _Work(jobs)
        with self._cond:
            if self._stopping:
                raise _HTTPError(503, "the server is shutting down", kind="server_error")
            self._pending.append(work)
            self._cond.notify()
        return work.future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    for work in self._pending:
                        work.future.set_exception(
                            _HTTPError(503, "the server is shutting down", kind="server_error")
                        )
                    self._pending.clear()
                    return
            if self.window_s > 0:
                time.sleep(self.window_s)  # let requests sent together arrive, so they are decoded together
            with self._cond:
                batch, total = [], 0
                while self._pending and (not batch or total + self._pending[0].rollouts <= self.max_rollouts):
                    work = self._pending.pop(0)
                    batch.append(work)
                    total += work.rollouts
            self._run(batch)

    def _run(self, batch: list[_Work]) -> None:
        jobs = [job for work in batch for job in work.jobs]
        self.batches += 1
        try:
            out = {job.key: comps for job, comps in self.backend.generate(jobs)}
        except Exception as exc:
            if len(batch) > 1:  # find the request that failed; the others still get their answers
                for work in batch:
                    self._run([work])
                return
            batch[0].future.set_exception(
                _HTTPError(500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error")
            )
            return
        for work in batch:
            work.future.set_result([out[job.key] for job in work.jobs])


# -- the transport: read timeout, and a handle to close a connection without answering ---------------------------


def _protocol_class(read_timeout_s: float) -> type:
    """uvicorn's h11 protocol with a deadline for receiving a whole request, and the transport in the ASGI scope."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _answered: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            app = self.app

            async def with_transport(scope: dict, receive: Any, send: Any) -> None:
                scope["cotscope.transport"] = transport
                await app(scope, receive, send)

            self.app = with_transport
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(read_timeout_s, self._timed_out)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and self.cycle is not self._answered and not self.cycle.more_body:
                self._disarm()  # a whole request is in: the deadline stops while it is served

        def on_response_complete(self) -> None:
            self._answered = self.cycle
            self._arm()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return _Protocol


async def _drop_connection(scope: dict) -> None:
    """Close the connection without an answer (``reset`` and ``timeout`` faults)."""
    transport = scope.get("cotscope.transport")
    if transport is not None:
        transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)  # let uvicorn see the disconnect, so it does not try to answer


# -- the server -----------------------------------------------------------------------------------------------


class CompletionServer:
    """An OpenAI-compatible completions server over an :class:`~resampling._hf.HFBackend`.

    Args:
        backend: the ``hf`` backend that generates (its model is used by one worker thread only).
        model_name: the name clients send as ``model`` and ``/v1/models`` lists (default: the backend's model id).
        host, port: where to listen; port 0 picks a free port (read it back from ``.port`` or ``.url``).
        faults: a :class:`FaultSpec` or its string form, e.g. ``"429:0.2,500:0.1,timeout:0.05,garbled:0.1"``.
        fault_seed: seed of the fault draws (one draw per request, in arrival order).
        hang_s: how long a ``timeout`` fault hangs before closing the connection; set it above the client timeout.
        batch_window_s: how long the worker waits after a request arrives for others to batch with it.
        max_batch_rollouts: most rollouts decoded in one ``generate`` call.
        api_key: when set, requests must send ``Authorization: Bearer <api_key>`` (401 otherwise). Never logged.
        limits: admission limits (:class:`ServeLimits`; the defaults are safe for a shared machine).
        quiet: no request log on stderr.
    """

    def __init__(
        self,
        backend: Any,
        *,
        model_name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        faults: FaultSpec | str | dict[str, float] | None = None,
        fault_seed: int = 0,
        hang_s: float = 60.0,
        batch_window_s: float = 0.002,
        max_batch_rollouts: int = 1024,
        api_key: str | None = None,
        limits: ServeLimits | None = None,
        quiet: bool = True,
    ) -> None:
        self.backend = backend
        default_name = getattr(backend, "model_id", "") or ""
        self.model_name = model_name or (
            default_name if default_name and not default_name.startswith("(") else "local"
        )
        self.tokenizer = backend.tokenizer
        config = getattr(backend.model, "config", None)
        self.max_model_len = getattr(config, "max_position_embeddings", None)
        self.vocab_size = max(int(getattr(config, "vocab_size", 0) or 0), len(self.tokenizer))
        self.limits = limits or ServeLimits()
        self.max_prompt_tokens = self.limits.max_prompt_tokens or self.max_model_len or 32768
        self.hang_s = float(hang_s)
        self.quiet = quiet
        self._api_key = api_key
        self.set_faults(faults, fault_seed)
        self.stats: Counter[str] = Counter()
        """``requests``, ``completions``, ``errors``, ``refused_busy`` and ``fault_<kind>`` for each injected fault."""
        self.recent_requests: deque[dict[str, Any]] = deque(maxlen=10_000)
        """The latest served requests: ``prompts`` (token ids), ``n``, ``seed`` (what reached the model)."""
        self.queued_tokens = 0
        """Tokens (prompts x n x max_tokens) of the requests waiting or decoding now."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
            self._socket.listen(self.limits.backlog)
        except OSError as exc:
            self._socket.close()
            raise EngineInputError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another port (0 picks a free one)"
            ) from None
        self.host = host
        self.port = int(self._socket.getsockname()[1])
        self._batcher = _Batcher(backend, batch_window_s, max_batch_rollouts)
        self._uvicorn = self._make_uvicorn()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"CompletionServer(url={self.url!r}, model={self.model_name!r}, faults={str(self.faults)!r})"

    @property
    def url(self) -> str:
        """The base URL clients use: ``http://HOST:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def set_faults(self, faults: FaultSpec | str | dict[str, float] | None, seed: int = 0) -> None:
        """Change the injected faults (``None`` turns them off) while the server runs."""
        self.faults = FaultSpec.parse(faults)
        self._fault_rng = random.Random(seed)

    # -- lifecycle

    def _make_uvicorn(self) -> Any:
        import uvicorn

        config = uvicorn.Config(
            _make_app(self),
            http=_protocol_class(self.limits.read_timeout_s),
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="error" if self.quiet else "info",
            access_log=not self.quiet,
            timeout_keep_alive=math.ceil(self.limits.read_timeout_s),
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        return uvicorn.Server(config)

    def start(self) -> CompletionServer:
        """Serve in a background thread; returns once it accepts requests. Stop with :meth:`stop` (or ``with``)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._uvicorn.run,
                kwargs={"sockets": [self._socket]},
                name="cotscope-serve",
                daemon=True,
            )
            self._thread.start()
            deadline = time.monotonic() + 30
            while not self._uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            if not self._uvicorn.started:
                raise RuntimeError("cotscope serve did not start within 30 s")
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C stops it gracefully)."""
        try:
            self._uvicorn.run(sockets=[self._socket])
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving: hanging fault handlers are released, pending requests get 503, the port is freed."""
        self._stopping.set()
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._socket.close()
        self._batcher.stop()

    def __enter__(self) -> CompletionServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- request handling

    def _count(self, key: str, k: int = 1) -> None:
        with self._lock:
            self.stats[key] += k

    def _draw_fault(self) -> str | None:
        if not self.faults:
            return None
        with self._lock:
            kind = self.faults.draw(self._fault_rng)
            if kind is not None:
                self.stats[f"fault_{kind}"] += 1
        return kind

    def models(self) -> dict[str, Any]:
        root = str(getattr(self.backend, "model_id", "") or self.model_name)
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "cotscope",
                    "root": root if not root.startswith("(") else self.model_name,
                    "max_model_len": self.max_model_len,
                }
            ],
        }

    def authorized(self, header: str | None) -> bool:
        if self._api_key is None:
            return True
        return secrets.compare_digest((header or "").encode(), f"Bearer {self._api_key}".encode())

    def parse(self, body: Any) -> _Request:
        """Validate a ``/v1/completions`` body; bad input raises a 400 that names the field and the fix."""
        if not isinstance(body, dict):
            raise _HTTPError(400, "the request body must be a JSON object")
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

    def _admit(self, req: _Request) -> None:
        """Reserve the request's tokens in the queue bound, or refuse it with 429 and ``Retry-After``."""
        with self._lock:
            if self.queued_tokens + req.tokens > self.limits.max_queued_tokens:
                self.stats["refused_busy"] += 1
                raise _HTTPError(
                    429,
                    f"the server is busy: {self.queued_tokens} tokens are queued, the limit is "
                    f"{self.limits.max_queued_tokens} (--max-queued-tokens); retry after "
                    f"{self.limits.retry_after_s} s",
                    kind="rate_limit_error",
                    headers={"Retry-After": str(self.limits.retry_after_s)},
                )
            self.queued_tokens += req.tokens

    async def complete(self, req: _Request) -> dict[str, Any]:
        self._admit(req)
        try:
            rid = uuid.uuid4().hex
            samples = tuple(range(req.n))
            seeds = tuple(req.seed + k for k in samples)
            jobs = [
                GenerationJob(f"{rid}:{i}", ids, samples, seeds, req.params)
                for i, ids in enumerate(req.prompts)
            ]
            with self._lock:
                self.recent_requests.append(
                    {"prompts": [list(p) for p in req.prompts], "n": req.n, "seed": req.seed}
                )
            results = await asyncio.wrap_future(self._batcher.submit(jobs))
        finally:
            with self._lock:
                self.queued_tokens -= req.tokens
        choices = []
        for i, (ids, comps) in enumerate(zip(req.prompts, results, strict=True)):
            for c in comps:
                choice: dict[str, Any] = {
                    "index": i * req.n + c.sample,
                    "text": c.text,
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                    "stop_reason": None,
                }
                if req.return_token_ids:
                    choice["token_ids"] = list(c.token_ids)
                    choice["prompt_token_ids"] = list(ids)
                choices.append(choice)
        prompt_tokens = sum(len(p) for p in req.prompts)
        completion_tokens = sum(len(c.token_ids) for comps in results for c in comps)
        self._count("completions", len(choices))
        return {
            "id": f"cmpl-{rid}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def read_body(self, request: Any) -> bytes:
        """The body, its size checked from ``Content-Length`` before reading and while reading a chunked one."""
        limit = self.limits.max_body_bytes
        too_big = _HTTPError(
            413,
            f"the request body is over this server's limit of {limit} bytes (--max-body-bytes)",
            kind="invalid_request_error",
            headers={"Connection": "close"},
        )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise _HTTPError(400, f"Content-Length {declared[:40]!r} is not a byte count")
            if int(declared) > limit:
                raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)


# -- the HTTP routes --------------------------------------------------------------------------------------------


def _make_app(server: CompletionServer) -> Any:
    app = FastAPI(title="cotscope serve", docs_url=None, redoc_url=None, openapi_url=None)
    unauthorized = {"error": {"message": "invalid or missing API key", "type": "authentication_error"}}

    def error(exc: _HTTPError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def no_route(request: Request, exc: HTTPException) -> JSONResponse:
        path = request.url.path
        return error(
            _HTTPError(exc.status_code, f"no route {path}; use POST /v1/completions", kind="NotFoundError")
        )

    @app.get("/health")
    @app.get("/ping")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    @app.get("/models")
    async def models(request: Request) -> Any:
        if not server.authorized(request.headers.get("authorization")):
            return JSONResponse(unauthorized, status_code=401)
        return server.models()

    @app.post("/v1/completions")
    @app.post("/completions")
    async def completions(request: Request) -> Any:
        server._count("requests")
        try:
            # Cheap checks first: the size (from the header) and the key, before a byte of the body is read.
            declared = request.headers.get("content-length")
            if declared is not None and (
                not declared.isdigit() or int(declared) > server.limits.max_body_bytes
            ):
                await server.read_body(request)  # raises the 400/413
            if not server.authorized(request.headers.get("authorization")):
                server._count("errors")
                return JSONResponse(unauthorized, status_code=401, headers={"Connection": "close"})
            raw = await server.read_body(request)
        except _HTTPError as exc:
            server._count("errors")
            return error(exc)
        fault = server._draw_fault()
        if fault == "timeout":
            deadline = time.monotonic() + server.hang_s
            while time.monotonic() < deadline and not server._stopping.is_set():
                await asyncio.sleep(0.02)
            await _drop_connection(request.scope)
            return Response(status_code=500)  # never sent: the connection is closed
        if fault == "reset":
            await _drop_connection(request.scope)
            return Response(status_code=500)
        if fault is not None and fault.isdigit():
            message = {"429": "rate limit exceeded (injected fault)"}.get(fault, f"injected fault {fault}")
            return error(_HTTPError(int(fault), message, kind="server_error"))
        try:
            response = await server.complete(server.parse(_loads(raw)))
        except _HTTPError as exc:
            server._count("errors")
            return error(exc)
        if fault == "garbled":
            data = json.dumps(response).encode()
            return Response(data[: max(1, len(data) // 2)], media_type="application/json")
        if fault == "short":
            response["choices"] = response["choices"][:-1]
        return JSONResponse(response)

    return app


def start_server(
    model: str | Any = DEFAULT_MODEL,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    device: str | None = None,
    batch_size: int = 512,
    **kwargs: Any,
) -> CompletionServer:
    """Start a server in a background thread (port 0: a free one) and return it; call ``.stop()`` when done.

    ``model`` is a model id (``organism:arith``, a folder of HF weights) or an ``HFBackend``. Other keyword
    arguments go to :class:`CompletionServer` (``faults``, ``fault_seed``, ``hang_s``, ``model_name``, ``limits``).

        >>> server = start_server("organism:arith")          # doctest: +SKIP
        >>> backend = make_backend("openai", model_id="organism:arith", base_url=server.url)
        >>> server.stop()
    """
    if isinstance(model, str):
        from resampling._hf import HFBackend

        model = HFBackend.from_model_id(model, device=device, batch_size=batch_size)
    return CompletionServer(model, host=host, port=port, **kwargs).start()


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_LIMIT_DEFAULTS = ServeLimits()


@click.command("serve")
@click.option(
    "--model",
    "model_id",
    default=DEFAULT_MODEL,
    show_default=True,
    help="organism:NAME, a local folder of HF weights, or a hub id.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Listen address; anything but loopback needs a key.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port."
)
@click.option(
    "--served-model-name", default=None, help="Name clients send as 'model' (default: the model id)."
)
@click.option("--device", default=None, help="cpu or cuda (default: cuda where available).")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Rollouts decoded together; does not change the results.",
)
@click.option(
    "--inject-faults",
    "faults",
    default=None,
    metavar="SPEC",
    help="Answer a share of requests with faults, e.g. '429:0.2,500:0.1,timeout:0.05,garbled:0.1' "
    "(kinds: 429, 500, 503 or any 4xx/5xx code, timeout, garbled, short, reset).",
)
@click.option("--fault-seed", type=int, default=0, show_default=True, help="Seed of the fault draws.")
@click.option(
    "--hang-seconds",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="How long a 'timeout' fault hangs; set it above the client timeout.",
)
@click.option(
    "--api-key-env",
    default="COTSCOPE_SERVE_API_KEY",
    show_default=True,
    help="Environment variable holding the API key clients must send (no key required when unset).",
)
@click.option(
    "--api-key",
    default=None,
    help="The API key clients must send as a bearer token. Prefer the environment variable: a key on the "
    "command line shows in the process list.",
)
@click.option("--max-n", type=click.IntRange(min=1), default=_LIMIT_DEFAULTS.max_n, show_default=True)
@click.option(
    "--max-prompts", type=click.IntRange(min=1), default=_LIMIT_DEFAULTS.max_prompts, show_default=True
)
@click.option(
    "--max-prompt-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Default: the model's context length.",
)
@click.option(
    "--max-request-tokens",
    type=click.IntRange(min=1),
    default=_LIMIT_DEFAULTS.max_request_tokens,
    show_default=True,
    help="Most tokens one request may ask for: prompts x n x max_tokens.",
)
@click.option(
    "--max-queued-tokens",
    type=click.IntRange(min=1),
    default=_LIMIT_DEFAULTS.max_queued_tokens,
    show_default=True,
    help="Most tokens queued over all clients; past it requests get 429 with Retry-After.",
)
@click.option(
    "--max-body-bytes", type=click.IntRange(min=1), default=_LIMIT_DEFAULTS.max_body_bytes, show_default=True
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=_LIMIT_DEFAULTS.read_timeout_s,
    show_default=True,
    help="Seconds a connection may take to send a whole request.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for torch (default: torch's choice); 1 is often fastest on a CPU shared with other work.",
)
@click.option("--quiet", "-q", is_flag=True, help="No request log.")
def serve(
    model_id,
    host,
    port,
    served_model_name,
    device,
    batch_size,
    faults,
    fault_seed,
    hang_seconds,
    api_key_env,
    api_key,
    max_n,
    max_prompts,
    max_prompt_tokens,
    max_request_tokens,
    max_queued_tokens,
    max_body_bytes,
    read_timeout,
    threads,
    quiet,
) -> None:
    """Serve a model over an OpenAI-compatible /v1/completions API (the hf backend behind it)."""
    import os

    try:
        spec = FaultSpec.parse(faults)
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--inject-faults") from None
    try:
        limits = ServeLimits(
            max_body_bytes=max_body_bytes,
            max_n=max_n,
            max_prompts=max_prompts,
            max_prompt_tokens=max_prompt_tokens,
            max_request_tokens=max_request_tokens,
            max_queued_tokens=max_queued_tokens,
            read_timeout_s=read_timeout,
        )
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-queued-tokens") from None
    key = api_key or os.environ.get(api_key_env) or None
    if not key and not is_loopback(host):
        click.echo(
            f"cotscope: warning: listening on {host} without an API key: anyone who reaches this address can use the "
            f"model; set ${api_key_env} (or --host 127.0.0.1)",
            err=True,
        )
    if not quiet:  # the request log of uvicorn, on stderr
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    from resampling._hf import HFBackend

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        backend = HFBackend.from_model_id(model_id, device=device, batch_size=batch_size)
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    try:
        server = CompletionServer(
            backend,
            model_name=served_model_name,
            host=host,
            port=port,
            faults=spec,
            fault_seed=fault_seed,
            hang_s=hang_seconds,
            api_key=key,
            limits=limits,
            quiet=quiet,
        )
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--port") from None
    note = f"; injecting faults {spec} (seed {fault_seed})" if spec else ""
    auth = "; API key required" if key else ""
    click.echo(
        f"serving {server.model_name} at {server.url} (POST /v1/completions, GET /v1/models){auth}{note}",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)

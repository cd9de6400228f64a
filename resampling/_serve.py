"""``cotscope serve``: an OpenAI-compatible ``/v1/completions`` server over the ``hf`` backend.

For CPU users without vLLM, and as the real server the ``openai`` backend's tests talk to over loopback.
Requests are served through :meth:`resampling._hf.HFBackend.generate`, so a completion with seed ``s`` is, token
for token, what the ``hf`` backend gives for seed ``s``. Requests that arrive together are decoded together: a
worker thread takes everything pending (after a short window) and runs it as one ``generate`` call, which shares
the prefill of nested prefixes and decodes all rows in one batch. Seeds do not depend on the batch, so batching
never changes a result.

Request fields follow vLLM's ``CompletionRequest``:

- ``prompt``: a string, a list of token ids, or a list of either (one choice block per prompt).
- ``n`` and ``seed``: sample ``k`` of every prompt uses seed ``seed + k`` (vLLM's convention); no seed draws one.
- ``max_tokens`` (required), ``temperature``, ``top_p``, ``top_k`` (0 or -1: off), ``stop``.
- ``return_token_ids``: each choice also carries ``token_ids`` (generated ids, without the end-of-sequence token)
  and ``prompt_token_ids``.
- ``add_special_tokens`` (string prompts; default true, as in vLLM).

Fields that would change the output in ways this server does not implement (``logprobs``, ``echo``, ``stream``,
penalties, ``min_p`` > 0, ``logit_bias``, ...) are refused with a 400 rather than silently ignored.

Fault injection (:class:`FaultSpec`) makes the server answer a seeded random share of requests with an HTTP error,
a hang, a truncated body, or a response with a missing choice, so clients' retry logic can be tested for real.
"""

from __future__ import annotations

import functools
import json
import random
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click

from resampling._backend import Completion, GenerationJob
from resampling._errors import EngineInputError, unknown_choice
from resampling._model import DEFAULT_MODEL
from resampling._plan import SamplingParams

__all__ = ["FAULT_KINDS", "CompletionServer", "FaultSpec", "serve", "start_server"]

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
        self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}
        }


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(body: dict, name: str, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _HTTPError(400, f"'{name}' must be a number, got {value!r}", name)
    return float(value)


@dataclass
class _Request:
    prompts: list[tuple[int, ...]]
    n: int
    seed: int
    params: SamplingParams
    return_token_ids: bool
    model: str
    log: dict = field(default_factory=dict)


# -- the server -----------------------------------------------------------------------------------------------


@dataclass
class _Work:
    jobs: list[GenerationJob]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[list[Completion]] | None = None
    error: BaseException | None = None

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

    def submit(self, jobs: list[GenerationJob]) -> list[list[Completion]]:
        work = _Work(jobs)
        with self._cond:
            if self._stopping:
                raise _HTTPError(503, "the server is shutting down", kind="server_error")
            self._pending.append(work)
            self._cond.notify()
        work.done.wait()
        if work.error is not None:
            raise work.error
        assert work.results is not None
        return work.results

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
                        work.error = _HTTPError(503, "the server is shutting down", kind="server_error")
                        work.done.set()
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
            batch[0].error = _HTTPError(
                500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error"
            )
            batch[0].done.set()
            return
        for work in batch:
            work.results = [out[job.key] for job in work.jobs]
            work.done.set()


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
        api_key: when set, requests must send ``Authorization: Bearer <api_key>`` (401 otherwise).
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
        self.hang_s = float(hang_s)
        self.quiet = quiet
        self._api_key = api_key
        self.set_faults(faults, fault_seed)
        self.stats: Counter[str] = Counter()
        """``requests``, ``completions``, ``errors``, and ``fault_<kind>`` for each injected fault."""
        self.recent_requests: deque[dict[str, Any]] = deque(maxlen=10_000)
        """The latest served requests: ``prompts`` (token ids), ``n``, ``seed`` (what reached the model)."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        try:
            self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        except OSError as exc:
            raise EngineInputError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another port (0 picks a free one)"
            ) from None
        self._batcher = _Batcher(backend, batch_window_s, max_batch_rollouts)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
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

    def start(self) -> CompletionServer:
        """Serve in a background thread; returns at once. Stop with :meth:`stop` (or use ``with``)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="cotscope-serve", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        try:
            self._httpd.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving: hanging fault handlers are released, pending requests get 503, the port is freed."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=30)
            self._thread = None
        self._httpd.server_close()
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
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "cotscope",
                    "root": self.model_name,
                    "max_model_len": self.max_model_len,
                }
            ],
        }

    def authorized(self, header: str | None) -> bool:
        if self._api_key is None:
            return True
        return secrets.compare_digest(header or "", f"Bearer {self._api_key}")

    def parse(self, body: Any) -> _Request:
        """Validate a ``/v1/completions`` body; bad input raises a 400 that names the field and the fix."""
        if not isinstance(body, dict):
            raise _HTTPError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise _HTTPError(
                404,
                f"The model `{model}` does not exist; this server serves `{self.model_name}` (GET /v1/models)",
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
        try:
            params = SamplingParams(
                temperature=_number(body, "temperature", 1.0),
                top_p=_number(body, "top_p", 1.0),
                top_k=max(top_k, 0),
                max_new_tokens=max_tokens,
                stop=tuple(stop),
            )
        except EngineInputError as exc:
            raise _HTTPError(400, str(exc)) from None
        add_special = body.get("add_special_tokens", True)
        prompts = [self._prompt_ids(p, bool(add_special)) for p in self._prompt_list(body.get("prompt"))]
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

    def _prompt_ids(self, prompt: str | list[int], add_special_tokens: bool) -> tuple[int, ...]:
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
        else:
            ids = prompt
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise _HTTPError(
                    400, f"token id {bad[0]} is out of range: the vocabulary has {self.vocab_size}", "prompt"
                )
        if not ids:
            raise _HTTPError(400, "the prompt is empty: give at least one token", "prompt")
        return tuple(int(t) for t in ids)

    def complete(self, req: _Request) -> dict[str, Any]:
        rid = uuid.uuid4().hex
        samples = tuple(range(req.n))
        seeds = tuple(req.seed + k for k in samples)
        jobs = [
            GenerationJob(f"{rid}:{i}", ids, samples, seeds, req.params) for i, ids in enumerate(req.prompts)
        ]
        with self._lock:
            self.recent_requests.append(
                {"prompts": [list(p) for p in req.prompts], "n": req.n, "seed": req.seed}
            )
        results = self._batcher.submit(jobs)
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


def _make_handler(server: CompletionServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "cotscope-serve"

        def log_message(self, format: str, *args: Any) -> None:
            if not server.quiet:
                super().log_message(format, *args)

        def _send(
            self, status: int, payload: Any = None, raw: bytes | None = None, headers: dict | None = None
        ):
            data = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            try:
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout); nothing to do
                self.close_connection = True

        def _path(self) -> str:
            return self.path.split("?", 1)[0].rstrip("/")

        def do_GET(self) -> None:
            path = self._path()
            if path in ("/health", "/ping"):
                self._send(200, {"status": "ok"})
            elif path in ("/v1/models", "/models"):
                if not server.authorized(self.headers.get("Authorization")):
                    self._send(
                        401,
                        {"error": {"message": "invalid or missing API key", "type": "authentication_error"}},
                    )
                    return
                self._send(200, server.models())
            else:
                self._send(
                    404,
                    _HTTPError(
                        404, f"no route {path}; use POST /v1/completions", kind="NotFoundError"
                    ).body(),
                )

        def do_POST(self) -> None:
            path = self._path()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            if path not in ("/v1/completions", "/completions"):
                self._send(
                    404,
                    _HTTPError(
                        404, f"no route {path}; use POST /v1/completions", kind="NotFoundError"
                    ).body(),
                )
                return
            server._count("requests")
            if not server.authorized(self.headers.get("Authorization")):
                server._count("errors")
                self._send(
                    401, {"error": {"message": "invalid or missing API key", "type": "authentication_error"}}
                )
                return
            fault = server._draw_fault()
            if fault == "timeout":
                server._stopping.wait(server.hang_s)
                self.close_connection = True
                return
            if fault == "reset":
                self.close_connection = True
                return
            if fault is not None and fault.isdigit():
                message = {"429": "rate limit exceeded (injected fault)"}.get(
                    fault, f"injected fault {fault}"
                )
                self._send(int(fault), _HTTPError(int(fault), message, kind="server_error").body())
                return
            try:
                body = json.loads(raw or b"null")
            except json.JSONDecodeError as exc:
                server._count("errors")
                self._send(400, _HTTPError(400, f"the request body is not valid JSON: {exc}").body())
                return
            try:
                response = server.complete(server.parse(body))
            except _HTTPError as exc:
                server._count("errors")
                self._send(exc.status, exc.body())
                return
            if fault == "garbled":
                data = json.dumps(response).encode()
                self._send(200, raw=data[: max(1, len(data) // 2)])
            elif fault == "short":
                response["choices"] = response["choices"][:-1]
                self._send(200, response)
            else:
                self._send(200, response)

    return Handler


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
    arguments go to :class:`CompletionServer` (``faults``, ``fault_seed``, ``hang_s``, ``model_name``, ...).

        >>> server = start_server("organism:arith")          # doctest: +SKIP
        >>> backend = make_backend("openai", model_id="organism:arith", base_url=server.url)
        >>> server.stop()
    """
    if isinstance(model, str):
        from resampling._hf import HFBackend

        model = HFBackend.from_model_id(model, device=device, batch_size=batch_size)
    return CompletionServer(model, host=host, port=port, **kwargs).start()


@click.command("serve")
@click.option(
    "--model",
    "model_id",
    default=DEFAULT_MODEL,
    show_default=True,
    help="organism:NAME, a local folder of HF weights, or a hub id.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
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
    threads,
    quiet,
) -> None:
    """Serve a model over an OpenAI-compatible /v1/completions API (the hf backend behind it)."""
    import os

    try:
        spec = FaultSpec.parse(faults)
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--inject-faults") from None
    from resampling._hf import HFBackend

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        backend = HFBackend.from_model_id(model_id, device=device, batch_size=batch_size)
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    make = functools.partial(
        CompletionServer,
        backend,
        model_name=served_model_name,
        host=host,
        port=port,
        faults=spec,
        fault_seed=fault_seed,
        hang_s=hang_seconds,
        api_key=os.environ.get(api_key_env) or None,
        quiet=quiet,
    )
    try:
        server = make()
    except EngineInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--port") from None
    note = f"; injecting faults {spec} (seed {fault_seed})" if spec else ""
    click.echo(
        f"serving {server.model_name} at {server.url} (POST /v1/completions, GET /v1/models){note}", err=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)

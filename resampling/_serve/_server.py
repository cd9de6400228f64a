"""The :class:`CompletionServer` of ``cotscope serve``: its lifecycle (uvicorn in a thread), the request pipeline
(validate, admit, batch, answer) and :func:`start_server`."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
import secrets
import socket
import threading
import time
import uuid
from collections import Counter, deque
from typing import Any

from resampling._backend import GenerationJob
from resampling._errors import EngineInputError
from resampling._model import DEFAULT_MODEL
from resampling._serve._app import _make_app, _protocol_class
from resampling._serve._faults import FaultSpec
from resampling._serve._requests import RequestValidator, ServeLimits, _ClientGone, _HTTPError, _Request
from resampling._serve._scheduler import _Batcher

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
        max_batch_rollouts: most rollouts decoded in one ``generate`` call (one round of the worker).
        slice_tokens: most tokens (rows x ``max_tokens``) of one request decoded in one round: a small request waits
            for one slice of a heavy one, not the whole of it (see :mod:`resampling._serve._scheduler`).
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
        slice_tokens: int = 2**14,
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
        self._validator = RequestValidator(
            model_name=self.model_name,
            tokenizer=self.tokenizer,
            vocab_size=self.vocab_size,
            max_model_len=self.max_model_len,
            max_prompt_tokens=self.max_prompt_tokens,
            limits=self.limits,
        )
        self.hang_s = float(hang_s)
        self.quiet = quiet
        self._api_key = api_key
        self.set_faults(faults, fault_seed)
        self.stats: Counter[str] = Counter()
        """``requests``, ``completions``, ``errors``, ``refused_busy``, ``disconnected`` (gone while sending the body),
        ``cancelled`` (gone while the request was decoded) and ``fault_<kind>`` for each
        injected fault."""
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
        if int(slice_tokens) < 1:
            raise EngineInputError(f"slice_tokens must be >= 1, got {slice_tokens}")
        self._batcher = _Batcher(backend, batch_window_s, max_batch_rollouts, slice_tokens)
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
        return self._validator.parse(body)

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

    async def complete(self, req: _Request, gone: asyncio.Future | None = None) -> dict[str, Any]:
        """Decode the request and build its answer; ``gone`` (done when the client disconnects) cancels it: the
        work not yet started is dropped, its queued tokens are released, and :class:`_ClientGone` is raised."""
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
            work = self._batcher.submit(jobs)
            answer = asyncio.wrap_future(work.future)
            try:
                if gone is not None:
                    await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
                    if not answer.done():
                        self._batcher.cancel(work)
                        self._count("cancelled")
                        raise _ClientGone(work.rollouts - work.left)
                results = await answer
            except asyncio.CancelledError:
                self._batcher.cancel(work)
                raise
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

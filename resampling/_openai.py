"""The ``openai`` backend: ``/v1/completions`` of vLLM serve, SGLang, ``cotscope serve`` or a hosted provider.

- **Exact prompts.** Token-id prompts where the server takes them (vLLM, SGLang, ``cotscope serve``); otherwise the
  prefix is decoded to text (``token_prompts=False``), which a server may re-tokenize differently.
- **Seeds.** A job's samples whose seeds are consecutive go out as one request with ``n`` and ``seed`` (sample k
  gets ``seed + k``, the vLLM convention); any other sample (a resumed run asks only for missing ones) gets a
  request of its own with its own seed.
- **Transport.** aiohttp on one event loop (uvloop's where it is installed, else asyncio's; in a background thread,
  so :meth:`OpenAIBackend.generate` stays a plain iterator): one pool of kept-alive connections, at most
  ``max_in_flight`` requests at once over all endpoints and ``max_in_flight_per_endpoint`` per endpoint, and at
  most ``max_in_flight`` idle connections kept besides the ones in use (so file descriptors stay bounded by the requests in flight). Requests go out in plan order, so the
  requests of one trace are in flight together.
- **Retries** (tenacity). Rate limits (429, ``Retry-After`` honoured up to ``backoff_max_s``) and transient
  failures (5xx, timeouts, connection errors, malformed responses: bad JSON, missing fields, the wrong number of
  choices) are retried with exponential backoff and jitter, up to ``max_retries`` times; then the completions come
  back with ``error`` set (stored with status ``error``, retried on resume). Fatal answers (400, 401, 403, 404, 413,
  422: a wrong model name, a bad key) are not retried. One bad request never raises mid-run.
- **Several endpoints.** Each job goes to the endpoint chosen by rendezvous hashing of ``job.route`` (the trace id),
  so every prefix of a trace hits the same server's prefix cache; adding an endpoint moves only the traces it wins.
  After a connection error the endpoint is skipped for a few seconds and the attempt goes to the trace's next
  endpoint in that order (a killed server's jobs move to the others; it gets them back once it answers again).
- **Identity.** Besides the model's own hashes, what the servers report about the weights behind the served name
  (``/v1/models``: ``root``, the path vLLM loaded, and ``max_model_len``), and a weights hash the user may pin.
- **Secrets.** The API key is read from the environment when a run starts (and at each ``/v1/models`` query), held
  only by that run's requests and never stored on the object, written into errors, the repr, the identity or any
  file. A URL with ``user:password@`` is refused.
- **Garbage collector** (``gc_tuning``, on by default). With a thousand requests in flight, CPython's cyclic
  collector keeps scanning their live objects (and, in each full collection, every object the process holds:
  tokenizers, torch, polars), about a third of the client's CPU. While a :meth:`OpenAIBackend.generate` call runs,
  the heap that existed before it is frozen (``gc.freeze()``, as vLLM and SGLang do after start-up) unless something
  else froze objects already, and the first generation's threshold is raised to ``_GC_THRESHOLD0``; both are put
  back when the last overlapping call ends (finished, failed or closed early). It changes no result, so it is not
  in the identity; ``gc_tuning=False`` leaves the collector alone (``cotscope bench client`` measures both).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import gc
import hashlib
import http.client
import json
import os
import queue
import random
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from yarl import URL

from resampling._backend import Completion, GenerationJob, eos_token_ids
from resampling._errors import EngineInputError
from resampling._model import DEFAULT_MODEL

__all__ = ["DEFAULT_API_KEY_ENVS", "OpenAIBackend"]

DEFAULT_API_KEY_ENVS = ("COTSCOPE_OPENAI_API_KEY", "OPENAI_API_KEY")
"""Environment variables read for the API key, first set wins."""

_NOT_RETRIED = {400, 401, 403, 404, 405, 413, 422}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_DOWN_S = 2.0
"""How long an endpoint that refused a connection is skipped (then it is tried again)."""
_END = object()
_KEEPALIVE_S = 4.0
"""Idle connections are closed after this long: below uvicorn's default of 5 s (vLLM's too), so the client does
not reuse a connection that the server is closing."""
_GC_THRESHOLD0 = 50_000
"""The collector's first-generation threshold while requests are in flight (CPython's default is 700): objects
that live as long as one request are then freed by reference counting before a collection sees them, instead of
being moved to older generations that are scanned again and again."""
_gc_lock = threading.Lock()
_gc_state: dict[str, Any] = {"runs": 0}
"""Overlapping runs with ``gc_tuning`` in this process, and what the first of them found (restored by the last)."""


@contextlib.contextmanager
def _gc_tuned(enabled: bool) -> Iterator[None]:
    """Freeze the heap that exists now and raise the first generation's threshold until the block ends; nested or
    overlapping blocks (other threads, interleaved generators) share one setting, put back exactly by the last.
    The heap is frozen only when nothing is frozen yet (``gc.unfreeze()`` cannot tell whose objects it thaws)."""
    if not enabled:
        yield
        return
    with _gc_lock:
        if _gc_state["runs"] == 0:
            threshold = gc.get_threshold()
            froze = gc.get_freeze_count() == 0
            if froze:
                gc.freeze()
            gc.set_threshold(max(threshold[0], _GC_THRESHOLD0), *threshold[1:])
            _gc_state.update(threshold=threshold, froze=froze)
        _gc_state["runs"] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state["runs"] -= 1
            if _gc_state["runs"] == 0:
                gc.set_threshold(*_gc_state["threshold"])
                if _gc_state["froze"]:
                    gc.unfreeze()  # the thawed objects go to the oldest generation, where most of them were


class _Failure(Exception):
    """One failed attempt: ``reason`` is the HTTP status, ``timeout``, ``connection`` or ``malformed``."""

    def __init__(
        self, reason: str, detail: str, *, retry: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.retry, self.retry_after = reason, detail, retry, retry_after
        self.url, self.hop = "", 0  # where the attempt went, and the hop of the next one (set by _attempt)


_RETRY = retry_if_exception(lambda e: isinstance(e, _Failure) and e.retry)


@dataclass(frozen=True)
class _Request:
    job_index: int
    samples: tuple[int, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class _Net:
    """What the requests of one :meth:`OpenAIBackend.generate` call share: the session, a concurrency limit per
    endpoint (none where it cannot bind: ``max_in_flight`` holds it anyway), each endpoint's ``/completions`` URL and
    proxy, the endpoint order of each route seen, and the ``Authorization`` header (None without a key)."""

    session: aiohttp.ClientSession
    slots: dict[str, asyncio.Semaphore]
    urls: dict[str, Any]
    proxies: dict[str, str | None]
    orders: dict[str, list[str]]
    auth: dict[str, str] | None


class _Connector(aiohttp.TCPConnector):
    """aiohttp's pool, which keeps at most ``limit`` idle connections besides those in use (aiohttp's ``limit``
    counts only connections in use): open connections, and so file descriptors, stay under twice the requests in
    flight however many endpoints share the pool."""

    def _release(self, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        idle = sum(map(len, getattr(self, "_conns", {}).values()))
        super()._release(key, protocol, should_close=should_close or idle >= self.limit)


def _collect(
    jobs: list[GenerationJob],
    greedy: set[int],
    done: dict[int, list[Completion]],
    left: Counter,
    req: _Request,
    completions: list[Completion],
) -> tuple[GenerationJob, list[Completion]] | None:
    """Add one request's completions to its job; the job and its completions in sample order once every request
    of the job is in (a greedy job's one completion copied to each of its samples), else None."""
    done.setdefault(req.job_index, []).extend(completions)
    left[req.job_index] -= 1
    if left[req.job_index]:
        return None
    job = jobs[req.job_index]
    out = sorted(done.pop(req.job_index), key=lambda c: c.sample)
    if req.job_index in greedy:
        out = [
            replace(out[0], sample=sample, seed=seed)
            for sample, seed in zip(job.samples, job.seeds, strict=True)
        ]
    return job, out


def _bos_the_tokenizer_adds(tokenizer: Any) -> int | None:
    """The BOS id that ``tokenizer`` puts before plain text by itself, or None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if tokenizer is None or bos is None:
        return None
    try:
        ids = tokenizer("a")["input_ids"]
    except Exception:  # a tokenizer-like object without __call__: assume no BOS
        return None
    return int(bos) if list(ids[:1]) == [bos] else None


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (the one uvicorn and vLLM run on; its transports and callbacks are C: about 15 % less
    client CPU per request, measured on ``cotscope bench client``'s work) where it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # not installed (it has no Windows build): the standard loop does the same, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _normalize_url(url: str) -> str:
    url = str(url).strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EngineInputError(
            f"endpoint '{_redact(url)}' is not an http(s) URL; give e.g. http://127.0.0.1:8000/v1"
        )
    if "@" in parts.netloc:
        raise EngineInputError(
            f"endpoint '{_redact(url)}' carries user:password; drop it from the URL and put the key in "
            "$COTSCOPE_OPENAI_API_KEY (sent as a bearer token)"
        )
    if parts.path in ("", "/"):
        url += "/v1"  # vLLM, SGLang and cotscope serve answer under /v1
    return url


def _redact(url: str) -> str:
    """The URL without user:password (which may hold a credential)."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
    return urllib.parse.urlunsplit(parts)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every client (loading the CA bundle takes tens of ms each time): certifi's
    bundle where it is installed, else the system's."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _contiguous_runs(samples: Sequence[int], seeds: Sequence[int], max_n: int) -> list[tuple[tuple, tuple]]:
    """Split (samples, seeds) into runs with consecutive seeds (one ``n``/``seed`` request each), at most max_n long."""
    runs: list[tuple[list[int], list[int]]] = []
    for s, seed in zip(samples, seeds, strict=True):
        if runs and seed == runs[-1][1][-1] + 1 and len(runs[-1][0]) < max_n:
            runs[-1][0].append(s)
            runs[-1][1].append(seed)
        else:
            runs.append(([s], [seed]))
    return [(tuple(a), tuple(b)) for a, b in runs]


class OpenAIBackend:
    """Sampling through OpenAI-compatible ``/v1/completions`` servers; see the module docstring.

    Args:
        model: the model name sent as ``model`` (what the server serves, e.g. ``organism:arith`` for
            ``cotscope serve``, the HF id for vLLM).
        endpoints: one base URL or several (``http://host:8000/v1``); a URL without a path gets ``/v1``.
        tokenizer: the model's tokenizer: needed for text prompts and to count tokens of servers that do not
            return token ids; also sets the end-of-sequence ids stripped from returned token ids.
        token_prompts: send prompts as token ids (exact); False sends decoded text.
        vllm_extras: send vLLM's extra fields (``return_token_ids``, ``top_k``, ``min_p``, ``repetition_penalty``,
            ``add_special_tokens``) so the server's generation config cannot change the sampling; False for hosted
            APIs that reject unknown fields.
        use_n: ask for several samples per request with ``n``; False sends one request per sample.
        use_seeds: send seeds (False for providers that reject them; results are then not reproducible).
        max_n: most samples per request.
        max_in_flight: most requests in flight at once (over all endpoints).
        max_in_flight_per_endpoint: most requests in flight to one endpoint (default: ``max_in_flight``); also the
            size of that endpoint's connection pool.
        max_retries: retries per request after the first attempt; then the completions carry ``error``.
        timeout_s: seconds to wait on a connection or a response before the attempt counts as a timeout.
        backoff_s, backoff_max_s: the first retry waits about ``backoff_s``, doubling up to ``backoff_max_s``
            (each wait is scaled by a random factor in [0.5, 1] so clients do not retry in lockstep).
        api_key_env: environment variable(s) holding the API key (default ``COTSCOPE_OPENAI_API_KEY``, then
            ``OPENAI_API_KEY``); read when each :meth:`generate` call starts, never stored on the object.
        model_facts: what identifies the model beyond its name (weights, tokenizer and chat template hashes);
            :meth:`from_model_id` fills it in.
        stop_token_ids: end-of-sequence ids stripped from the end of returned token ids (default: the tokenizer's).
        weights_sha256: a hash of the served weights that the user pins (any string that names them); it enters
            the identity, so rows made with other weights under the same served name are never reused.
        server_facts: read ``/v1/models`` for the identity (``root``, ``max_model_len``); False skips it.
        gc_tuning: while :meth:`generate` runs, freeze the heap that existed before it and collect young objects
            less often (see the module docstring); restored when it ends. It cannot change results.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        endpoints: str | Sequence[str],
        *,
        tokenizer: Any = None,
        token_prompts: bool = True,
        vllm_extras: bool = True,
        use_n: bool = True,
        use_seeds: bool = True,
        max_n: int = 256,
        max_in_flight: int = 64,
        max_in_flight_per_endpoint: int | None = None,
        max_retries: int = 6,
        timeout_s: float = 600.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        api_key_env: str | Sequence[str] = DEFAULT_API_KEY_ENVS,
        model_facts: dict[str, Any] | None = None,
        stop_token_ids: Sequence[int] | None = None,
        weights_sha256: str | None = None,
        server_facts: bool = True,
        gc_tuning: bool = True,
    ) -> None:
        if not model:
            raise EngineInputError("the openai backend needs a model name: the one the server serves")
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints or [])
        if not urls:
            raise EngineInputError(
                "the openai backend needs at least one endpoint URL, e.g. endpoints=['http://127.0.0.1:8000/v1'] "
                "(start a local one with: cotscope serve --model organism:arith)"
            )
        self.endpoints = [_normalize_url(u) for u in urls]
        if len(set(self.endpoints)) != len(self.endpoints):
            raise EngineInputError(
                f"the same endpoint is listed twice: {[_redact(u) for u in self.endpoints]}"
            )
        if not token_prompts and tokenizer is None:
            raise EngineInputError(
                "text prompts (token_prompts=False) need the model's tokenizer: pass tokenizer="
            )
        per_endpoint = max_in_flight if max_in_flight_per_endpoint is None else max_in_flight_per_endpoint
        for name, value, low in (
            ("max_n", max_n, 1),
            ("max_in_flight", max_in_flight, 1),
            ("max_in_flight_per_endpoint", per_endpoint, 1),
            ("max_retries", max_retries, 0),
        ):
            if int(value) < low:
                raise EngineInputError(f"{name} must be >= {low}, got {value}")
        if timeout_s <= 0:
            raise EngineInputError(f"timeout_s must be > 0, got {timeout_s}")
        self.model = str(model)
        self.tokenizer = tokenizer
        self.token_prompts = bool(token_prompts)
        self.vllm_extras = bool(vllm_extras)
        self.use_n = bool(use_n)
        self.use_seeds = bool(use_seeds)
        self.max_n = int(max_n)
        self.max_in_flight = int(max_in_flight)
        self.max_in_flight_per_endpoint = int(per_endpoint)
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.api_key_env = (api_key_env,) if isinstance(api_key_env, str) else tuple(api_key_env)
        self.model_facts = dict(model_facts or {})
        if weights_sha256 is not None:
            known = self.model_facts.get("weights_sha256")
            if known is not None and known != weights_sha256:
                raise EngineInputError(
                    f"weights_sha256 {weights_sha256!r} differs from the hash of the local weights ({known}); "
                    "drop the option or point --model at the weights the server runs"
                )
            self.model_facts["weights_sha256"] = str(weights_sha256)
        self.server_facts = bool(server_facts)
        self.gc_tuning = bool(gc_tuning)
        self._served: dict[str, Any] | None = None
        if stop_token_ids is None:
            stop_token_ids = eos_token_ids(tokenizer)
        self.stop_token_ids = sorted({int(t) for t in stop_token_ids})
        self._bos_added = _bos_the_tokenizer_adds(tokenizer)
        """The BOS id a server's tokenizer puts before a text prompt on its own (None if it adds none): dropped
        from the start of a decoded text prompt unless ``add_special_tokens=False`` is sent with it."""
        self.retry_counts: Counter[str] = Counter()
        """Failed attempts of the latest :meth:`generate` call by reason (``429``, ``500``, ``timeout``,
        ``connection``, ``malformed``, ...), and ``gave_up``: requests returned with ``error`` set."""
        self.endpoint_counts: Counter[str] = Counter()
        """Attempts per endpoint in the latest :meth:`generate` call."""
        self._down_until: dict[str, float] = {}
        self._rng = random.Random()

    @classmethod
    def from_model_id(
        cls,
        model_id: str = DEFAULT_MODEL,
        base_url: str | None = None,
        endpoints: str | Sequence[str] | None = None,
        tokenizer: Any = None,
        *,
        served_model_name: str | None = None,
        **kwargs: Any,
    ) -> OpenAIBackend:
        """Build from a model id and server URL(s).

        ``organism:NAME`` and local folders of HF weights load the tokenizer here (for prompts and token counts)
        and put the weights, tokenizer and chat-template hashes in :meth:`identity`. Any other id (a hub id, a
        provider's model name) is sent as is; give ``tokenizer=`` (an object, a folder or a hub id) for text
        prompts. ``served_model_name`` is the name the server knows the model by, when it is not ``model_id``.
        """
        for ignored in ("device", "batch_size"):  # options of the local backends; they mean nothing here
            kwargs.pop(ignored, None)
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints or [])
        if base_url:
            urls.insert(0, base_url)
        if not urls:
            raise EngineInputError(
                "the openai backend needs a server URL: base_url='http://127.0.0.1:8000/v1' or endpoints=[...] "
                "(--base-url on the command line); start a local server with: cotscope serve --model "
                + model_id
            )
        facts: dict[str, Any] = {"model_id": model_id}
        stop_ids: list[int] | None = None
        if isinstance(tokenizer, str | os.PathLike):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        folder = Path(model_id).expanduser()
        if model_id.startswith("organism:"):
            from resampling._model import load_model

            loaded = load_model(model_id, device="cpu")  # organisms are small
            facts = loaded.identity()
            stop_ids = eos_token_ids(loaded.tokenizer, loaded.model)
            tokenizer = tokenizer if tokenizer is not None else loaded.tokenizer
        elif folder.exists():
            # A local folder of HF weights: hash the files, never load the weights (they may be large).
            from resampling._model import model_identity

            if not (folder / "config.json").exists():
                raise EngineInputError(
                    f"{folder} has no config.json; give a folder saved with save_pretrained()"
                )
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            facts = model_identity(model_id, _NoWeights(), tokenizer, folder)
            if not list(folder.glob("*.safetensors")):
                del facts["weights_sha256"]  # no safetensors files to hash
            stop_ids = eos_token_ids(tokenizer, folder)
        elif tokenizer is not None:
            from resampling._model import model_identity

            tok = model_identity(model_id, _NoWeights(), tokenizer, None)
            facts.update(
                tokenizer_sha256=tok["tokenizer_sha256"], chat_template_sha256=tok["chat_template_sha256"]
            )
        kwargs.setdefault("stop_token_ids", stop_ids)
        return cls(served_model_name or model_id, urls, tokenizer=tokenizer, model_facts=facts, **kwargs)

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(model={self.model!r}, endpoints={[_redact(u) for u in self.endpoints]}, "
            f"max_in_flight={self.max_in_flight}, max_retries={self.max_retries})"
        )

    def identity(self) -> dict[str, Any]:
        """What determines the output: the model facts, what the servers report about the weights behind the
        served name, and the request format. Endpoints, concurrency, retries and timeouts do not, so they are not
        here (a run can be resumed against other servers of the same weights)."""
        return {
            "backend": "openai",
            **self.model_facts,
            "served_model": self.model,
            **self.served_facts(),
            "prompt_format": "token_ids" if self.token_prompts else "text",
            "seeded": self.use_seeds,
            # without the explicit "off" values a server's generation_config can change the sampling
            "vllm_extras": self.vllm_extras,
            "stop_token_ids": self.stop_token_ids,
        }

    def served_facts(self) -> dict[str, Any]:
        """``served_root`` and ``served_max_model_len`` from ``GET /v1/models`` (vLLM: the path of the weights it
        loaded and its context length). Servers that disagree are an error; when none answers, nothing is added
        (the run's rows are then all errors anyway, and its key changes once a server answers)."""
        if not self.server_facts:
            return {}
        if self._served is not None:
            return self._served
        seen: dict[str, tuple] = {}
        for url in self.endpoints:
            entry = self._model_entry(url)
            if entry is not None:
                seen[url] = (entry.get("root"), entry.get("max_model_len"))
        if len(set(seen.values())) > 1:
            listing = "; ".join(
                f"{_redact(u)}: root={r!r}, max_model_len={m!r}" for u, (r, m) in seen.items()
            )
            raise EngineInputError(
                f"the endpoints serve different models under the name '{self.model}' ({listing}); "
                "give endpoints that serve the same weights"
            )
        if not seen:
            return {}
        root, max_len = next(iter(seen.values()))
        self._served = {"served_root": root, "served_max_model_len": max_len}
        return self._served

    def _model_entry(self, url: str) -> dict[str, Any] | None:
        handlers: list[Any] = [urllib.request.ProxyHandler({})] if self._loopback(url) else []
        if url.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=_tls_context()))
        request = urllib.request.Request(f"{url}/models", headers=self._headers())
        try:
            with urllib.request.build_opener(*handlers).open(request, timeout=min(self.timeout_s, 10.0)) as r:
                data = json.loads(r.read()).get("data")
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return None  # HTTPError (any status >= 400) is an OSError too
        for entry in data if isinstance(data, list) else []:
            if isinstance(entry, dict) and entry.get("id") == self.model:
                return entry
        return None

    # -- routing --------------------------------------------------------------------------------------------

    def endpoint_order(self, route: str) -> list[str]:
        """Endpoints by preference for ``route`` (rendezvous hashing): the first serves it, the rest are fallbacks."""

        def score(url: str) -> bytes:
            return hashlib.sha256(f"{route}\0{url}".encode()).digest()

        return sorted(self.endpoints, key=score, reverse=True)

    def endpoint_for(self, route: str) -> str:
        """The endpoint every job with this routing key (a trace id) goes to."""
        return self.endpoint_order(route)[0]

    def _order(self, net: Any, job: GenerationJob) -> list[str]:
        """:meth:`endpoint_order` of the job's route (its trace), computed once per route in a run."""
        route = job.route or job.key
        if (order := net.orders.get(route)) is None:
            order = net.orders[route] = self.endpoint_order(route)
        return order

    def _pick(self, order: list[str], hop: int) -> str:
        """The first endpoint from ``order[hop:]`` (wrapping) that has not refused a connection just now."""
        if not self._down_until:  # no endpoint has refused a connection
            return order[hop % len(order)]
        now = time.monotonic()
        if all(until <= now for until in self._down_until.values()):
            self._down_until.clear()  # every one is back: the fast path again
            return order[hop % len(order)]
        turn = order[hop % len(order) :] + order[: hop % len(order)]
        return next((u for u in turn if self._down_until.get(u, 0.0) <= now), turn[0])

    # -- generation ---------------------------------------------------------------------------------------

    def _requests(self, jobs: list[GenerationJob]) -> tuple[list[_Request], set[int]]:
        requests: list[_Request] = []
        greedy: set[int] = set()
        for j, job in enumerate(jobs):
            if job.params.temperature == 0:
                # servers refuse n > 1 with greedy sampling (vLLM: HTTP 400), and seeds do not enter greedy
                # decoding: one n=1 request serves every sample of the job
                greedy.add(j)
                requests.append(_Request(j, job.samples[:1], job.seeds[:1]))
                continue
            if not self.use_n:
                runs = [((s,), (seed,)) for s, seed in zip(job.samples, job.seeds, strict=True)]
            elif self.use_seeds:
                runs = _contiguous_runs(job.samples, job.seeds, self.max_n)
            else:
                runs = [
                    (job.samples[i : i + self.max_n], job.seeds[i : i + self.max_n])
                    for i in range(0, len(job.samples), self.max_n)
                ]
            requests.extend(_Request(j, samples, seeds) for samples, seeds in runs)
        return requests, greedy

    def generate(self, jobs: Sequence[GenerationJob]) -> Iterator[tuple[GenerationJob, list[Completion]]]:
        jobs = list(jobs)
        for job in jobs:
            if job.params.max_new_tokens is None:
                raise EngineInputError(
                    f"job {job.key}: max_new_tokens is required (set it in SamplingParams)"
                )
        self.retry_counts = Counter()
        self.endpoint_counts = Counter()
        if not jobs:
            return
        requests, greedy = self._requests(jobs)
        with _gc_tuned(self.gc_tuning):  # frozen with the rest: the jobs and requests live as long as the run
            yield from self._stream(jobs, requests, greedy)

    def _stream(
        self, jobs: list[GenerationJob], requests: list[_Request], greedy: set[int]
    ) -> Iterator[tuple[GenerationJob, list[Completion]]]:
        """The jobs' completions as they finish, from an event loop in a background thread."""
        left = Counter(r.job_index for r in requests)
        done: dict[int, list[Completion]] = {}
        results: queue.SimpleQueue = queue.SimpleQueue()
        loop = _new_event_loop()
        task = loop.create_task(self._send_all(jobs, requests, results))

        def run() -> None:
            try:
                loop.run_until_complete(task)
            except BaseException as exc:  # a bug in the client: raise it in the caller's thread
                if not task.cancelled():
                    results.put(exc)
            finally:
                loop.close()
                results.put(_END)

        thread = threading.Thread(target=run, name="cotscope-openai", daemon=True)
        thread.start()
        try:
            while (batch := results.get()) is not _END:
                if isinstance(batch, BaseException):
                    raise batch
                for req, completions in batch:
                    if (finished := _collect(jobs, greedy, done, left, req, completions)) is not None:
                        yield finished
        finally:
            # Reached early only when the caller stops reading: cancel what is in flight.
            if thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop closed in between
                    loop.call_soon_threadsafe(task.cancel)
                thread.join()

    async def _send_all(self, jobs: list[GenerationJob], requests: list[_Request], results: Any) -> None:
        """``max_in_flight`` workers take the requests in plan order; each result goes to ``results``."""
        net = self._connect()
        pending = iter(requests)
        done: list[tuple[_Request, list[Completion]]] = []
        loop = asyncio.get_running_loop()

        def hand_over() -> None:
            # once per turn of the loop: one wake-up of the reading thread, not one per request
            if done:
                results.put(done.copy())
                done.clear()

        async def worker() -> None:
            for req in pending:  # one event loop: the shared iterator needs no lock
                try:
                    completions = await self._attempts(jobs[req.job_index], req, net)
                except Exception as exc:  # a bug must not take the run down; the rows are retried on resume
                    completions = self._failed(
                        req, f"unexpected {type(exc).__name__}: {self._scrub(str(exc), net.auth)}"
                    )
                if not done:
                    loop.call_soon(hand_over)
                done.append((req, completions))

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.max_in_flight, len(requests)))))
        finally:
            await self._disconnect(net)
            hand_over()

    def _connect(self) -> Any:
        """What the requests of one run share (:class:`_Net`), opened on the run's event loop."""
        https = any(u.startswith("https:") for u in self.endpoints)
        session = aiohttp.ClientSession(
            connector=_Connector(
                limit=self.max_in_flight,
                ssl=_tls_context() if https else True,
                keepalive_timeout=_KEEPALIVE_S,
            ),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # proxies: see _proxy (a .netrc must not add credentials either)
        )
        return _Net(
            session,
            {u: asyncio.Semaphore(self.max_in_flight_per_endpoint) for u in self.endpoints}
            if self.max_in_flight_per_endpoint < self.max_in_flight
            else {},
            {u: URL(f"{u}/completions") for u in self.endpoints},
            {u: self._proxy(u) for u in self.endpoints},
            {},
            self._authorization(),
        )

    async def _disconnect(self, net: Any) -> None:
        await net.session.close()

    def _payload(self, job: GenerationJob, seed: int, n: int) -> dict[str, Any]:
        p = job.params
        prompt: list[int] | str = list(job.prompt_ids)
        if not self.token_prompts:
            ids = list(job.prompt_ids)
            if not self.vllm_extras and self._bos_added is not None and ids[:1] == [self._bos_added]:
                ids = ids[1:]  # the server tokenizes the text with its own BOS: do not send a second one
            prompt = self.tokenizer.decode(ids, skip_special_tokens=False)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "n": n,
            "max_tokens": int(p.max_new_tokens),
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        if self.use_seeds:
            body["seed"] = int(seed)
        if p.stop:
            body["stop"] = list(p.stop)
        if self.vllm_extras:
            # Explicit "off" values, so a server's generation_config.json cannot change the sampling.
            body.update(top_k=p.top_k or -1, min_p=0.0, repetition_penalty=1.0, return_token_ids=True)
            if not self.token_prompts:
                body["add_special_tokens"] = False
        elif p.top_k:
            body["top_k"] = p.top_k
        return body

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter; a ``Retry-After`` is honoured up to ``backoff_max_s``."""
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (state.attempt_number - 1))
        delay *= 0.5 + 0.5 * self._rng.random()
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _Failure) and failure.retry_after is not None:
            delay = max(delay, min(failure.retry_after, self.backoff_max_s))
        return delay

    async def _attempts(self, job: GenerationJob, req: _Request, net: _Net) -> list[Completion]:
        """All attempts of one request; a failure comes back as completions with ``error`` set."""
        order = self._order(net, job)
        body = json.dumps(self._payload(job, req.seeds[0], len(req.samples))).encode()
        tries = 1
        try:
            try:  # most requests need one attempt: the retry machinery is built only for those that fail
                return await self._attempt(net, order, 0, body, req)
            except _Failure as first:
                if not first.retry or not self.max_retries:
                    raise
                failed: _Failure | None = first
                hop = first.hop
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.max_retries + 1), wait=self._wait, retry=_RETRY, reraise=True
            ):
                with attempt:
                    if failed is not None:  # tenacity's first attempt is the one that failed: it waits on it
                        last, failed = failed, None
                        raise last
                    tries += 1
                    try:
                        return await self._attempt(net, order, hop, body, req)
                    except _Failure as failure:
                        hop = failure.hop
                        raise
        except _Failure as last:
            self.retry_counts["gave_up"] += 1
            why = "not retried" if not last.retry else f"after {tries} attempt{'s' * (tries > 1)}"
            return self._failed(
                req,
                f"{last.reason} at {_redact(last.url)}/completions ({why}): {last.detail}; stored with status "
                "'error' and retried on the next run",
            )
        raise AssertionError("unreachable: tenacity either returns or reraises")

    async def _attempt(
        self, net: _Net, order: list[str], hop: int, body: bytes, req: _Request
    ) -> list[Completion]:
        """One attempt at the endpoint ``_pick(order, hop)``; a failure raises :class:`_Failure` carrying that URL
        and the ``hop`` of the next attempt (one further after a connection error)."""
        url = self._pick(order, hop)
        self.endpoint_counts[url] += 1
        try:
            if (slot := net.slots.get(url)) is None:
                choices = await self._post(net, url, body, len(req.samples))
            else:
                async with slot:
                    choices = await self._post(net, url, body, len(req.samples))
        except _Failure as failure:
            self.retry_counts[failure.reason] += 1
            failure.url, failure.hop = url, hop
            if net.auth is not None:  # the key in the environment may have changed since the run started
                failure.detail = self._scrub(failure.detail, net.auth)
            if failure.reason == "connection":
                failure.hop += 1  # that server is unreachable: skip it a while, try the trace's next one
                self._down_until[url] = time.monotonic() + _DOWN_S
            raise
        return [
            self._completion(c, s, seed) for c, s, seed in zip(choices, req.samples, req.seeds, strict=True)
        ]

    def _failed(self, req: _Request, message: str) -> list[Completion]:
        return [
            Completion(sample=s, seed=seed, error=message)
            for s, seed in zip(req.samples, req.seeds, strict=True)
        ]

    # -- one HTTP attempt -----------------------------------------------------------------------------------

    @staticmethod
    def _loopback(url: str) -> bool:
        """Loopback traffic never goes through an http_proxy from the environment."""
        return (urllib.parse.urlsplit(url).hostname or "") in _LOOPBACK

    def _api_key(self) -> str | None:
        for name in self.api_key_env:
            key = os.environ.get(name)
            if key:
                return key
        return None

    def _authorization(self) -> dict[str, str] | None:
        key = self._api_key()
        return {"Authorization": f"Bearer {key}"} if key else None

    def _headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **(self._authorization() or {}),
        }

    def _scrub(self, text: str, sent: dict[str, str] | None = None) -> str:
        """``text`` without the API key: the environment's now, and the one ``sent`` (a run's header) if other."""
        for key in {self._api_key(), sent["Authorization"].removeprefix("Bearer ") if sent else None}:
            if key and len(key) >= 4:
                text = text.replace(key, "***")
        return text

    def _proxy(self, url: str) -> str | None:
        """The environment's proxy for ``url`` (``https_proxy``, ``no_proxy``, ...); none for loopback."""
        host = urllib.parse.urlsplit(url).hostname or ""
        if self._loopback(url) or urllib.request.proxy_bypass(host):
            return None
        return urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)

    async def _post(self, net: _Net, url: str, body: bytes, n: int) -> list[dict[str, Any]]:
        try:
            async with net.session.post(
                net.urls[url],
                data=body,
                headers=net.auth,  # the session sends the content headers
                proxy=net.proxies[url],
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                status = response.status
                if status >= 300:
                    raise self._http_failure(
                        status, raw, response.reason, response.headers.get("Retry-After")
                    )
        except TimeoutError:  # asyncio's and aiohttp's timeouts (before OSError: TimeoutError is one)
            raise _Failure("timeout", f"no answer within {self.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Failure("connection", self._scrub(f"{type(exc).__name__}: {exc}")) from None
        return self._parse(raw, n)

    def _http_failure(self, status: int, raw: bytes, reason: str | None, retry_after: str | None) -> _Failure:
        text = raw.decode("utf-8", "replace")
        try:
            detail = json.loads(text)["error"]["message"]
        except Exception:
            detail = text[:300] or reason or ""
        detail = self._scrub(str(detail))
        hint = {
            401: " (check the API key in $"
            + (self.api_key_env[0] if self.api_key_env else "OPENAI_API_KEY")
            + ")",
            404: " (check the model name and the URL: GET /v1/models lists what the server serves)",
        }.get(status, "")
        return _Failure(
            str(status),
            f"HTTP {status}: {detail}{hint}",
            retry=status not in _NOT_RETRIED,
            retry_after=_retry_after(retry_after),
        )

    @staticmethod
    def _parse(raw: bytes, n: int) -> list[dict[str, Any]]:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Failure(
                "malformed", f"the response is not valid JSON ({exc.msg} at byte {exc.pos})"
            ) from None
        return OpenAIBackend._choices(data.get("choices") if isinstance(data, dict) else None, n)

    @staticmethod
    def _choices(choices: Any, n: int) -> list[dict[str, Any]]:
        """A response's ``choices``, checked (a list of ``n`` with ``text``, each index once), in index order."""
        if not isinstance(choices, list):
            raise _Failure("malformed", "the response has no 'choices' list")
        if len(choices) != n:
            raise _Failure("malformed", f"the response has {len(choices)} choices, {n} were asked for")
        by_index: dict[int, dict] = {}
        for i, c in enumerate(choices):
            if not isinstance(c, dict) or not isinstance(c.get("text"), str):
                raise _Failure("malformed", f"choice {i} has no 'text'")
            index = c.get("index", i)
            if not isinstance(index, int) or not 0 <= index < n or index in by_index:
                raise _Failure(
                    "malformed", f"choice {i} has index {index!r}; expected each of 0..{n - 1} once"
                )
            ids = c.get("token_ids")
            if ids is not None and not (isinstance(ids, list) and all(isinstance(t, int) for t in ids)):
                raise _Failure("malformed", f"choice {i} has 'token_ids' that are not a list of integers")
            by_index[index] = c
        return [by_index[i] for i in range(n)]

    def _completion(self, choice: dict[str, Any], sample: int, seed: int) -> Completion:
        text = choice["text"]
        finish = choice.get("finish_reason")
        ids = choice.get("token_ids")
        if ids is None:
            ids = (
                self.tokenizer(text, add_special_tokens=False)["input_ids"]
                if self.tokenizer is not None
                else []
            )
        ids = [int(t) for t in ids]
        # vLLM returns the end-of-sequence token among the ids; the hf backend (and cotscope serve) do not.
        if finish == "stop" and ids and ids[-1] in self.stop_token_ids:
            ids = ids[:-1]
        return Completion(sample=sample, seed=seed, token_ids=ids, text=text, finish_reason=finish)


class _NoWeights:
    """Stands in for a model whose weights are not on this machine (only the tokenizer hashes are used)."""

    @staticmethod
    def state_dict() -> dict:
        return {}

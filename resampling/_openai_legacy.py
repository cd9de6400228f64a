"""The ``openai`` backend as it was before the async client: urllib, a thread per request, a new connection per request.

Kept only as the baseline of ``cotscope bench client`` (today's client against this one, side by side in one run);
nothing else imports it. The rest of this docstring is the original one.

- **Exact prompts.** Token-id prompts where the server takes them (vLLM, SGLang, ``cotscope serve``); otherwise the
  prefix is decoded to text (``token_prompts=False``), which a server may re-tokenize differently.
- **Seeds.** A job's samples whose seeds are consecutive go out as one request with ``n`` and ``seed`` (sample k
  gets ``seed + k``, the vLLM convention); any other sample (a resumed run asks only for missing ones) gets a
  request of its own with its own seed.
- **Bounded concurrency.** At most ``max_in_flight`` requests at once (a thread pool over urllib: no extra
  dependency). Jobs are sent in plan order, so the requests of one trace are in flight together.
- **Retries.** 429, 5xx, timeouts, connection errors and malformed responses (bad JSON, missing fields, the
  wrong number of choices) are retried with exponential backoff and jitter, up to ``max_retries`` times; then the
  completions come back with ``error`` set (stored with status ``error``, retried on resume). One bad request never
  raises mid-run. Other 4xx answers (a wrong model name, a bad key) are not retried.
- **Several endpoints.** Each job goes to the endpoint chosen by rendezvous hashing of ``job.route`` (the trace id),
  so every prefix of a trace hits the same server's prefix cache; adding an endpoint moves only the traces it wins.
  After a connection error the next attempt goes to the trace's next endpoint in that order.
- **Secrets.** The API key is read from the environment at each request and never stored on the object, written
  into errors, the repr, the identity or any file.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from http.client import HTTPException
from typing import Any

from resampling._backend import Completion, GenerationJob
from resampling._errors import EngineInputError
from resampling._openai import (
    OpenAIBackend,
    _bos_the_tokenizer_adds,
    _collect,
    _contiguous_runs,
    _Failure,
    _Request,
)

__all__ = ["LegacyOpenAIBackend"]

DEFAULT_API_KEY_ENVS = ("COTSCOPE_OPENAI_API_KEY", "OPENAI_API_KEY")
"""Environment variables read for the API key, first set wins."""

_NOT_RETRIED = {400, 401, 403, 404, 405, 413, 422}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _normalize_url(url: str) -> str:
    url = str(url).strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EngineInputError(
            f"endpoint '{_redact(url)}' is not an http(s) URL; give e.g. http://127.0.0.1:8000/v1"
        )
    if parts.path in ("", "/"):
        url += "/v1"  # vLLM, SGLang and cotscope serve answer under /v1
    return url


def _redact(url: str) -> str:
    """The URL without user:password (which may hold a credential)."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return urllib.parse.urlunsplit(parts)


class LegacyOpenAIBackend:
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
        max_retries: retries per request after the first attempt; then the completions carry ``error``.
        timeout_s: seconds to wait on a connection or a response before the attempt counts as a timeout.
        backoff_s, backoff_max_s: the first retry waits about ``backoff_s``, doubling up to ``backoff_max_s``
            (each wait is scaled by a random factor in [0.5, 1] so clients do not retry in lockstep).
        api_key_env: environment variable(s) holding the API key (default ``COTSCOPE_OPENAI_API_KEY``, then
            ``OPENAI_API_KEY``); read at each request, never stored.
        model_facts: what identifies the model beyond its name (weights, tokenizer and chat template hashes);
            :meth:`from_model_id` fills it in.
        stop_token_ids: end-of-sequence ids stripped from the end of returned token ids (default: the tokenizer's).
    """

    name = "openai"

    # what the transport does not change is the current client's own code
    endpoint_order = OpenAIBackend.endpoint_order
    endpoint_for = OpenAIBackend.endpoint_for
    _payload = OpenAIBackend._payload
    _failed = OpenAIBackend._failed
    _api_key = OpenAIBackend._api_key
    _scrub = OpenAIBackend._scrub
    _parse = staticmethod(OpenAIBackend._parse)
    _completion = OpenAIBackend._completion

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
        max_retries: int = 6,
        timeout_s: float = 600.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        api_key_env: str | Sequence[str] = DEFAULT_API_KEY_ENVS,
        model_facts: dict[str, Any] | None = None,
        stop_token_ids: Sequence[int] | None = None,
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
        for name, value, low in (
            ("max_n", max_n, 1),
            ("max_in_flight", max_in_flight, 1),
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
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.api_key_env = (api_key_env,) if isinstance(api_key_env, str) else tuple(api_key_env)
        self.model_facts = dict(model_facts or {})
        if stop_token_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            stop_token_ids = [eos] if isinstance(eos, int) else []
        self.stop_token_ids = sorted({int(t) for t in stop_token_ids})
        self._bos_added = _bos_the_tokenizer_adds(tokenizer)
        """The BOS id a server's tokenizer puts before a text prompt on its own (None if it adds none): dropped
        from the start of a decoded text prompt unless ``add_special_tokens=False`` is sent with it."""
        self.retry_counts: Counter[str] = Counter()
        """Failed attempts of the latest :meth:`generate` call by reason (``429``, ``500``, ``timeout``,
        ``connection``, ``malformed``, ...), and ``gave_up``: requests returned with ``error`` set."""
        self.endpoint_counts: Counter[str] = Counter()
        """Attempts per endpoint in the latest :meth:`generate` call."""
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._closing = threading.Event()
        self._openers = {u: self._opener(u) for u in self.endpoints}

    # -- routing --------------------------------------------------------------------------------------------

    # -- generation ---------------------------------------------------------------------------------------

    def generate(self, jobs: Sequence[GenerationJob]) -> Iterator[tuple[GenerationJob, list[Completion]]]:
        jobs = list(jobs)
        for job in jobs:
            if job.params.max_new_tokens is None:
                raise EngineInputError(
                    f"job {job.key}: max_new_tokens is required (set it in SamplingParams)"
                )
        with self._lock:
            self.retry_counts = Counter()
            self.endpoint_counts = Counter()
        if not jobs:
            return
        requests: list[_Request] = []
        greedy: set[int] = set()
        for j, job in enumerate(jobs):
            if job.params.temperature == 0:
                # servers refuse n > 1 with greedy sampling (vLLM: HTTP 400), and seeds do not enter greedy
                # decoding: one n=1 request serves every sample of the job
                greedy.add(j)
                requests.append(_Request(j, job.samples[:1], job.seeds[:1]))
                continue
            if self.use_n:
                runs = (
                    _contiguous_runs(job.samples, job.seeds, self.max_n)
                    if self.use_seeds
                    else [
                        (job.samples[i : i + self.max_n], job.seeds[i : i + self.max_n])
                        for i in range(0, len(job.samples), self.max_n)
                    ]
                )
            else:
                runs = [((s,), (seed,)) for s, seed in zip(job.samples, job.seeds, strict=True)]
            requests.extend(_Request(j, samples, seeds) for samples, seeds in runs)
        left = Counter(r.job_index for r in requests)
        done: dict[int, list[Completion]] = {}
        self._closing.clear()
        pool = ThreadPoolExecutor(
            max_workers=min(self.max_in_flight, len(requests)), thread_name_prefix="cotscope-openai"
        )
        try:
            pending: set[Future] = set()
            futures: dict[Future, _Request] = {}
            for req in requests:
                fut = pool.submit(self._run_request, jobs[req.job_index], req)
                futures[fut] = req
                pending.add(fut)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    req = futures.pop(fut)
                    if (out := _collect(jobs, greedy, done, left, req, fut.result())) is not None:
                        yield out
        finally:
            # Reached early only when the caller stops reading: cut retries short and drop queued requests.
            self._closing.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _run_request(self, job: GenerationJob, req: _Request) -> list[Completion]:
        """All attempts of one request; never raises (a failure comes back as completions with ``error`` set)."""
        try:
            return self._attempts(job, req)
        except Exception as exc:  # a bug here must not take the run down; the rows are retried on resume
            return self._failed(req, f"unexpected {type(exc).__name__}: {self._scrub(str(exc))}")

    def _attempts(self, job: GenerationJob, req: _Request) -> list[Completion]:
        order = self.endpoint_order(job.route or job.key)
        body = json.dumps(self._payload(job, req.seeds[0], len(req.samples))).encode()
        hop = 0
        for attempt in range(self.max_retries + 1):
            url = order[hop % len(order)]
            with self._lock:
                self.endpoint_counts[url] += 1
            try:
                choices = self._post(url, body, len(req.samples))
                return [
                    self._completion(c, s, seed)
                    for c, s, seed in zip(choices, req.samples, req.seeds, strict=True)
                ]
            except _Failure as failure:
                with self._lock:
                    self.retry_counts[failure.reason] += 1
                last = failure
                if failure.reason == "connection":
                    hop += 1  # that server is unreachable: try the trace's next endpoint
                if not failure.retry or attempt == self.max_retries or self._closing.is_set():
                    break
                delay = min(self.backoff_max_s, self.backoff_s * 2**attempt) * (
                    0.5 + 0.5 * self._rng.random()
                )
                if failure.retry_after is not None:
                    delay = max(delay, min(failure.retry_after, self.backoff_max_s))
                if self._closing.wait(delay):
                    break
        with self._lock:
            self.retry_counts["gave_up"] += 1
        tries = attempt + 1
        why = "not retried" if not last.retry else f"after {tries} attempt{'s' * (tries > 1)}"
        return self._failed(
            req,
            f"{last.reason} at {_redact(url)}/completions ({why}): {last.detail}; stored with status 'error' and "
            "retried on the next run",
        )

    # -- one HTTP attempt -----------------------------------------------------------------------------------

    def _opener(self, url: str) -> urllib.request.OpenerDirector:
        host = urllib.parse.urlsplit(url).hostname or ""
        if host in _LOOPBACK:  # never send loopback traffic through an http_proxy from the environment
            return urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return urllib.request.build_opener()

    def _post(self, url: str, body: bytes, n: int) -> list[dict[str, Any]]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(f"{url}/completions", data=body, headers=headers, method="POST")
        try:
            with self._openers[url].open(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_failure(exc) from None
        except TimeoutError:
            raise _Failure("timeout", f"no answer within {self.timeout_s:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _Failure("timeout", f"no answer within {self.timeout_s:g} s") from None
            raise _Failure("connection", self._scrub(f"cannot connect: {exc.reason}")) from None
        except (ConnectionError, HTTPException, OSError) as exc:
            raise _Failure("connection", self._scrub(f"{type(exc).__name__}: {exc}")) from None
        return self._parse(raw, n)

    def _http_failure(self, exc: urllib.error.HTTPError) -> _Failure:
        try:
            detail_raw = exc.read().decode("utf-8", "replace")
        except Exception:
            detail_raw = ""
        try:
            detail = json.loads(detail_raw)["error"]["message"]
        except Exception:
            detail = detail_raw[:300] or exc.reason
        detail = self._scrub(str(detail))
        retry_after = None
        if exc.headers is not None and exc.headers.get("Retry-After"):
            try:
                retry_after = float(exc.headers["Retry-After"])
            except ValueError:
                retry_after = None
        status = int(exc.code)
        retry = status not in _NOT_RETRIED
        hint = {
            401: " (check the API key in $"
            + (self.api_key_env[0] if self.api_key_env else "OPENAI_API_KEY")
            + ")",
            404: " (check the model name and the URL: GET /v1/models lists what the server serves)",
        }.get(status, "")
        return _Failure(str(status), f"HTTP {status}: {detail}{hint}", retry=retry, retry_after=retry_after)

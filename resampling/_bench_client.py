"""``cotscope bench client``: the ``openai`` backend's own cost against the official ``openai`` SDK's, in one run.

Servers: ``S`` minimal stub servers on loopback, each its own process (asyncio, HTTP/1.1 keep-alive), that answer
every ``/v1/completions`` request at once with a completion that depends only on (prompt, seed): the client is what
is measured, and a run's rows can be compared with another's. Each stub counts the connections it accepted and the
most it held open at once.

Work: ``R`` requests (one sample each, routed over ``T`` traces) with at most ``F`` in flight over all servers.
Per client and run: wall seconds, requests/s, **client CPU per request** (the client process's CPU time over the
run, less the CPU of the benchmark's own thread that counts file descriptors, divided by the requests: the stubs
run in other processes, so this is the client's overhead), connections the
servers accepted, the most open at once, the client's peak file descriptors, and errors. The clients take turns
(their order rotates) over ``repeats`` runs and medians are reported.

The clients:

- ``aiohttp``: the ``openai`` backend as it comes (``gc_tuning`` on: the heap frozen and young objects collected
  less often while requests are in flight);
- ``aiohttp, gc_tuning off``: the same with the garbage collector as the process set it, so the report shows what
  the collector's setting is worth;
- ``openai SDK`` and ``openai SDK, aiohttp``: the yardstick a user would pick, the official ``openai`` package
  (``AsyncOpenAI``, one client per endpoint with its own connection pool, sized to the requests in flight, and its
  own retries), on its default transport (httpx2) and on the aiohttp transport it offers. :class:`SDKBackend`
  sends the same requests as the backend (same payload, routing, checks of the answer and completions, same event
  loop and collector setting): only the transport and the retries differ.

Failover (``--kill-one``): for each of ``aiohttp`` and ``openai SDK``, an undisturbed run, then the same work with
the server that gets the most requests killed (SIGKILL, by the stub itself) when it receives a quarter of its
requests, so the kill always lands while requests are in flight there; the stub reports how many, the client must
have felt it (failed attempts moved to other servers), and the rows must equal the undisturbed run's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from resampling._backend import Completion, GenerationJob
from resampling._errors import EngineInputError
from resampling._openai import _DOWN_S, OpenAIBackend, _Failure, _Request

__all__ = [
    "BASELINE",
    "FAILOVER_CLIENTS",
    "ClientBenchConfig",
    "SDKBackend",
    "check_failover_size",
    "failover_problems",
    "format_client_report",
    "run_client_bench",
    "run_failover_check",
    "start_stubs",
]


# -- the stub server (runs in its own process) ------------------------------------------------------------------


def _answer(body: dict) -> dict:
    """A completion that depends only on the prompt and the seed (so two runs' rows can be compared)."""
    prompt = body.get("prompt") or []
    base = sum(prompt) if isinstance(prompt, list) else len(prompt)
    seed, n = int(body.get("seed") or 0), int(body.get("n") or 1)
    choices = [
        {
            "index": k,
            "text": f"s{seed + k}p{base}",
            "token_ids": [(base + seed + k + i) % 997 for i in range(4)],
            "finish_reason": "length",
        }
        for k in range(n)
    ]
    return {"object": "text_completion", "model": body.get("model"), "choices": choices}


async def _stub(port: int, delay_s: float) -> None:
    stats = {"connections": 0, "open": 0, "peak_open": 0, "requests": 0, "answered": 0, "kill_at": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        stats["open"] += 1
        stats["peak_open"] = max(stats["peak_open"], stats["open"])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
                }
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                if path.endswith("/stats"):
                    payload = dict(stats, connections=stats["connections"] - 1)  # not this query's own
                    if method == "POST":  # reset, and arm the kill: {"kill_after": K} completion requests
                        after = int(json.loads(raw or b"{}").get("kill_after", 0))
                        stats.update(connections=0, peak_open=stats["open"], requests=0, answered=0)
                        stats["kill_at"] = after
                elif path.endswith("/models"):
                    payload = {"data": [{"id": "stub", "root": "stub", "max_model_len": 4096}]}
                else:
                    stats["requests"] += 1
                    if stats["requests"] == stats["kill_at"]:  # this one and the others not answered yet
                        print("killed", stats["requests"] - stats["answered"], flush=True)
                        os.kill(os.getpid(), signal.SIGKILL)
                    if delay_s:
                        await asyncio.sleep(delay_s)
                    payload = _answer(json.loads(raw))
                data = json.dumps(payload).encode()
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                    % (len(data), b"Connection: close\r\n" if close else b"")
                    + data
                )
                await writer.drain()
                stats["answered"] += not path.endswith(("/stats", "/models"))
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            stats["open"] -= 1
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def start_stubs(count: int, delay_s: float = 0.0) -> list[tuple[subprocess.Popen, str]]:
    """Start ``count`` stub servers, each its own process; returns (process, base URL) pairs."""
    out = []
    for _ in range(count):
        proc = subprocess.Popen(
            [sys.executable, "-m", "resampling._bench_client", "--port", "0", "--delay", str(delay_s)],
            stdin=subprocess.PIPE,  # the stub exits when this pipe closes: no stub outlives its benchmark
            stdout=subprocess.PIPE,
            text=True,
        )
        port = int(proc.stdout.readline())
        out.append((proc, f"http://127.0.0.1:{port}/v1"))
    return out


def stop_stubs(stubs: list[tuple[subprocess.Popen, str]]) -> None:
    for proc, _ in stubs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def _stub_stats(url: str, reset: bool = False, kill_after: int = 0) -> dict[str, int]:
    """A stub's counts; ``reset`` zeroes them, ``kill_after=K`` (which resets too) makes the stub kill itself
    (SIGKILL) on receiving its K-th completion request from then on, first printing ``killed N``: N requests
    received and not answered, that one included."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    post = reset or kill_after > 0
    req = urllib.request.Request(
        url + "/stats",
        data=json.dumps({"kill_after": kill_after}).encode() if post else None,
        method="POST" if post else "GET",
    )
    with opener.open(req, timeout=10) as resp:
        return json.loads(resp.read())


# -- the yardstick: the official SDK ---------------------------------------------------------------------------

_SDK_FIELDS = ("model", "prompt", "n", "max_tokens", "temperature", "top_p", "seed", "stop")
"""Payload fields ``AsyncOpenAI.completions.create`` takes as arguments; the rest (vLLM's) go in ``extra_body``."""


@dataclass(frozen=True)
class _SDKNet:
    clients: dict[str, Any]  # endpoint -> AsyncOpenAI
    orders: dict[str, list[str]]
    auth: dict[str, str] | None


class SDKBackend(OpenAIBackend):
    """The ``openai`` backend's requests sent through the official ``openai`` SDK (``AsyncOpenAI``).

    One SDK client per endpoint, each with its own connection pool (up to ``max_in_flight`` connections, all kept
    alive) and its own retries (``max_retries``, the SDK's backoff); the SDK's default transport (httpx2) or, with
    ``transport="aiohttp"``, the aiohttp one it ships. The SDK talks to one server, so failover is added on top:
    a request whose connection still fails after the SDK's retries goes to the trace's next endpoint, and that
    endpoint is skipped for a while, as in the backend. Everything else (payload, routing, checks of the answer,
    completions, the event loop, ``gc_tuning``) is the backend's, so the two differ only in the transport."""

    name = "openai-sdk"

    def __init__(self, *args: Any, transport: str = "httpx", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if transport not in ("httpx", "aiohttp"):
            raise EngineInputError(f"transport must be 'httpx' or 'aiohttp', got {transport!r}")
        try:  # imported here, not while a run is timed
            import openai  # noqa: F401
        except ImportError:
            raise EngineInputError(
                "the client benchmark's yardstick needs the openai package: pip install openai "
                "(it is in cotscope's dev extra)"
            ) from None
        self.transport = transport

    def _connect(self) -> _SDKNet:
        import openai
        from openai._constants import DEFAULT_CONNECTION_LIMITS  # its Limits class: httpx's or httpx2's

        http = openai.DefaultAioHttpClient if self.transport == "aiohttp" else openai.DefaultAsyncHttpxClient
        limits = type(DEFAULT_CONNECTION_LIMITS)(
            max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight
        )
        clients = {
            url: openai.AsyncOpenAI(
                base_url=url,
                api_key=self._api_key() or "none",
                max_retries=self.max_retries,
                timeout=self.timeout_s,
                http_client=http(limits=limits),
            )
            for url in self.endpoints
        }
        return _SDKNet(clients, {}, self._authorization())

    async def _disconnect(self, net: _SDKNet) -> None:
        for client in net.clients.values():
            await client.close()

    async def _attempts(self, job: GenerationJob, req: _Request, net: _SDKNet) -> list[Completion]:
        import openai

        order = self._order(net, job)
        extra = self._payload(job, req.seeds[0], len(req.samples))
        fields = {key: extra.pop(key) for key in _SDK_FIELDS if key in extra}
        last = ""
        for hop in range(
            len(order)
        ):  # the SDK has retried one endpoint; after a connection failure, the next
            url = self._pick(order, hop)
            self.endpoint_counts[url] += 1
            try:
                response = await net.clients[url].completions.create(**fields, extra_body=extra or None)
                choices = self._choices(
                    [
                        {
                            "index": getattr(c, "index", i),
                            "text": getattr(c, "text", None),
                            "finish_reason": getattr(c, "finish_reason", None),
                            "token_ids": getattr(c, "token_ids", None),
                        }
                        for i, c in enumerate(response.choices or [])
                    ],
                    len(req.samples),
                )
            except (openai.APIConnectionError, AttributeError) as exc:
                # the SDK's retries are spent (timeouts are these too); or its transport read the address of a
                # socket the killed server had already closed ("'NoneType' object has no attribute
                # 'getpeername'", 2 of 18 kill runs here): a connection failure the SDK does not wrap
                if isinstance(exc, AttributeError) and "getpeername" not in str(exc):
                    raise
                reason = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
                self.retry_counts[reason] += 1
                self._down_until[url] = time.monotonic() + _DOWN_S
                last = f"{reason} at {url}: {exc}"
                continue
            except openai.APIStatusError as exc:  # the SDK has retried what it retries (429, 5xx)
                self.retry_counts[str(exc.status_code)] += 1
                last = f"HTTP {exc.status_code} at {url}: {exc.message}"
                break
            except _Failure as exc:
                self.retry_counts[exc.reason] += 1
                last = f"{exc.reason} at {url}: {exc.detail}"
                break
            return [
                self._completion(c, s, seed)
                for c, s, seed in zip(choices, req.samples, req.seeds, strict=True)
            ]
        self.retry_counts["gave_up"] += 1
        return self._failed(req, self._scrub(last, net.auth))


# -- the benchmark ----------------------------------------------------------------------------------------------


@dataclass
class ClientBenchConfig:
    servers: int = 4
    requests: int = 4000
    in_flight: int = 1024
    traces: int = 200
    repeats: int = 3
    prompt_tokens: int = 64


BASELINE = "aiohttp"
"""The ``openai`` backend as it comes: the other clients' ratios are over it."""


def _jobs(cfg: ClientBenchConfig) -> list:
    import random

    from resampling._plan import SamplingParams

    rng = random.Random(0)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16)
    prompts = [tuple(rng.randrange(1000) for _ in range(cfg.prompt_tokens)) for _ in range(cfg.traces)]
    return [
        GenerationJob(f"j{i}", prompts[i % cfg.traces], (0,), (i,), params, route=f"trace-{i % cfg.traces}")
        for i in range(cfg.requests)
    ]


def _clients(urls: list[str], in_flight: int, names: tuple[str, ...] | None = None, **options: Any) -> dict:
    """The clients by name (all of them, or ``names``), with the same limits, timeouts and retries."""
    kw = {
        "max_in_flight": in_flight,
        "timeout_s": 60.0,
        "max_retries": 3,
        "backoff_s": 0.05,
        "backoff_max_s": 1.0,
        "server_facts": False,
    } | options
    make = {
        BASELINE: lambda: OpenAIBackend("stub", urls, **kw),
        "aiohttp, gc_tuning off": lambda: OpenAIBackend("stub", urls, **kw | {"gc_tuning": False}),
        "openai SDK": lambda: SDKBackend("stub", urls, **kw),
        "openai SDK, aiohttp": lambda: SDKBackend("stub", urls, transport="aiohttp", **kw),
    }
    return {name: make[name]() for name in names or make}


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _measure(backend: Any, jobs: list, urls: list[str]) -> dict[str, Any]:
    for url in urls:
        _stub_stats(url, reset=True)
    peak = {"fds": _open_fds(), "cpu": 0.0}
    stop = threading.Event()

    def watch() -> None:
        cpu0 = time.thread_time()
        while not stop.wait(0.005):
            peak["fds"] = max(peak["fds"], _open_fds())
        peak["cpu"] = time.thread_time() - cpu0  # this watcher's own CPU (listing fds): not the client's

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    rows = {job.key: comps for job, comps in backend.generate(jobs)}
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop.set()
    watcher.join()
    cpu -= peak["cpu"]
    served = [_stub_stats(url) for url in urls]
    errors = sum(c.error is not None for comps in rows.values() for c in comps)
    return {
        "seconds": wall,
        "requests_per_s": len(jobs) / wall,
        "client_cpu_us_per_request": 1e6 * cpu / len(jobs),
        "connections": sum(s["connections"] for s in served),
        "peak_open_connections": sum(s["peak_open"] for s in served),
        "peak_client_fds": peak["fds"],
        "errors": errors,
    }


def run_client_bench(cfg: ClientBenchConfig) -> dict[str, Any]:
    """Every client on the same work against the same stub servers, taking turns, ``cfg.repeats`` times each;
    ratios of medians over the ``aiohttp`` client's."""
    jobs = _jobs(cfg)
    stubs = start_stubs(cfg.servers)
    urls = [u for _, u in stubs]
    try:
        runs: dict[str, list[dict]] = {}
        for rep in range(cfg.repeats):
            clients = list(_clients(urls, cfg.in_flight).items())
            turn = rep % len(clients)
            for name, backend in clients[turn:] + clients[:turn]:
                runs.setdefault(name, []).append(_measure(backend, jobs, urls))
    finally:
        stop_stubs(stubs)
    ways = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} | {"runs": rs}
        for name, rs in runs.items()
    }
    base = ways[BASELINE]
    cpu = "client_cpu_us_per_request"
    return {
        "config": asdict(cfg),
        "ways": ways,
        "cpu_per_request_ratio": {name: w[cpu] / base[cpu] for name, w in ways.items() if name != BASELINE},
        "requests_per_s_ratio": {
            name: w["requests_per_s"] / base["requests_per_s"] for name, w in ways.items() if name != BASELINE
        },
    }


FAILOVER_CLIENTS = (BASELINE, "openai SDK")
MIN_REQUESTS_PER_SERVER = 4


def check_failover_size(servers: int, requests: int) -> None:
    """Refuse a failover check too small to kill a server a quarter of the way through its requests."""
    if requests < MIN_REQUESTS_PER_SERVER * servers:
        raise EngineInputError(
            f"--kill-one needs at least {MIN_REQUESTS_PER_SERVER} requests per server, so that one is killed while "
            f"requests are in flight there: got {requests} requests for {servers} servers; give --requests "
            f"{MIN_REQUESTS_PER_SERVER * servers} or more (or fewer --servers)"
        )


def run_failover_check(
    servers: int = 4, requests: int = 2000, in_flight: int = 256, delay_s: float = 0.01
) -> dict[str, Any]:
    """For each client of :data:`FAILOVER_CLIENTS`: an undisturbed run, then the same run with one server killed
    (SIGKILL) while requests are in flight there; see the module docstring."""
    check_failover_size(servers, requests)
    jobs = _jobs(ClientBenchConfig(servers=servers, requests=requests, in_flight=in_flight))

    def rows(results: dict) -> list:
        return sorted(
            (k, c.sample, c.seed, c.text, tuple(c.token_ids), c.error)
            for k, cs in results.items()
            for c in cs
        )

    out: dict[str, Any] = {
        "config": {"servers": servers, "requests": requests, "in_flight": in_flight, "delay_s": delay_s}
    }
    reference: list = []
    for name in FAILOVER_CLIENTS:
        runs: dict[str, Any] = {}
        for disturbed in (False, True):
            stubs = start_stubs(servers, delay_s)
            urls = [u for _, u in stubs]
            backend = _clients(urls, in_flight, (name,), timeout_s=30, backoff_max_s=0.5)[name]
            share = Counter(backend.endpoint_for(job.route) for job in jobs)
            victim = max(range(servers), key=lambda i: share[urls[i]])
            if disturbed:  # the victim kills itself on receiving a quarter of its requests
                _stub_stats(urls[victim], kill_after=max(1, share[urls[victim]] // 4))
            results, t0 = {}, time.perf_counter()
            try:
                for job, comps in backend.generate(jobs):
                    results[job.key] = comps
            finally:
                stop_stubs(stubs)
            said = stubs[victim][0].stdout.read().split()  # "killed <requests in flight>" if it was killed
            runs["killed" if disturbed else "undisturbed"] = {
                "seconds": time.perf_counter() - t0,
                "errors": sum(c.error is not None for cs in results.values() for c in cs),
                "error_examples": sorted({c.error for cs in results.values() for c in cs if c.error})[:3],
                "retries": dict(backend.retry_counts),
                "attempts_per_endpoint": [backend.endpoint_counts[u] for u in urls],
                "killed_server_requests": share[urls[victim]],
                "in_flight_at_kill": int(said[1]) if said[:1] == ["killed"] else 0,
                "rows": rows(results),
            }
        runs["same_rows"] = runs["killed"]["rows"] == runs["undisturbed"]["rows"]
        reference = (
            reference or runs["undisturbed"]["rows"]
        )  # the first client's: the same requests, the same rows
        runs["same_rows_as_" + FAILOVER_CLIENTS[0]] = runs["undisturbed"]["rows"] == reference
        out[name] = runs
    for name in FAILOVER_CLIENTS:
        for key in ("killed", "undisturbed"):
            out[name][key]["rows"] = len(out[name][key]["rows"])
    return out


def failover_problems(failover: dict[str, Any]) -> list[str]:
    """What a failover check shows wrong (empty when it held): a kill that found nothing in flight or was not
    felt, errors, or rows that differ from the undisturbed run's."""
    problems = []
    for name in FAILOVER_CLIENTS:
        f = failover[name]
        killed = f["killed"]
        if killed["in_flight_at_kill"] < 1:
            problems.append(
                f"{name}: the server was killed with no request in flight (the check tested nothing)"
            )
        if sum(killed["retries"].get(r, 0) for r in ("connection", "timeout")) < 1:
            problems.append(f"{name}: no attempt failed, so the kill was not felt")
        if f["undisturbed"]["errors"] or killed["errors"]:
            examples = killed.get("error_examples", []) + f["undisturbed"].get("error_examples", [])
            problems.append(
                f"{name}: {killed['errors']} errors with the kill, {f['undisturbed']['errors']} without"
                + (f" (e.g. {examples[0]})" if examples else "")
            )
        if not f["same_rows"]:
            problems.append(f"{name}: the rows differ from the undisturbed run's")
        if not f["same_rows_as_" + FAILOVER_CLIENTS[0]]:
            problems.append(f"{name}: the rows differ from {FAILOVER_CLIENTS[0]}'s")
    return problems


def format_client_report(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [
        f"client benchmark: {c['requests']} requests (one sample each, {c['traces']} traces, "
        f"{c['prompt_tokens']}-token prompts), at most "
        f"{c['in_flight']} in flight over {c['servers']} loopback stub servers; medians of {c['repeats']} run(s)",
        f"{'client':<24}{'seconds':>9}{'req/s':>9}{'client CPU/req':>16}{'connections':>13}{'peak open':>11}"
        f"{'peak fds':>10}{'errors':>8}",
    ]
    for name, w in r["ways"].items():
        lines.append(
            f"{name:<24}{w['seconds']:>9.2f}{w['requests_per_s']:>9.0f}{w['client_cpu_us_per_request']:>13.0f} us"
            f"{w['connections']:>13.0f}{w['peak_open_connections']:>11.0f}{w['peak_client_fds']:>10.0f}"
            f"{w['errors']:>8.0f}"
        )
    for name, ratio in r["cpu_per_request_ratio"].items():
        lines.append(
            f"{name} / {BASELINE}: client CPU per request {ratio:.2f}x, "
            f"requests/s {r['requests_per_s_ratio'][name]:.2f}x"
        )
    if "failover" in r:
        f = r["failover"]
        for name in FAILOVER_CLIENTS:
            k = f[name]["killed"]
            lines.append(
                f"failover, {name}: one of {f['config']['servers']} servers killed (SIGKILL) with "
                f"{k['in_flight_at_kill']} requests in flight there, on receiving a quarter of its "
                f"{k['killed_server_requests']} of {f['config']['requests']} requests: {k['errors']} errors, "
                f"failed attempts {k['retries']}, attempts per endpoint {k['attempts_per_endpoint']}, "
                f"{k['seconds']:.2f} s ({f[name]['undisturbed']['seconds']:.2f} s undisturbed); same rows as the "
                f"undisturbed run: {f[name]['same_rows']}"
            )
        problems = failover_problems(f)
        lines.append("failover: " + ("; ".join(problems) if problems else "held"))
    return "\n".join(lines)


if __name__ == "__main__":  # a stub server: python -m resampling._bench_client --port 0 [--delay S]
    args = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    asyncio.run(_stub(int(args.get("--port", 0)), float(args.get("--delay", 0))))

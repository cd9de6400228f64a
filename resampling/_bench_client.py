"""``cotscope bench client``: the ``openai`` backend's own cost, today's client against the one before, in one run.

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

Today's client runs twice: as it comes (``gc_tuning`` on: the heap frozen and young objects collected less often
while requests are in flight) and with ``gc_tuning=False`` (the garbage collector as the process set it), so the
report shows how much of the ratio the collector's setting makes.

The client before (``resampling._openai_legacy``, urllib with a thread per request in flight and a connection per
request) is kept in the package only for this comparison.

Failover (``--kill-one``): the same work against stubs that take ``delay_s`` per request; one stub is killed with
SIGKILL after a quarter of the requests are answered, and the rows are compared with an undisturbed run's.
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
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ClientBenchConfig",
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
    stats = {"connections": 0, "open": 0, "peak_open": 0, "requests": 0}

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
                    if method == "POST":  # reset
                        stats.update(connections=0, peak_open=stats["open"], requests=0)
                elif path.endswith("/models"):
                    payload = {"data": [{"id": "stub", "root": "stub", "max_model_len": 4096}]}
                else:
                    stats["requests"] += 1
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


def _stub_stats(url: str, reset: bool = False) -> dict[str, int]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(
        url + "/stats", data=b"" if reset else None, method="POST" if reset else "GET"
    )
    with opener.open(req, timeout=10) as resp:
        return json.loads(resp.read())


# -- the benchmark ----------------------------------------------------------------------------------------------


@dataclass
class ClientBenchConfig:
    servers: int = 4
    requests: int = 4000
    in_flight: int = 1024
    traces: int = 200
    repeats: int = 3
    prompt_tokens: int = 64


def _jobs(cfg: ClientBenchConfig) -> list:
    import random

    from resampling._backend import GenerationJob
    from resampling._plan import SamplingParams

    rng = random.Random(0)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16)
    prompts = [tuple(rng.randrange(1000) for _ in range(cfg.prompt_tokens)) for _ in range(cfg.traces)]
    return [
        GenerationJob(f"j{i}", prompts[i % cfg.traces], (0,), (i,), params, route=f"trace-{i % cfg.traces}")
        for i in range(cfg.requests)
    ]


def _clients(urls: list[str], in_flight: int) -> dict[str, Any]:
    from resampling._openai import OpenAIBackend
    from resampling._openai_legacy import LegacyOpenAIBackend

    kw = {
        "max_in_flight": in_flight,
        "timeout_s": 60.0,
        "max_retries": 3,
        "backoff_s": 0.05,
        "backoff_max_s": 1.0,
    }
    return {
        "urllib (before)": LegacyOpenAIBackend("stub", urls, **kw),
        "aiohttp (now)": OpenAIBackend("stub", urls, server_facts=False, **kw),
        "now, gc_tuning off": OpenAIBackend("stub", urls, server_facts=False, gc_tuning=False, **kw),
    }


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
    """Both clients (today's also with ``gc_tuning`` off) on the same work against the same stub servers, taking
    turns, ``cfg.repeats`` times each."""
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
    before, now, untuned = ways["urllib (before)"], ways["aiohttp (now)"], ways["now, gc_tuning off"]
    cpu = "client_cpu_us_per_request"
    return {
        "config": asdict(cfg),
        "ways": ways,
        "cpu_per_request_ratio": now[cpu] / before[cpu],
        "cpu_per_request_ratio_gc_tuning_off": untuned[cpu] / before[cpu],
        "requests_per_s_ratio": now["requests_per_s"] / before["requests_per_s"],
    }


def run_failover_check(
    servers: int = 4, requests: int = 2000, in_flight: int = 256, delay_s: float = 0.01
) -> dict[str, Any]:
    """An undisturbed run, then the same run with one server killed (SIGKILL) a quarter of the way in."""
    from resampling._openai import OpenAIBackend

    cfg = ClientBenchConfig(servers=servers, requests=requests, in_flight=in_flight)
    jobs = _jobs(cfg)

    def rows(results: dict) -> list:
        return sorted(
            (k, c.sample, c.seed, c.text, tuple(c.token_ids), c.error)
            for k, cs in results.items()
            for c in cs
        )

    out: dict[str, Any] = {"config": {"servers": servers, "requests": requests, "in_flight": in_flight}}
    for disturbed in (False, True):
        stubs = start_stubs(servers, delay_s)
        urls = [u for _, u in stubs]
        backend = OpenAIBackend(
            "stub",
            urls,
            max_in_flight=in_flight,
            timeout_s=30,
            backoff_s=0.05,
            backoff_max_s=0.5,
            server_facts=False,
        )
        victim = stubs[0][0]
        results, t0 = {}, time.perf_counter()
        try:
            for job, comps in backend.generate(jobs):
                results[job.key] = comps
                if disturbed and len(results) == requests // 4:
                    victim.send_signal(signal.SIGKILL)
        finally:
            stop_stubs(stubs)
        key = "killed" if disturbed else "undisturbed"
        out[key] = {
            "seconds": time.perf_counter() - t0,
            "errors": sum(c.error is not None for cs in results.values() for c in cs),
            "retries": dict(backend.retry_counts),
            "attempts_per_endpoint": [backend.endpoint_counts[u] for u in urls],
            "rows": rows(results),
        }
    out["same_rows"] = out["killed"]["rows"] == out["undisturbed"]["rows"]
    for key in ("killed", "undisturbed"):
        out[key]["rows"] = len(out[key]["rows"])
    return out


def format_client_report(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [
        f"client benchmark: {c['requests']} requests (one sample each, {c['traces']} traces), at most "
        f"{c['in_flight']} in flight over {c['servers']} loopback stub servers; medians of {c['repeats']} run(s)",
        f"{'client':<20}{'seconds':>9}{'req/s':>9}{'client CPU/req':>16}{'connections':>13}{'peak open':>11}"
        f"{'peak fds':>10}{'errors':>8}",
    ]
    for name, w in r["ways"].items():
        lines.append(
            f"{name:<20}{w['seconds']:>9.2f}{w['requests_per_s']:>9.0f}{w['client_cpu_us_per_request']:>13.0f} us"
            f"{w['connections']:>13.0f}{w['peak_open_connections']:>11.0f}{w['peak_client_fds']:>10.0f}"
            f"{w['errors']:>8.0f}"
        )
    lines.append(
        f"now / before: client CPU per request {r['cpu_per_request_ratio']:.2f}x "
        f"({r['cpu_per_request_ratio_gc_tuning_off']:.2f}x with gc_tuning off), "
        f"requests/s {r['requests_per_s_ratio']:.2f}x"
    )
    if "failover" in r:
        f = r["failover"]
        lines.append(
            f"failover: one of {f['config']['servers']} servers killed (SIGKILL) after a quarter of "
            f"{f['config']['requests']} requests: {f['killed']['errors']} errors, retries {f['killed']['retries']}, "
            f"attempts per endpoint {f['killed']['attempts_per_endpoint']}; same rows as the undisturbed run: "
            f"{f['same_rows']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # a stub server: python -m resampling._bench_client --port 0 [--delay S]
    args = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    asyncio.run(_stub(int(args.get("--port", 0)), float(args.get("--delay", 0))))

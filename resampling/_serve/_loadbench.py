"""Small-request latency of ``cotscope serve`` beside heavy and abandoned heavy requests, for one or more source trees.

    python -m resampling._serve._loadbench --source OLD_TREE --source .

Each source tree (a checkout of the repository) serves the same model in its own ``cotscope serve`` process, one
after another, and meets the same four scenes; the table gives medians and the ratio of the last tree to the first:

1. idle: a small request (``n=2``, 8 tokens) on an idle server (median of 5);
2. beside a heavy request (``n=HEAVY_N``, ``HEAVY_TOKENS`` tokens) that is being decoded: three small requests sent
   together 2 s after it (their median);
3. the same three, sent 0.5 s after the client of such a heavy request closed its connection (2 s after sending);
4. 0.5 s after four abandoned requests of 4 prompts x ``HEAVY_N`` x ``HEAVY_TOKENS`` (each at ``--max-request-tokens``; the
   four fill ``--max-queued-tokens``): how many small requests got 429, and the time until one was answered.

Scene 4 runs on a fresh server. It also prints the server's resident memory after its first answer and its peak
(VmHWM). Counts, not
timings, are asserted in the tests (``tests/resampling/test_serve_hardening.py``, ``test_serve_load.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

PROMPTS = [[1, 3, 40 + k, 41, 42, 43, 4, 5] for k in range(4)]
SETTLE_S = 2.0
"""How long a heavy request is given to reach the worker before the small ones are sent (or its client leaves):
on a loaded machine half a second was sometimes not enough, and the small requests then went first."""


def request(body: dict | bytes, extra: bytes = b"") -> bytes:
    """A ``POST /v1/completions`` with ``body`` (a dict is sent as JSON) and ``extra`` header lines."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(data)
        + data
    )


def exchange(port: int, data: bytes, timeout: float = 60.0) -> bytes:
    """Send raw bytes; read the answer until the server closes or one whole response has come."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(
                data
            )  # the server may refuse before reading everything; its answer is still readable
        got = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return got
            if not chunk:
                return got
            got += chunk
            head, sep, rest = got.partition(b"\r\n\r\n")
            m = re.search(rb"content-length: *(\d+)", head, re.I)
            if sep and m and len(rest) >= int(m.group(1)):
                return got


def status_of(answer: bytes) -> int | None:
    """The HTTP status of a raw answer; None when the server closed without one."""
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def _abandon(port: int, body: dict, after_s: float) -> None:
    """Send a request and close the connection ``after_s`` later, without reading the answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request(body))
    time.sleep(after_s)
    sock.close()


def _small(port: int, timeout: float) -> tuple[int | None, float]:
    body = {"prompt": PROMPTS[0], "n": 2, "seed": 1, "max_tokens": 8}
    start = time.monotonic()
    status = status_of(exchange(port, request(body), timeout))
    return status, time.monotonic() - start


def _smalls_at_once(port: int, timeout: float, k: int = 3) -> float:
    """The median latency of ``k`` small requests sent together (sent one after another, all but the first would
    meet an idle server)."""
    with ThreadPoolExecutor(k) as pool:
        return statistics.median(t for _, t in pool.map(lambda _: _small(port, timeout), range(k)))


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(field + ":")))


def start_serve(model: str, *args: str, source: str | None = None) -> tuple[subprocess.Popen, int]:
    """``cotscope serve --model MODEL ARGS`` on a free port as its own process (from the tree ``source``, or this
    one), with one CPU thread and no request log; returns (process, port) once it serves. Kill it when done."""
    cmd = [sys.executable, "-m", "cotscope.cli", "serve", "--model", model, "--port", "0", "--device", "cpu"]
    cmd += ["--threads", "1", "--quiet", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if (
        source is not None
    ):  # `python -m` puts the working directory first on the path: run from the tree itself
        env["PYTHONPATH"] = source = os.path.abspath(source)
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=source
    )
    seen = []
    while not (m := re.search(r"127\.0\.0\.1:(\d+)/v1", line := proc.stderr.readline())):
        seen.append(line)
        if not line:
            proc.kill()
            raise RuntimeError("the server exited before it served:\n" + "".join(seen)[-2000:])
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
    return proc, int(m.group(1))


def run_source(source: str, model: str, heavy_n: int, heavy_tokens: int, timeout: float) -> dict:
    """The four scenes against ``cotscope serve`` run from ``source`` (scene 4 on a fresh server, so what scene 3
    left behind does not fill its queue)."""
    per_request = len(PROMPTS) * heavy_n * heavy_tokens
    limits = ["--max-n", str(max(heavy_n, 2)), "--max-request-tokens", str(per_request)]
    limits += ["--max-queued-tokens", str(4 * per_request)]
    out: dict = {"source": source}
    proc, port = start_serve(model, *limits, source=source)
    try:
        _small(port, timeout)  # warm-up
        out["rss_first_mib"] = vm_kib(proc.pid, "VmRSS") / 1024
        out["idle_s"] = statistics.median(_small(port, timeout)[1] for _ in range(5))

        heavy = {"prompt": PROMPTS[0], "n": heavy_n, "seed": 7, "max_tokens": heavy_tokens}
        done: dict = {}

        def run_heavy() -> None:
            start = time.monotonic()
            done["status"] = status_of(exchange(port, request(heavy), timeout))
            done["s"] = time.monotonic() - start

        t = threading.Thread(target=run_heavy)
        t.start()
        time.sleep(SETTLE_S)
        out["beside_heavy_s"] = _smalls_at_once(port, timeout)
        t.join()
        out["heavy_alone_s"] = done.get("s", float("nan")) if done.get("status") == 200 else float("nan")

        _abandon(port, heavy, SETTLE_S)
        time.sleep(0.5)
        out["after_abandoned_s"] = _smalls_at_once(port, timeout)
        out["rss_peak_mib"] = vm_kib(proc.pid, "VmHWM") / 1024
    finally:
        proc.kill()
        proc.wait()

    proc, port = start_serve(model, *limits, source=source)
    try:
        _small(port, timeout)  # warm-up
        base = vm_kib(proc.pid, "VmRSS") / 1024
        four = {"prompt": PROMPTS, "n": heavy_n, "seed": 9, "max_tokens": heavy_tokens}
        threads = [threading.Thread(target=_abandon, args=(port, four, SETTLE_S)) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        time.sleep(0.5)
        start, refused, answered = time.monotonic(), 0, None
        while time.monotonic() - start < timeout:
            status, _ = _small(port, timeout)
            if status == 200:
                answered = time.monotonic() - start
                break
            refused += status == 429
            time.sleep(1.0)  # Retry-After: 1
        out["after_four_abandoned_s"] = answered if answered is not None else float("inf")
        out["after_four_abandoned_429"] = refused
        out["rss_growth_four_mib"] = vm_kib(proc.pid, "VmHWM") / 1024 - base
    finally:
        proc.kill()
        proc.wait()
    return out


ROWS = [
    ("small request, idle server (s)", "idle_s"),
    ("small request beside a heavy one (s)", "beside_heavy_s"),
    ("the heavy request alone (s)", "heavy_alone_s"),
    ("small request after an abandoned heavy one (s)", "after_abandoned_s"),
    ("first answer after four abandoned ones (s)", "after_four_abandoned_s"),
    ("429s before it", "after_four_abandoned_429"),
    ("RSS after the first answer (MiB)", "rss_first_mib"),
    ("peak RSS, scenes 1-3 (MiB)", "rss_peak_mib"),
    ("peak RSS growth over the first answer, scene 4 (MiB)", "rss_growth_four_mib"),
]


def format_table(results: list[dict]) -> str:
    head = ["scene"] + [r["source"] for r in results] + (["last / first"] if len(results) > 1 else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key in ROWS:
        vals = [r[key] for r in results]
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in vals]
        if len(results) > 1:
            ratio = vals[-1] / vals[0] if vals[0] else float("nan")
            cells.append(f"{ratio:.2f}x")
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", action="append", required=True, help="a source tree (repeat to compare)")
    parser.add_argument("--model", default="organism:arith")
    parser.add_argument("--heavy-n", type=int, default=1024)
    parser.add_argument("--heavy-tokens", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on one answer after this long")
    args = parser.parse_args(argv)
    print(
        f"model {args.model}; heavy request: n={args.heavy_n} x {args.heavy_tokens} tokens; four abandoned: "
        f"{len(PROMPTS)} prompts x n={args.heavy_n} x {args.heavy_tokens} tokens each",
        flush=True,
    )
    results = []
    for source in args.source:
        results.append(run_source(source, args.model, args.heavy_n, args.heavy_tokens, args.timeout))
        print(json.dumps(results[-1]), flush=True)
    print(format_table(results))


if __name__ == "__main__":
    main()

"""A bounded load test of ``cotscope serve`` on loopback: 300 requests from 30 clients, valid and hostile mixed.

The server runs as its own process (``cotscope serve``), so its peak memory (VmHWM) is its own. Every valid request
must come back equal, token for token, to the ``hf`` backend's rollouts; every hostile one must be refused (a 4xx,
or the connection closed for a half-sent request); the server's peak memory must stay within
``PEAK_BOUND_MIB`` of what it held after its first answer; and it must still answer afterwards.
"""

import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from resampling import GenerationJob, SamplingParams
from resampling._hf import HFBackend

PEAK_BOUND_MIB = 300
"""Most the server's resident memory may grow over the load test (it held ~0.5 GB after its first answer here)."""

PROMPTS = [[1, 3, 40 + k, 41, 42, 43, 4, 5] for k in range(5)]


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(field + ":")))


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
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk
            head, sep, body = got.partition(b"\r\n\r\n")
            m = re.search(rb"content-length: *(\d+)", head, re.I)
            if sep and m and len(body) >= int(m.group(1)):
                return got


def request(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def valid(i: int) -> tuple[bytes, tuple[int, int]]:
    k, seed = i % len(PROMPTS), 1000 + i % 7
    body = {
        "prompt": PROMPTS[k],
        "n": 2,
        "seed": seed,
        "max_tokens": 8,
        "temperature": 1.0,
        "return_token_ids": True,
    }
    return request(json.dumps(body).encode()), (k, seed)


HOSTILE = [
    request(b'{"prompt": "hi", "max_tokens": 5, "n": 100000000}'),
    request(b'{"prompt": "hi", "max_tokens": 100000000}'),
    request(json.dumps({"prompt": "x" * 5_000_000, "max_tokens": 5}).encode()),
    request(b"{not json"),
    request(b'{"prompt": 5, "max_tokens": "many"}'),
    request(b'{"prompt": "\xff\xfe", "max_tokens": 2}'),
    request(b'{"prompt": "a\\ud800", "max_tokens": 2}'),
    request(b'{"prompt": [1, 3], "max_tokens": 2, "temperature": NaN}'),
    request(b"[" * 50_000 + b"]" * 50_000),
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n{",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"pro',  # half-sent
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("load-model")
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    cmd = [
        sys.executable,
        "-m",
        "cotscope.cli",
        "serve",
        "--model",
        str(folder),
        "--port",
        "0",
        "--device",
        "cpu",
    ]
    cmd += ["--threads", "1", "--quiet", "--read-timeout", "2", "--served-model-name", "tiny"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        seen = []
        while not (m := re.search(r"127\.0\.0\.1:(\d+)/v1", line := proc.stderr.readline())):
            seen.append(line)
            assert line, "".join(seen)[-3000:]  # the server exited before it served
        yield proc, int(m.group(1))
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_300_requests_from_30_clients_valid_and_hostile(served, tiny_model, tiny_tokenizer):
    proc, port = served
    hf = HFBackend(tiny_model, tiny_tokenizer)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=8)
    want = {}
    for k, prompt in enumerate(PROMPTS):
        jobs = [
            GenerationJob(f"{k}:{s}", tuple(prompt), (0, 1), (s, s + 1), params) for s in range(1000, 1007)
        ]
        for job, comps in hf.generate(jobs):
            want[(k, job.seeds[0])] = [c.token_ids for c in comps]
    first = exchange(port, valid(0)[0])
    assert first.startswith(b"HTTP/1.1 200"), first[:300]
    base_kib = vm_kib(proc.pid, "VmRSS")

    rng = random.Random(0)
    work = [("valid", i) for i in range(210)] + [("hostile", i % len(HOSTILE)) for i in range(90)]
    rng.shuffle(work)

    def one(item):
        kind, i = item
        if kind == "valid":
            data, key = valid(i)
            return kind, key, exchange(port, data)
        return kind, i, exchange(port, HOSTILE[i])

    start = time.monotonic()
    with ThreadPoolExecutor(30) as pool:
        results = list(pool.map(one, work))
    elapsed = time.monotonic() - start
    peak_kib = vm_kib(proc.pid, "VmHWM")

    for kind, key, answer in results:
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
        if kind == "valid":
            assert status == 200, answer[:300]
            out = json.loads(answer.partition(b"\r\n\r\n")[2])
            assert [c["token_ids"] for c in out["choices"]] == want[key]
        elif key == len(HOSTILE) - 1:  # half-sent: closed by the read timeout, or a 4xx
            assert status is None or 400 <= status < 500, answer[:300]
        else:
            assert status is not None and 400 <= status < 500, (key, answer[:300])
    print(f"server RSS {base_kib} KiB after its first answer, peak {peak_kib} KiB, {elapsed:.1f} s")
    assert (peak_kib - base_kib) / 1024 < PEAK_BOUND_MIB, (base_kib, peak_kib)
    assert elapsed < 120
    after = exchange(port, valid(3)[0])
    assert after.startswith(b"HTTP/1.1 200")

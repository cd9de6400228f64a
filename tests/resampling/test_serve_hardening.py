"""``cotscope serve`` against hostile input over loopback: admission limits, malformed bodies, slow clients."""

import json
import logging
import shutil
import socket
import subprocess
import threading
import time

import pytest

from resampling import GenerationJob, SamplingParams
from resampling._openai import OpenAIBackend
from resampling._serve import CompletionServer, ServeLimits, serve

PROMPT = [1, 3, 40, 41, 42, 43, 4, 5]


def raw_exchange(port: int, data: bytes, timeout: float = 10.0, wait_close: bool = False) -> bytes:
    """Send raw bytes to the server and read until it closes the connection or one answer has arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return got + b"<timeout>"
            if not chunk:
                return got
            got += chunk
            head, sep, body = got.partition(b"\r\n\r\n")
            if sep and not wait_close:
                length = next(
                    (
                        int(h.split(b":")[1])
                        for h in head.split(b"\r\n")
                        if h.lower().startswith(b"content-length")
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    return got


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else -1


def post_raw(port: int, body: bytes, extra: bytes = b"") -> tuple[int, dict | bytes]:
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    answer = raw_exchange(port, head + body)
    payload = answer.partition(b"\r\n\r\n")[2]
    try:
        return status_of(answer), json.loads(payload)
    except ValueError:
        return status_of(answer), answer


@pytest.fixture(scope="module")
def server(hf):
    with CompletionServer(hf, model_name="tiny", port=0) as srv:
        yield srv


def body(**fields) -> bytes:
    return json.dumps({"prompt": PROMPT, "max_tokens": 2, **fields}).encode()


# -- admission ------------------------------------------------------------------------------------------------


def test_an_n_over_the_limit_is_refused_before_any_work(server):
    server.recent_requests.clear()
    status, out = post_raw(server.port, body(n=2000, max_tokens=1))
    assert status == 400 and out["error"]["param"] == "n"
    assert "limit of 1024 (--max-n)" in out["error"]["message"]
    status, out = post_raw(server.port, body(n=100_000_000, max_tokens=5))
    assert status == 400 and "--max-n" in out["error"]["message"]
    assert not server.recent_requests  # nothing reached the model


def test_limits_on_tokens_per_request_prompts_and_prompt_length(hf):
    limits = ServeLimits(max_request_tokens=100, max_queued_tokens=100, max_prompts=2, max_prompt_tokens=16)
    with CompletionServer(hf, model_name="tiny", port=0, limits=limits) as srv:
        status, out = post_raw(srv.port, body(n=20, max_tokens=10))
        assert status == 400 and "up to 200 tokens" in out["error"]["message"]
        assert "limit of 100 (--max-request-tokens)" in out["error"]["message"]
        status, out = post_raw(srv.port, body(prompt=[PROMPT] * 3))
        assert (
            status == 400
            and "3 prompts" in out["error"]["message"]
            and "--max-prompts" in out["error"]["message"]
        )
        status, out = post_raw(srv.port, body(prompt=PROMPT * 3))
        assert status == 400 and "24 tokens, over this server's limit of 16" in out["error"]["message"]
        status, out = post_raw(srv.port, body(prompt="a" * 10_000))  # refused before it is tokenized
        assert status == 400 and "10000 characters" in out["error"]["message"]
        status, out = post_raw(srv.port, body(n=5, max_tokens=10))  # 50 tokens: within every limit
        assert status == 200 and len(out["choices"]) == 5


def test_a_huge_or_bad_content_length_is_refused_before_reading(server):
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer = raw_exchange(server.port, head + b"Content-Length: 1000000000000\r\n\r\n{")
    assert status_of(answer) == 413 and b"limit of 8388608 bytes" in answer
    answer = raw_exchange(server.port, head + b"Content-Length: abc\r\n\r\n{}")
    assert status_of(answer) == 400
    # a chunked body has no length up front: it is counted while read
    small = ServeLimits(max_body_bytes=1000)
    with CompletionServer(server.backend, model_name="tiny", port=0, limits=small) as srv:
        chunk = b"x" * 800
        data = (
            head + b"Transfer-Encoding: chunked\r\n\r\n" + (b"320\r\n" + chunk + b"\r\n") * 2 + b"0\r\n\r\n"
        )
        assert status_of(raw_exchange(srv.port, data)) == 413


def test_the_size_is_checked_before_the_key(hf):
    with CompletionServer(hf, model_name="tiny", port=0, api_key="k") as srv:
        head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n"
        assert status_of(raw_exchange(srv.port, head)) == 413


class _Gated:
    """The hf backend behind a gate: generate waits until the test opens it."""

    def __init__(self, hf):
        self.hf, self.tokenizer, self.model, self.model_id = hf, hf.tokenizer, hf.model, "tiny"
        self.gate = threading.Event()

    def generate(self, jobs):
        self.gate.wait(30)
        return self.hf.generate(jobs)


def test_queued_work_is_bounded_across_clients_with_429_and_retry_after(hf):
    gated = _Gated(hf)
    limits = ServeLimits(max_request_tokens=40, max_queued_tokens=40)
    with CompletionServer(gated, model_name="tiny", port=0, limits=limits) as srv:
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(r=post_raw(srv.port, body(n=4, max_tokens=10))))
        t.start()
        deadline = time.monotonic() + 10
        while srv.queued_tokens < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = raw_exchange(
            srv.port,
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body(max_tokens=1)), body(max_tokens=1)),
        )
        assert status_of(answer) == 429 and b"retry-after: 1" in answer.lower()
        assert b"--max-queued-tokens" in answer
        gated.gate.set()
        t.join(30)
        assert first["r"][0] == 200 and len(first["r"][1]["choices"]) == 4
        assert srv.queued_tokens == 0 and srv.stats["refused_busy"] == 1
        assert post_raw(srv.port, body(max_tokens=1))[0] == 200  # room again


# -- scheduling: a fair share per request, and cancellation ------------------------------------------------------


class _Recorder:
    """The hf backend, recording the rows of each ``generate`` call; the first call waits until the test opens the
    gate, so the test knows which work is under way."""

    def __init__(self, hf):
        self.hf, self.tokenizer, self.model, self.model_id = hf, hf.tokenizer, hf.model, "tiny"
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls: list[list[tuple[str, int]]] = []

    def generate(self, jobs):
        self.calls.append([(j.key, len(j.samples)) for j in jobs])
        self.started.set()
        self.gate.wait(30)
        yield from self.hf.generate(jobs)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


HEAVY = {"n": 64, "max_tokens": 16, "seed": 5, "return_token_ids": True}
"""64 rows x 16 tokens: 16 slices of 4 rows with ``slice_tokens=64``."""


def test_a_small_request_is_answered_before_a_heavy_one_finishes(hf):
    rec = _Recorder(hf)
    with CompletionServer(rec, model_name="tiny", port=0, slice_tokens=64) as srv:
        heavy: dict = {}
        small: dict = {}

        def send(out, **fields):
            out["r"] = post_raw(srv.port, body(**fields))
            out["at"] = time.monotonic()

        threading.Thread(target=send, args=(heavy,), kwargs=HEAVY).start()
        assert rec.started.wait(10)  # the heavy request's first slice is under way
        threading.Thread(target=send, args=(small,), kwargs={"n": 1, "max_tokens": 2}).start()
        assert wait_for(lambda: srv.queued_tokens == 64 * 16 + 2)
        rec.gate.set()
        assert wait_for(lambda: "at" in heavy and "at" in small, 60)
        assert small["r"][0] == 200 and heavy["r"][0] == 200
        assert small["at"] < heavy["at"]  # answered while the heavy request was still decoding
        rows = [[r for _, r in call] for call in rec.calls]
        assert rows[0] == [4] and sorted(rows[1]) == [1, 4]  # the next round: the small one beside one slice
        assert sum(map(sum, rows)) == 64 + 1 and max(map(max, rows)) == 4  # no round holds more than a slice
    # slicing never changes a result: the rollouts equal one hf call over all 64 samples
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16)
    job = GenerationJob("x", tuple(PROMPT), tuple(range(64)), tuple(range(5, 69)), params)
    want = [c.token_ids for c in next(iter(hf.generate([job])))[1]]
    assert [c["token_ids"] for c in heavy["r"][1]["choices"]] == want


def test_a_disconnected_request_is_cancelled_and_its_work_dropped(hf, caplog):
    caplog.set_level(logging.INFO)
    rec = _Recorder(hf)
    with CompletionServer(rec, model_name="tiny", port=0, slice_tokens=64) as srv:
        data = body(**HEAVY)
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
        )
        assert rec.started.wait(10)  # its first slice is under way
        sock.close()
        assert wait_for(
            lambda: srv.queued_tokens == 0
        )  # released at once, not when the work would have ended
        assert srv.stats["cancelled"] == 1
        rec.gate.set()
        time.sleep(0.3)
        decoded = sum(r for call in rec.calls for _, r in call)
        assert decoded == 4 and srv._batcher.dropped_rollouts == 60  # the slice under way, nothing after it
        assert post_raw(srv.port, body())[0] == 200
    lines = [r.getMessage() for r in caplog.records if "disconnected while" in r.getMessage()]
    assert len(lines) == 1 and "remaining work is dropped" in lines[0]
    assert not [r for r in caplog.records if r.exc_info]


# -- malformed bodies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"prompt": "\xff\xfe", "max_tokens": 2}', "not valid UTF-8"),
        (b'{"prompt": "a\\ud800b", "max_tokens": 2}', "lone surrogate"),
        (b'{"prompt": "ab", "stop": ["\\udfff"], "max_tokens": 2}', "lone surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"prompt": [1, 3], "max_tokens": 2, "temperature": NaN}', "NaN is not a JSON number"),
        (b'{"prompt": [1, 3], "max_tokens": 2, "temperature": Infinity}', "Infinity is not a JSON number"),
        (
            b'{"prompt": [1, 3], "max_tokens": 2, "temperature": 1e308}',
            "'temperature' must be a finite number",
        ),
        (
            b'{"prompt": [1, 3], "max_tokens": 2, "temperature": 1e400}',
            "'temperature' must be a finite number",
        ),
        (b'{"prompt": [1, 3], "max_tokens": 2, "top_p": -1e400}', "'top_p' must be a finite number"),
    ],
)
def test_hostile_bodies_get_a_400(server, raw, needle):
    status, out = post_raw(server.port, raw)
    assert status == 400, out
    assert needle in out["error"]["message"]


# -- connections ----------------------------------------------------------------------------------------------


def test_a_client_gone_mid_body_leaves_one_log_line_not_a_traceback(server, caplog):
    caplog.set_level(logging.INFO)
    before = server.stats["disconnected"]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"pro')
        time.sleep(0.2)  # the body is being read when the client goes
    deadline = time.monotonic() + 10
    while not caplog.records and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # a traceback, had there been one, is logged by now
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert server.stats["disconnected"] == before + 1
    lines = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1 and "before sending the whole request body" in lines[0], lines
    assert post_raw(server.port, body())[0] == 200


def test_half_sent_requests_time_out(hf):
    with CompletionServer(hf, model_name="tiny", port=0, limits=ServeLimits(read_timeout_s=0.5)) as srv:
        start = time.monotonic()
        half_head = raw_exchange(srv.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n", wait_close=True)
        half_body = raw_exchange(
            srv.port,
            b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"pro',
            wait_close=True,
        )
        silent = raw_exchange(srv.port, b"", wait_close=True)
        assert b"<timeout>" not in half_head + half_body + silent  # each was closed by the server
        assert time.monotonic() - start < 8
        assert post_raw(srv.port, body())[0] == 200


def test_the_listen_backlog_covers_the_client_in_flight(server):
    in_flight = OpenAIBackend("m", "http://127.0.0.1:9").max_in_flight
    assert ServeLimits().backlog >= in_flight
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed: the kernel's backlog cannot be read back")
    line = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True).stdout
    assert int(line.split()[2]) >= in_flight, line  # Send-Q of a listening socket is its backlog


def test_a_public_host_without_a_key_warns(monkeypatch, tmp_path, tiny_model, tiny_tokenizer):
    from click.testing import CliRunner

    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    monkeypatch.setattr(CompletionServer, "serve_forever", lambda self: self.stop())
    monkeypatch.delenv("COTSCOPE_SERVE_API_KEY", raising=False)
    runner = CliRunner()
    args = ["--model", str(folder), "--port", "0", "--device", "cpu", "--quiet"]
    out = runner.invoke(serve, [*args, "--host", "0.0.0.0"])
    assert out.exit_code == 0, out.output
    assert "warning: listening on 0.0.0.0 without an API key" in out.output
    monkeypatch.setenv("COTSCOPE_SERVE_API_KEY", "secret-key-1234")
    out = runner.invoke(serve, [*args, "--host", "0.0.0.0"])
    assert "warning" not in out.output and "API key required" in out.output
    assert "secret-key-1234" not in out.output
    monkeypatch.delenv("COTSCOPE_SERVE_API_KEY")
    out = runner.invoke(serve, [*args, "--host", "127.0.0.1"])
    assert out.exit_code == 0 and "warning" not in out.output


def test_an_endpoint_with_user_and_password_is_refused_in_one_line():
    from resampling import EngineInputError

    with pytest.raises(EngineInputError, match=r"user:password") as exc:
        OpenAIBackend("m", "http://user:hunter2@127.0.0.1:8000/v1")
    assert "hunter2" not in str(exc.value) and "\n" not in str(exc.value)


def test_the_client_waits_out_a_full_queue_and_every_rollout_arrives(hf, tiny_tokenizer):
    from resampling import GenerationJob, SamplingParams
    from resampling._openai import _retry_after

    assert _retry_after("2") == 2.0 and _retry_after("nonsense") is None
    assert 0 <= _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # a date in the past: now
    gated = _Gated(hf)
    limits = ServeLimits(max_request_tokens=40, max_queued_tokens=40)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=10)
    jobs = [
        GenerationJob(
            f"j{i}", tuple(PROMPT), (0, 1, 2, 3), (10 * i, 10 * i + 1, 10 * i + 2, 10 * i + 3), params
        )
        for i in range(2)
    ]
    with CompletionServer(gated, model_name="tiny", port=0, limits=limits) as srv:
        client = OpenAIBackend(
            "tiny", srv.url, max_in_flight=2, backoff_s=0.01, backoff_max_s=5, timeout_s=30
        )
        threading.Timer(0.3, gated.gate.set).start()
        start = time.monotonic()
        got = {job.key: comps for job, comps in client.generate(jobs)}
        waited = time.monotonic() - start
    assert client.retry_counts["429"] >= 1 and srv.stats["refused_busy"] >= 1
    assert waited >= 1.0  # Retry-After: 1 was honoured over the 0.01 s backoff
    want = {job.key: comps for job, comps in hf.generate(jobs)}
    for key in want:
        assert [c.token_ids for c in got[key]] == [c.token_ids for c in want[key]]

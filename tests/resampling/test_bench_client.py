"""The openai client at scale against loopback stub servers: many in flight, failover, and the client benchmark
(against the official openai SDK)."""

import pytest

from resampling._bench_client import (
    FAILOVER_CLIENTS,
    ClientBenchConfig,
    SDKBackend,
    _clients,
    _jobs,
    _stub_stats,
    failover_problems,
    format_client_report,
    run_client_bench,
    run_failover_check,
    start_stubs,
    stop_stubs,
)
from resampling._errors import EngineInputError


@pytest.mark.slow
@pytest.mark.parametrize("client", ["aiohttp", "openai SDK"])
def test_a_thousand_requests_in_flight_over_four_servers(client):
    # the backend's property, and the yardstick held to it in the same conditions (the benchmark is then fair)
    jobs = _jobs(ClientBenchConfig(requests=1200, traces=200))
    stubs = start_stubs(4, delay_s=0.5)  # slow enough that every request of a wave is in flight at once
    urls = [u for _, u in stubs]
    try:
        backend = _clients(urls, 1024, (client,))[client]
        rows = {job.key: comps for job, comps in backend.generate(jobs)}
        served = [_stub_stats(u) for u in urls]
    finally:
        stop_stubs(stubs)
    assert len(rows) == 1200 and all(c.error is None for cs in rows.values() for c in cs)
    assert sum(s["peak_open"] for s in served) >= 1000  # the servers held >= 1000 connections at once
    assert sum(s["connections"] for s in served) < len(jobs)  # kept alive: not a connection per request
    assert all(s["requests"] > 100 for s in served)  # every server took a share


def _assert_failover_held(out, requests):
    assert failover_problems(out) == []
    for client in FAILOVER_CLIENTS:
        killed = out[client]["killed"]
        assert out[client]["undisturbed"]["errors"] == 0 and killed["errors"] == 0
        assert killed["in_flight_at_kill"] >= 1  # the server died with requests in flight there ...
        assert killed["retries"].get("connection", 0) >= 1  # ... the client felt it ...
        assert out[client]["same_rows"]  # ... and still has every row, equal to the undisturbed run's
        assert out[client]["same_rows_as_aiohttp"]  # the SDK sent the same prompts and seeds
        assert killed["rows"] == requests


@pytest.mark.slow
def test_a_killed_server_moves_its_jobs_and_the_rows_stay_the_same():
    _assert_failover_held(run_failover_check(servers=3, requests=300, in_flight=64, delay_s=0.01), 300)


@pytest.mark.slow
def test_the_kill_lands_while_requests_are_in_flight_even_when_all_fit_in_one_wave():
    # `bench client --requests 200 --kill-one`: every request is in flight at once (256 allowed), so killing a
    # server after a quarter of the answers came back killed it after its work was done and tested nothing
    _assert_failover_held(run_failover_check(servers=4, requests=200), 200)


def test_a_failover_check_that_found_nothing_in_flight_or_felt_no_kill_is_a_failure():
    def ok():
        return {
            "killed": {"in_flight_at_kill": 3, "retries": {"connection": 3}, "errors": 0},
            "undisturbed": {"errors": 0},
            "same_rows": True,
            "same_rows_as_aiohttp": True,
        }

    held = {name: ok() for name in FAILOVER_CLIENTS}
    assert failover_problems(held) == []
    nothing_in_flight = {name: ok() for name in FAILOVER_CLIENTS}
    nothing_in_flight["aiohttp"]["killed"].update(in_flight_at_kill=0, retries={})
    assert len(failover_problems(nothing_in_flight)) == 2
    other_rows = {name: ok() for name in FAILOVER_CLIENTS}
    other_rows["openai SDK"]["same_rows_as_aiohttp"] = False
    assert failover_problems(other_rows) == ["openai SDK: the rows differ from aiohttp's"]


def test_kill_one_refuses_a_run_too_small_to_kill_a_server_mid_run():
    from click.testing import CliRunner

    from resampling._cli import bench

    result = CliRunner().invoke(bench, ["client", "--servers", "4", "--requests", "10", "--kill-one"])
    assert result.exit_code == 2
    assert "--kill-one needs at least 4 requests per server" in result.output
    assert "give --requests 16 or more" in result.output
    with pytest.raises(EngineInputError, match="got 15 requests for 4 servers"):
        run_failover_check(servers=4, requests=15)


@pytest.mark.slow
def test_the_client_benchmark_compares_the_backend_with_the_sdk():
    report = run_client_bench(
        ClientBenchConfig(servers=2, requests=200, in_flight=50, repeats=1, prompt_tokens=16)
    )
    ways = report["ways"]
    assert set(ways) == {"aiohttp", "aiohttp, gc_tuning off", "openai SDK", "openai SDK, aiohttp"}
    for name, way in ways.items():
        assert way["errors"] == 0, name
        assert way["connections"] < 200, name  # every client keeps connections alive
    cpu = "client_cpu_us_per_request"
    assert report["cpu_per_request_ratio"]["openai SDK"] == pytest.approx(
        ways["openai SDK"][cpu] / ways["aiohttp"][cpu]
    )
    assert set(report["cpu_per_request_ratio"]) == set(ways) - {"aiohttp"}
    text = format_client_report(report)
    assert "openai SDK / aiohttp: client CPU per request" in text and "gc_tuning off / aiohttp" in text
    assert "16-token prompts" in text


def test_the_sdk_client_is_refused_with_a_clear_error_for_an_unknown_transport():
    with pytest.raises(EngineInputError, match="transport must be 'httpx' or 'aiohttp'"):
        SDKBackend("stub", "http://127.0.0.1:1/v1", transport="requests")


def test_the_pool_keeps_no_more_idle_connections_than_requests_in_flight():
    # aiohttp's limit counts only connections in use; idle ones to other endpoints would add up past it.
    import asyncio
    import time

    import aiohttp

    from resampling._openai import _Connector

    stubs = start_stubs(4)
    urls = [u for _, u in stubs]

    def open_now() -> int:  # each stub counts the stats query's own connection too
        return sum(_stub_stats(u)["open"] - 1 for u in urls)

    async def one_at_a_time(limit: int) -> int:
        async with aiohttp.ClientSession(connector=_Connector(limit=limit, keepalive_timeout=30)) as session:
            for url in urls:  # one request to each endpoint, each released to the pool before the next
                async with session.get(f"{url}/models") as response:
                    await response.read()
            deadline = time.monotonic() + 5  # the stubs see a closed connection a moment later
            while (n := open_now()) > limit and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return n

    try:
        assert asyncio.run(one_at_a_time(2)) == 2  # two kept alive, the others closed on release
        assert asyncio.run(one_at_a_time(8)) == 4  # under the bound: every endpoint keeps its connection
    finally:
        stop_stubs(stubs)


def test_the_sdk_yardstick_fails_over_when_its_transport_reads_a_dead_socket():
    from types import SimpleNamespace

    # the SDK's transport can raise AttributeError ('NoneType' ... 'getpeername') on a socket the killed server
    # closed, instead of a connection error: that is a connection failure, so the request moves on; any other
    # AttributeError is a bug and still surfaces as an error row
    stubs = start_stubs(2)
    urls = [u for _, u in stubs]
    try:
        for message, want_errors in (
            ("'NoneType' object has no attribute 'getpeername'", False),
            ("'NoneType' object has no attribute 'text'", True),
        ):
            backend = _clients(urls, 8, ("openai SDK",), max_retries=0)["openai SDK"]
            connect = backend._connect

            def dead(message=message):
                async def create(**kw):
                    raise AttributeError(message)

                async def close():
                    return None

                return SimpleNamespace(completions=SimpleNamespace(create=create), close=close)

            def patched(connect=connect, dead=dead):
                net = connect()
                net.clients[urls[0]] = dead()
                return net

            backend._connect = patched
            jobs = _jobs(ClientBenchConfig(requests=8, traces=8))
            rows = {job.key: comps for job, comps in backend.generate(jobs)}
            errors = [c.error for cs in rows.values() for c in cs if c.error]
            assert len(rows) == 8 and bool(errors) == want_errors
            if want_errors:  # the requests routed to the patched endpoint first
                assert all("unexpected AttributeError" in e for e in errors)
            else:
                assert backend.retry_counts["connection"] >= 1
    finally:
        stop_stubs(stubs)

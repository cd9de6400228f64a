"""The openai client at scale against loopback stub servers: many in flight, failover, and the client benchmark."""

import pytest

from resampling._bench_client import (
    ClientBenchConfig,
    _jobs,
    _stub_stats,
    format_client_report,
    run_client_bench,
    run_failover_check,
    start_stubs,
    stop_stubs,
)
from resampling._openai import OpenAIBackend


@pytest.mark.slow
def test_a_thousand_requests_in_flight_over_four_servers():
    jobs = _jobs(ClientBenchConfig(requests=1200, traces=200))
    stubs = start_stubs(4, delay_s=0.5)  # slow enough that every request of a wave is in flight at once
    urls = [u for _, u in stubs]
    try:
        backend = OpenAIBackend("stub", urls, max_in_flight=1024, server_facts=False, timeout_s=60)
        rows = {job.key: comps for job, comps in backend.generate(jobs)}
        served = [_stub_stats(u) for u in urls]
    finally:
        stop_stubs(stubs)
    assert len(rows) == 1200 and all(c.error is None for cs in rows.values() for c in cs)
    assert sum(s["peak_open"] for s in served) >= 1000  # the servers held >= 1000 connections at once
    assert sum(s["connections"] for s in served) < len(jobs)  # kept alive: not a connection per request
    assert all(s["requests"] > 100 for s in served)  # every server took a share


@pytest.mark.slow
def test_a_killed_server_moves_its_jobs_and_the_rows_stay_the_same():
    out = run_failover_check(servers=3, requests=300, in_flight=64, delay_s=0.01)
    assert out["undisturbed"]["errors"] == 0 and out["killed"]["errors"] == 0
    assert out["killed"]["retries"].get("connection", 0) > 0  # the kill was felt ...
    assert out["same_rows"]  # ... and the run still has every row, equal to the undisturbed run's
    assert out["killed"]["rows"] == 300


@pytest.mark.slow
def test_the_client_benchmark_compares_both_clients():
    report = run_client_bench(ClientBenchConfig(servers=2, requests=200, in_flight=50, repeats=1))
    ways = report["ways"]
    before, now, untuned = ways["urllib (before)"], ways["aiohttp (now)"], ways["now, gc_tuning off"]
    assert before["errors"] == 0 and now["errors"] == 0 and untuned["errors"] == 0
    assert before["connections"] == 200  # the urllib client opens a connection per request
    assert now["connections"] < 200  # the aiohttp client keeps connections alive: fewer than one per request
    assert untuned["connections"] < 200
    cpu = "client_cpu_us_per_request"
    assert report["cpu_per_request_ratio_gc_tuning_off"] == pytest.approx(untuned[cpu] / before[cpu])
    assert "now / before" in format_client_report(report) and "gc_tuning off" in format_client_report(report)


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

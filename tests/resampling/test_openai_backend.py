"""The ``openai`` backend against the real ``cotscope serve`` over loopback: parity, faults, resume, routing, keys."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cot import Trace
from resampling import (
    Engine,
    EngineInputError,
    GenerationJob,
    SamplingParams,
    TracePrefixes,
    make_backend,
    run_key,
)
from resampling._hf import HFBackend
from resampling._openai import OpenAIBackend, _contiguous_runs
from resampling._serve import CompletionServer

PARAMS = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=6)
KEY = "sk-cotscope-test-7f3a9c51e2"


@pytest.fixture(scope="module")
def prefixes(tiny_trace, tiny_tokenizer):
    return TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)


@pytest.fixture(scope="module")
def hf(tiny_model, tiny_tokenizer, prefixes, tmp_path_factory):
    backend = HFBackend(tiny_model, tiny_tokenizer)
    # The first engine run in a process is slow (lazy imports in decoding and answer parsing) and, with the
    # server in this process, holds the GIL against it: get it done before any client timeout is running.
    Engine(backend, tmp_path_factory.mktemp("warm"), quiet=True).run(
        prefixes.plan(2, seed=10**6, params=PARAMS)
    )
    return backend


@pytest.fixture(scope="module")
def server(hf):
    with CompletionServer(hf, model_name="tiny", port=0, hang_s=1.0) as srv:
        yield srv


def client(url, tokenizer, **kw):
    kw = {"max_in_flight": 8, "timeout_s": 5.0, "backoff_s": 0.01, "backoff_max_s": 0.05, **kw}
    return OpenAIBackend("tiny", url, tokenizer=tokenizer, **kw)


def run_jobs(backend, jobs):
    return {job.key: comps for job, comps in backend.generate(jobs)}


def as_rows(comps):
    return [(c.sample, c.seed, c.token_ids, c.text, c.finish_reason, c.error) for c in comps]


def table(result):
    return result.rollouts.select("request_id", "sample", "seed", "text", "n_tokens", "finish_reason").rows()


# -- (a) parity -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token_prompts", [True, False])
def test_same_seeds_same_rollouts_as_hf_token_for_token(server, hf, prefixes, tiny_tokenizer, token_prompts):
    jobs = [
        GenerationJob(
            f"p{i}", tuple(prefixes.prefix_ids(i)), (0, 1, 2), (7 + 3 * i, 8 + 3 * i, 9 + 3 * i), PARAMS
        )
        for i in range(prefixes.n_positions)
    ]
    # A resumed job asks for some samples only: seeds 100 and 102 are not consecutive, so two requests.
    jobs.append(GenerationJob("gap", jobs[2].prompt_ids, (0, 2), (100, 102), PARAMS))
    server.recent_requests.clear()
    got = run_jobs(client(server.url, tiny_tokenizer, token_prompts=token_prompts), jobs)
    want = run_jobs(hf, jobs)
    assert set(got) == set(want)
    for key in want:
        assert as_rows(got[key]) == as_rows(want[key]), key
    assert len({tuple(c.token_ids) for c in want["p3"]}) > 1
    # One request with n=3 per contiguous job, one per sample of the gapped one.
    sent = sorted((r["n"], r["seed"]) for r in server.recent_requests)
    assert sent == sorted([(3, 7 + 3 * i) for i in range(prefixes.n_positions)] + [(1, 100), (1, 102)])


def test_engine_rows_equal_hf_through_serve(server, hf, prefixes, tiny_tokenizer, tmp_path):
    plan = prefixes.plan(3, seed=5, params=PARAMS, forced_answer=True)
    via_http = Engine(client(server.url, tiny_tokenizer), tmp_path / "a", quiet=True).run(plan)
    direct = Engine(hf, tmp_path / "b", quiet=True).run(plan)
    assert (via_http.rollouts["status"] == "ok").all()
    assert table(via_http) == table(direct)
    assert via_http.stats["retries"] == {}


def test_one_request_per_sample_when_use_n_is_off(server, hf, prefixes, tiny_tokenizer):
    job = GenerationJob("j", tuple(prefixes.prefix_ids(1)), (0, 1, 2, 3), (40, 41, 42, 43), PARAMS)
    server.recent_requests.clear()
    got = run_jobs(client(server.url, tiny_tokenizer, use_n=False), [job])
    assert sorted((r["n"], r["seed"]) for r in server.recent_requests) == [(1, 40), (1, 41), (1, 42), (1, 43)]
    assert as_rows(got["j"]) == as_rows(run_jobs(hf, [job])["j"])
    assert _contiguous_runs((0, 1, 2, 5, 6), (10, 11, 12, 20, 21), max_n=2) == [
        ((0, 1), (10, 11)),
        ((2,), (12,)),
        ((5, 6), (20, 21)),
    ]


def test_greedy_jobs_send_one_n1_request(server, hf, prefixes, tiny_tokenizer):
    """vLLM refuses n > 1 with temperature 0 (HTTP 400, never retried); one n=1 completion serves every sample."""
    greedy = SamplingParams(temperature=0, max_new_tokens=6)
    job = GenerationJob("g", tuple(prefixes.prefix_ids(1)), (0, 1, 2), (40, 41, 42), greedy)
    server.recent_requests.clear()
    got = run_jobs(client(server.url, tiny_tokenizer), [job])
    assert [r["n"] for r in server.recent_requests] == [1]
    assert as_rows(got["g"]) == as_rows(run_jobs(hf, [job])["g"])
    assert [(c.sample, c.seed) for c in got["g"]] == [(0, 40), (1, 41), (2, 42)]


def test_text_prompts_carry_no_second_bos(prefixes, tiny_tokenizer):
    """A hosted server puts its own BOS before a text prompt; a vLLM server is told not to (add_special_tokens)."""
    import copy

    from tokenizers import processors

    adds_bos = copy.deepcopy(tiny_tokenizer)
    bos = adds_bos.bos_token_id
    adds_bos.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    assert adds_bos("a")["input_ids"][0] == bos
    ids = tuple(prefixes.prefix_ids(1))
    assert ids[0] == bos  # the chat template starts with <s>
    job = GenerationJob("t", ids, (0,), (1,), PARAMS)
    hosted = client("http://127.0.0.1:9", adds_bos, token_prompts=False, vllm_extras=False)._payload(
        job, 1, 1
    )
    assert not hosted["prompt"].startswith("<s>") and hosted["prompt"].startswith("<|user|>")
    assert adds_bos(hosted["prompt"])["input_ids"] == list(ids)  # what the server will see
    vllm = client("http://127.0.0.1:9", adds_bos, token_prompts=False)._payload(job, 1, 1)
    assert vllm["prompt"].startswith("<s>") and vllm["add_special_tokens"] is False
    plain = client("http://127.0.0.1:9", tiny_tokenizer, token_prompts=False, vllm_extras=False)._payload(
        job, 1, 1
    )
    assert plain["prompt"].startswith("<s>")  # a tokenizer that adds no BOS: the template's own stays


# -- (b) faults -----------------------------------------------------------------------------------------------


def test_engine_run_survives_injected_faults_and_reports_retries(hf, prefixes, tiny_tokenizer, tmp_path):
    faults = "429:0.15,500:0.15,timeout:0.1,garbled:0.1,short:0.05"
    plan = prefixes.plan(4, seed=0, params=PARAMS)  # 24 rollouts, one request each (use_n=False)
    with CompletionServer(hf, model_name="tiny", port=0, hang_s=3.0) as srv:
        backend = client(srv.url, tiny_tokenizer, use_n=False, timeout_s=1.0, max_retries=40)
        srv.set_faults(faults, seed=3)
        srv.stats.clear()
        result = Engine(backend, tmp_path, quiet=True).run(plan)
        served = dict(srv.stats)
    assert result.rollouts.height == 24
    assert (result.rollouts["status"] == "ok").all(), result.rollouts["error"].to_list()
    assert table(result) == table(Engine(hf, tmp_path / "hf", quiet=True).run(plan))  # no garbage got through
    retries = result.stats["retries"]
    for reason in ("429", "500", "timeout", "malformed"):
        assert retries.get(reason, 0) > 0, retries
    # Errors are answered at once, so each is seen; a bad body comes after generation, which a slow machine may
    # not finish within the client timeout (then it counts as a timeout instead).
    assert retries["429"] == served["fault_429"] and retries["500"] == served["fault_500"]
    assert retries["malformed"] <= served["fault_garbled"] + served["fault_short"]
    assert retries["timeout"] >= served["fault_timeout"]
    assert "gave_up" not in retries


# -- (c) retries exhausted, then resume -----------------------------------------------------------------------


def test_exhausted_retries_store_errors_and_a_rerun_fills_them(hf, prefixes, tiny_tokenizer, tmp_path):
    plan = prefixes.plan(2, seed=1, params=PARAMS)
    n = plan.n_rollouts
    with CompletionServer(hf, model_name="tiny", port=0, faults="500:1.0") as srv:
        failing = client(srv.url, tiny_tokenizer, max_retries=0)
        first = Engine(failing, tmp_path, quiet=True).run(plan)
        assert first.rollouts.height == n
        assert (first.rollouts["status"] == "error").all()
        assert first.rollouts["text"].is_null().all()
        assert first.stats["errors"] == n
        assert first.stats["retries"] == {"500": len(plan), "gave_up": len(plan)}
        assert (
            "500 at http://" in first.rollouts["error"][0]
            and "retried on the next run" in first.rollouts["error"][0]
        )

        srv.set_faults(None)
        # Retries, concurrency and the endpoint list do not change the outputs, so they do not change the run key.
        other = OpenAIBackend(
            "tiny", [srv.url, "http://127.0.0.1:9/v1"], tokenizer=tiny_tokenizer, max_retries=3
        )
        assert other.identity() == failing.identity()
        second = Engine(other, tmp_path, quiet=True).run(plan)
    assert second.run_dir == first.run_dir
    assert second.stats["rollouts_cached"] == 0 and second.stats["rollouts_new"] == n
    assert (second.rollouts["status"] == "ok").all() and second.rollouts.height == n
    assert table(second) == table(Engine(hf, tmp_path / "hf", quiet=True).run(plan))
    third = Engine(other, tmp_path, quiet=True).run(plan)
    assert third.stats["rollouts_new"] == 0 and table(third) == table(second)


def test_a_partly_failed_run_resumes_only_the_missing_samples(hf, prefixes, tiny_tokenizer, tmp_path):
    plan = prefixes.plan(3, seed=2, params=PARAMS)
    with CompletionServer(hf, model_name="tiny", port=0, faults="500:0.5", fault_seed=1) as srv:
        first = Engine(client(srv.url, tiny_tokenizer, max_retries=0, use_n=False), tmp_path, quiet=True).run(
            plan
        )
        bad = int((first.rollouts["status"] == "error").sum())
        assert 0 < bad < plan.n_rollouts
        srv.set_faults(None)
        srv.recent_requests.clear()
        second = Engine(client(srv.url, tiny_tokenizer), tmp_path, quiet=True).run(plan)
        asked = sum(r["n"] for r in srv.recent_requests)
    assert second.stats["rollouts_new"] == bad == asked
    assert (second.rollouts["status"] == "ok").all()
    assert table(second) == table(Engine(hf, tmp_path / "hf", quiet=True).run(plan))


# -- (d) several endpoints ------------------------------------------------------------------------------------


def test_every_job_of_a_trace_goes_to_one_endpoint(server, hf, tiny_tokenizer, tmp_path):
    with CompletionServer(hf, model_name="tiny", port=0) as second:
        backend = client([server.url, second.url], tiny_tokenizer)
        traces, owner = [], {}
        for k in range(40):  # enough traces that both endpoints own some
            t = Trace(
                prompt=f"Compute {k} + 5 mod 10.",
                cot=f"First, {k} + 5 is {k + 5}. So the answer is {(k + 5) % 10}.",
            )
            traces.append(t)
            owner[t.id] = backend.endpoint_for(t.id)
            if len(traces) >= 4 and len(set(owner.values())) == 2:
                break
        assert set(owner.values()) == {server.url, second.url}
        plan = None
        for t in traces:
            p = TracePrefixes.build(t, tiny_tokenizer, min_chars=0).plan(2, seed=0, params=PARAMS)
            plan = p if plan is None else plan + p
        trace_of = {r.prompt_ids: r.trace_id for r in plan}
        server.recent_requests.clear()
        result = Engine(backend, tmp_path, quiet=True).run(plan)
        seen = {
            server.url: [trace_of[tuple(p)] for r in server.recent_requests for p in r["prompts"]],
            second.url: [trace_of[tuple(p)] for r in second.recent_requests for p in r["prompts"]],
        }
    for url, trace_ids in seen.items():
        assert trace_ids and all(owner[t] == url for t in trace_ids), url
    assert sum(len(v) for v in seen.values()) == len(plan)  # each request once
    assert (result.rollouts["status"] == "ok").all()
    assert table(result) == table(Engine(hf, tmp_path / "hf", quiet=True).run(plan))


def test_routing_is_stable_and_adding_an_endpoint_moves_only_what_it_wins():
    urls = ["http://a:8000/v1", "http://b:8000/v1", "http://c:8000/v1"]
    two = OpenAIBackend("m", urls[:2])
    three = OpenAIBackend("m", list(reversed(urls)))
    routes = [f"trace-{i}" for i in range(300)]
    before = {r: two.endpoint_for(r) for r in routes}
    after = {r: three.endpoint_for(r) for r in routes}
    assert before == {r: OpenAIBackend("m", urls[1::-1]).endpoint_for(r) for r in routes}  # order-independent
    moved = [r for r in routes if before[r] != after[r]]
    assert moved and all(after[r] == urls[2] for r in moved)
    assert 60 < len(moved) < 140  # about a third
    assert 110 < sum(v == urls[0] for v in before.values()) < 190


def test_an_unreachable_endpoint_fails_over_to_the_next(server, hf, tiny_tokenizer):
    dead = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    backend = client([dead, server.url], tiny_tokenizer, max_retries=2)
    route = next(f"t{i}" for i in range(100) if backend.endpoint_for(f"t{i}") == dead)
    job = GenerationJob("k", (1, 3, 40, 41), (0, 1), (5, 6), PARAMS, route=route)
    got = run_jobs(backend, [job])["k"]
    assert as_rows(got) == as_rows(run_jobs(hf, [job])["k"])
    assert backend.retry_counts["connection"] == 1


# -- (e) API keys ---------------------------------------------------------------------------------------------


class _EchoAuth(BaseHTTPRequestHandler):
    """A careless server that repeats the request's Authorization header in its error message."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"error": {"message": f"bad auth header {self.headers.get('Authorization')}"}}
        ).encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_api_key_is_sent_but_never_leaks(monkeypatch, hf, prefixes, tiny_tokenizer, tmp_path):
    monkeypatch.setenv("COTSCOPE_OPENAI_API_KEY", KEY)
    plan = prefixes.plan(1, seed=0, params=PARAMS, positions=[0, 1])
    with CompletionServer(hf, model_name="tiny", port=0, api_key=KEY) as good:
        ok = Engine(client(good.url, tiny_tokenizer), tmp_path / "ok", quiet=True).run(plan)
    assert (ok.rollouts["status"] == "ok").all()  # the key reached the server

    echo = ThreadingHTTPServer(("127.0.0.1", 0), _EchoAuth)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    try:
        with CompletionServer(hf, model_name="tiny", port=0, api_key="another-key") as wrong:
            urls = [wrong.url, f"http://127.0.0.1:{echo.server_address[1]}/v1", "http://127.0.0.1:9/v1"]
            errors, texts = [], []
            for i, url in enumerate(urls):
                backend = client(url, tiny_tokenizer, max_retries=1)
                result = Engine(backend, tmp_path / f"c{i}", quiet=True).run(plan, out=tmp_path / f"out{i}")
                assert (result.rollouts["status"] == "error").all()
                errors += result.rollouts["error"].to_list()
                texts += [repr(backend), json.dumps(backend.identity()), str(vars(backend))]
    finally:
        echo.shutdown()
        echo.server_close()
    assert any("HTTP 401" in e and "API key" in e for e in errors)
    assert any("bad auth header Bearer ***" in e for e in errors)  # the echoed key was scrubbed
    assert any("connection" in e for e in errors)
    for text in errors + texts:
        assert KEY not in text
    for path in Path(tmp_path).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_key_changed_mid_run_is_scrubbed_as_well(monkeypatch):
    # A run sends the key it read when it started; an error that echoes it is scrubbed even if the environment
    # holds another key (or none) by the time the error is written.
    monkeypatch.setenv("COTSCOPE_OPENAI_API_KEY", "sk-now-0000")
    backend = OpenAIBackend("m", "http://a:1")
    sent = {"Authorization": f"Bearer {KEY}"}
    assert backend._scrub(f"echo {KEY} and sk-now-0000", sent) == "echo *** and ***"
    monkeypatch.delenv("COTSCOPE_OPENAI_API_KEY")
    assert backend._scrub(f"echo {KEY}", sent) == "echo ***"
    assert backend._scrub(f"echo {KEY}") == f"echo {KEY}"  # nothing to scrub without the run's header


# -- identity, construction, parsing --------------------------------------------------------------------------


def test_identity_names_the_model_not_the_endpoints(tiny_tokenizer):
    a = OpenAIBackend.from_model_id("some/hub-model", base_url="http://a:1/v1", tokenizer=tiny_tokenizer)
    b = OpenAIBackend.from_model_id(
        "some/hub-model", endpoints=["http://b:2", "http://c:3/v1"], max_in_flight=3
    )
    assert a.identity()["model_id"] == "some/hub-model" and a.identity()["served_model"] == "some/hub-model"
    assert "tokenizer_sha256" in a.identity() and "tokenizer_sha256" not in b.identity()
    c = OpenAIBackend.from_model_id(
        "some/hub-model", endpoints=["http://b:2"], tokenizer=tiny_tokenizer, max_retries=0
    )
    assert a.identity() == c.identity()
    assert run_key(a.identity(), ["r"]) == run_key(c.identity(), ["r"])
    assert not any("http" in str(v) for v in a.identity().values())
    text = OpenAIBackend("some/hub-model", "http://a:1", tokenizer=tiny_tokenizer, token_prompts=False)
    assert text.identity() != OpenAIBackend("some/hub-model", "http://a:1").identity()
    assert b.endpoints == ["http://b:2/v1", "http://c:3/v1"]
    # without vLLM's explicit "off" fields a server's generation_config can change the sampling
    bare = OpenAIBackend("some/hub-model", "http://a:1", vllm_extras=False)
    assert bare.identity() != OpenAIBackend("some/hub-model", "http://a:1").identity()


def test_from_model_id_loads_a_local_model_folder(tmp_path, tiny_model, tiny_tokenizer, hf):
    folder = tmp_path / "m"
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    backend = make_backend(
        "openai", model_id=str(folder), endpoints=["http://127.0.0.1:8000/v1"], device="cpu"
    )
    ident = backend.identity()
    local = make_backend("hf", model_id=str(folder), device="cpu").identity()
    for key in ("weights_sha256", "tokenizer_sha256", "chat_template_sha256"):
        assert ident[key] == local[key]
    assert backend.tokenizer is not None and backend.stop_token_ids == [tiny_tokenizer.eos_token_id]


def test_proxies_come_from_the_environment_but_never_for_loopback(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    backend = OpenAIBackend(
        "m", ["http://127.0.0.1:8000", "https://api.example/v1", "http://internal.example:1"]
    )
    assert [backend._proxy(u) for u in backend.endpoints] == [None, "http://proxy.example:3128", None]


def test_bad_construction_gets_a_clear_error(tiny_tokenizer):
    with pytest.raises(EngineInputError, match=r"needs a server URL.*cotscope serve"):
        OpenAIBackend.from_model_id("some/model")
    with pytest.raises(EngineInputError, match="not an http"):
        OpenAIBackend("m", "127.0.0.1:8000")
    with pytest.raises(EngineInputError, match="need the model's tokenizer"):
        OpenAIBackend("m", "http://a:1", token_prompts=False)
    with pytest.raises(EngineInputError, match="listed twice"):
        OpenAIBackend("m", ["http://a:1", "http://a:1/v1"])
    with pytest.raises(EngineInputError, match="max_retries must be >= 0"):
        OpenAIBackend("m", "http://a:1", max_retries=-1)


def test_responses_are_validated(tiny_tokenizer):
    from resampling._openai import _Failure

    backend = OpenAIBackend("m", "http://a:1", tokenizer=tiny_tokenizer)
    good = {"choices": [{"index": 1, "text": "b"}, {"index": 0, "text": "a"}]}
    assert [c["text"] for c in backend._parse(json.dumps(good).encode(), 2)] == ["a", "b"]
    for raw, n, needle in [
        (b'{"choices": [', 1, "not valid JSON"),
        (b'{"object": "error"}', 1, "no 'choices'"),
        (json.dumps(good).encode(), 3, "2 choices, 3 were asked for"),
        (b'{"choices": [{"index": 0}]}', 1, "no 'text'"),
        (b'{"choices": [{"index": 0, "text": ""}, {"index": 0, "text": ""}]}', 2, "index 0"),
        (b'{"choices": [{"index": 0, "text": "", "token_ids": ["a"]}]}', 1, "token_ids"),
    ]:
        with pytest.raises(_Failure, match=needle) as exc:
            backend._parse(raw, n)
        assert exc.value.reason == "malformed"
    # vLLM returns the end-of-sequence token among the ids; it is stripped as the hf backend does.
    eos = tiny_tokenizer.eos_token_id
    c = backend._completion({"text": "ab", "token_ids": [5, 6, eos], "finish_reason": "stop"}, 0, 9)
    assert c.token_ids == [5, 6] and c.seed == 9 and c.finish_reason == "stop"
    c = backend._completion({"text": "ab", "finish_reason": "length"}, 0, 9)  # no ids: re-tokenized
    assert c.token_ids == tiny_tokenizer("ab", add_special_tokens=False)["input_ids"]


# -- the garbage collector's setting while requests are in flight ---------------------------------------------

DEAD = "http://127.0.0.1:9/v1"  # nothing listens: every request fails at once, which is all these tests need


@pytest.fixture
def gc_settings():
    """A distinctive collector setting to restore, nothing frozen; the process's own setting put back after."""
    import gc

    from resampling._openai import _gc_state

    gc.collect()  # a run another test left unfinished ends (and restores the setting) when it is collected
    assert _gc_state["runs"] == 0 and gc.get_freeze_count() == 0
    saved = gc.get_threshold()
    gc.set_threshold(701, 11, 12)
    yield gc
    gc.set_threshold(*saved)
    gc.unfreeze()


def gc_jobs(n=3):
    return [GenerationJob(f"k{i}", (1, 2), (0,), (i,), PARAMS, route="t") for i in range(n)]


def gc_now(gc):
    return gc.get_threshold(), gc.get_freeze_count() > 0


def test_gc_tuning_holds_during_a_run_and_is_restored_exactly(gc_settings):
    from resampling._openai import _GC_THRESHOLD0

    gc = gc_settings
    backend = OpenAIBackend("m", DEAD, max_retries=0, server_facts=False)
    during = [gc_now(gc) for _ in backend.generate(gc_jobs())]
    assert during == [((_GC_THRESHOLD0, 11, 12), True)] * 3  # frozen, young objects collected less often
    assert gc_now(gc) == ((701, 11, 12), False)

    untouched = OpenAIBackend("m", DEAD, max_retries=0, server_facts=False, gc_tuning=False)
    assert [gc_now(gc) for _ in untouched.generate(gc_jobs())] == [((701, 11, 12), False)] * 3


def test_gc_tuning_is_restored_after_a_run_that_fails_or_is_abandoned(gc_settings):
    gc = gc_settings
    backend = OpenAIBackend("m", DEAD, max_retries=0, server_facts=False)

    async def broken(*args):
        raise RuntimeError("a bug in the client")

    backend._send_all = broken
    with pytest.raises(RuntimeError, match="a bug in the client"):
        list(backend.generate(gc_jobs()))
    assert gc_now(gc) == ((701, 11, 12), False)

    stopped = OpenAIBackend("m", DEAD, max_retries=0, server_facts=False).generate(gc_jobs())
    next(stopped)
    assert gc.get_freeze_count() > 0
    stopped.close()  # the caller stops reading mid-run
    assert gc_now(gc) == ((701, 11, 12), False)


def test_overlapping_runs_restore_the_setting_once_the_last_ends(gc_settings):
    from resampling._openai import _GC_THRESHOLD0

    gc = gc_settings
    first = OpenAIBackend("m", DEAD, max_retries=0, server_facts=False).generate(gc_jobs())
    second = OpenAIBackend("m", DEAD, max_retries=0, server_facts=False).generate(gc_jobs())
    next(first)
    next(second)
    list(first)
    assert gc_now(gc) == ((_GC_THRESHOLD0, 11, 12), True)  # the second run is still going
    list(second)
    assert gc_now(gc) == ((701, 11, 12), False)

    # Objects frozen by someone else are left frozen: the client neither freezes more nor thaws them.
    gc.freeze()
    frozen = gc.get_freeze_count()
    for _ in OpenAIBackend("m", DEAD, max_retries=0, server_facts=False).generate(gc_jobs()):
        assert gc.get_threshold() == (_GC_THRESHOLD0, 11, 12)
    assert gc.get_threshold() == (701, 11, 12) and 0 < gc.get_freeze_count() <= frozen


def test_the_event_loop_is_uvloops_where_installed_else_asyncios(monkeypatch):
    import asyncio
    import sys

    from resampling._openai import _new_event_loop

    uvloop = pytest.importorskip("uvloop")
    loop = _new_event_loop()
    assert isinstance(loop, uvloop.Loop)
    loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    loop = _new_event_loop()
    assert isinstance(loop, asyncio.BaseEventLoop) and not isinstance(loop, uvloop.Loop)
    loop.close()
    backend = OpenAIBackend("m", DEAD, max_retries=0, server_facts=False)  # and the client still runs on it
    assert [c[0].error is not None for _, c in backend.generate(gc_jobs())] == [True] * 3


# -- the shipped organism -------------------------------------------------------------------------------------


def test_organism_through_serve_equals_the_hf_backend(tmp_path):
    import organisms
    from resampling._serve import start_server

    hf_backend = make_backend("hf", model_id="organism:arith", device="cpu")
    server = start_server(hf_backend)
    try:
        assert server.model_name == "organism:arith"
        backend = make_backend("openai", model_id="organism:arith", base_url=server.url, timeout_s=120)
        ident, local = backend.identity(), hf_backend.identity()
        for key in ("model_id", "weights_sha256", "tokenizer_sha256", "chat_template_sha256"):
            assert ident[key] == local[key], key
        example = organisms.get_task("arith").sample(0)
        trace = Trace.from_completion("<think>\n" + example.completion, prompt=example.messages)
        prefixes = TracePrefixes.build(trace, backend.tokenizer)
        plan = prefixes.plan(2, seed=0, params=SamplingParams(max_new_tokens=16), positions=[0, 1])
        via_http = Engine(backend, tmp_path / "a", quiet=True).run(plan)
        direct = Engine(hf_backend, tmp_path / "b", quiet=True).run(plan)
    finally:
        server.stop()
    assert (via_http.rollouts["status"] == "ok").all()
    assert table(via_http) == table(direct)

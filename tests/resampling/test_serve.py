"""``cotscope serve`` over loopback: the OpenAI wire format, vLLM's seed convention, validation, fault injection."""

import json
import random
import socket
import urllib.error
import urllib.request
from collections import Counter

import pytest

from resampling import EngineInputError, GenerationJob, SamplingParams
from resampling._serve import CompletionServer, FaultSpec, serve

PROMPT = [1, 3, 40, 41, 42, 43, 4, 5]


def post(url: str, body, headers: dict | None = None, timeout: float = 30.0):
    """POST JSON; returns (status, parsed JSON or the raw bytes when they are not JSON)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


def get(url: str):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


@pytest.fixture(scope="module")
def server(hf):
    with CompletionServer(hf, model_name="tiny", port=0) as srv:
        post(
            srv.url + "/completions", {"prompt": PROMPT, "max_tokens": 2}
        )  # first forward pass: lazy imports
        yield srv


def completions(server, **body):
    status, out = post(server.url + "/completions", {"model": "tiny", "prompt": PROMPT, **body})
    assert status == 200, out
    return out


def direct(hf, prompt, seeds, params):
    job = GenerationJob("x", tuple(prompt), tuple(range(len(seeds))), tuple(seeds), params)
    return next(iter(hf.generate([job])))[1]


def test_models_lists_the_served_model(server):
    status, out = get(server.url + "/models")
    assert status == 200
    assert [m["id"] for m in out["data"]] == ["tiny"]
    assert out["data"][0]["max_model_len"] == 512


def test_missing_max_tokens_is_a_400_that_names_the_field(server):
    status, out = post(server.url + "/completions", {"model": "tiny", "prompt": PROMPT, "n": 2})
    assert status == 400
    assert out["error"]["param"] == "max_tokens"
    assert "'max_tokens' is required" in out["error"]["message"]
    status, out = post(server.url + "/completions", {"prompt": PROMPT, "max_tokens": None})
    assert status == 400 and "max_tokens" in out["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"max_tokens": 4, "prompt": None}, 400, "'prompt' is required"),
        ({"max_tokens": 4, "prompt": [1, "a"]}, 400, "'prompt' has the wrong type"),
        ({"max_tokens": 4, "prompt": []}, 400, "'prompt' has the wrong type"),
        ({"max_tokens": 4, "prompt": [10**6]}, 400, "token id 1000000 is out of range"),
        ({"max_tokens": 0}, 400, "'max_tokens' must be an integer >= 1"),
        ({"max_tokens": 4, "n": 0}, 400, "'n' must be an integer >= 1"),
        ({"max_tokens": 4, "seed": "7"}, 400, "'seed' must be a 64-bit integer"),
        ({"max_tokens": 4, "top_p": 0}, 400, "top_p must be in (0, 1]"),
        ({"max_tokens": 4, "temperature": "hot"}, 400, "'temperature' must be a number"),
        ({"max_tokens": 4, "logprobs": 5}, 400, "'logprobs'=5 is not supported"),
        ({"max_tokens": 4, "echo": True}, 400, "'echo'=True is not supported"),
        ({"max_tokens": 4, "model": "gpt-4"}, 404, "this server serves `tiny`"),
        ({"max_tokens": 600}, 400, "maximum context length is 512 tokens"),
    ],
)
def test_bad_requests_get_a_clear_error(server, body, status, needle):
    got, out = post(server.url + "/completions", {"prompt": PROMPT, **body})
    assert got == status, out
    assert needle in out["error"]["message"]


def test_unknown_fields_are_refused_by_name_not_ignored(server):
    """A misspelt ``temprature`` must not sample at the default temperature 1 (OpenAI refuses it too)."""
    status, out = post(server.url + "/completions", {"prompt": PROMPT, "max_tokens": 4, "temprature": 0.0})
    assert status == 400, out
    assert (
        "'temprature'" in out["error"]["message"] and "did you mean 'temperature'" in out["error"]["message"]
    )
    assert out["error"]["param"] == "temprature"
    status, out = post(
        server.url + "/completions", {"prompt": PROMPT, "max_tokens": 4, "ignore_eos": True, "foo": 1}
    )
    assert status == 400 and "'ignore_eos', 'foo'" in out["error"]["message"]
    # fields of the OpenAI API this server does not implement get a 400 that names them, unless off
    status, out = post(
        server.url + "/completions", {"prompt": PROMPT, "max_tokens": 4, "stream_options": {"x": 1}}
    )
    assert status == 400 and "'stream_options'" in out["error"]["message"]
    # every field the OpenAI completions API defines is known: implemented, or refused by name when not off
    openai_fields = {
        "model": "tiny",
        "prompt": PROMPT,
        "best_of": 1,
        "echo": False,
        "frequency_penalty": 0.0,
        "logit_bias": None,
        "logprobs": None,
        "max_tokens": 2,
        "n": 1,
        "presence_penalty": 0.0,
        "seed": 1,
        "stop": None,
        "stream": False,
        "stream_options": None,
        "suffix": None,
        "temperature": 0.0,
        "top_p": 1.0,
        "user": "someone",
    }
    status, out = post(server.url + "/completions", openai_fields)
    assert status == 200, out


def test_bad_json_and_unknown_routes(server):
    status, out = post(server.url + "/completions", b"{not json")
    assert status == 400 and "not valid JSON" in out["error"]["message"]
    status, out = post(server.url + "/chat/completions", {"max_tokens": 1})
    assert status == 404 and "/v1/completions" in out["error"]["message"]


def test_n_and_seed_follow_the_vllm_convention_and_equal_the_hf_backend(server, hf):
    """Sample k of a request with seed s is the hf backend's rollout for seed s + k, token for token."""
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8)
    out = completions(server, n=3, seed=11, max_tokens=8, temperature=1.0, top_p=0.9, return_token_ids=True)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    ref = direct(hf, PROMPT, [11, 12, 13], params)
    assert [c["token_ids"] for c in out["choices"]] == [c.token_ids for c in ref]
    assert [c["text"] for c in out["choices"]] == [c.text for c in ref]
    assert [c["finish_reason"] for c in out["choices"]] == [c.finish_reason for c in ref]
    assert len({tuple(c["token_ids"]) for c in out["choices"]}) > 1  # the seeds matter
    # n=1 with seed 12 is sample 1 of the request above.
    one = completions(server, n=1, seed=12, max_tokens=8, temperature=1.0, top_p=0.9, return_token_ids=True)
    assert one["choices"][0]["token_ids"] == out["choices"][1]["token_ids"]
    assert out["usage"] == {
        "prompt_tokens": len(PROMPT),
        "completion_tokens": sum(len(c.token_ids) for c in ref),
        "total_tokens": len(PROMPT) + sum(len(c.token_ids) for c in ref),
    }
    assert out["object"] == "text_completion" and out["model"] == "tiny"


def test_a_list_of_prompts_gives_n_choices_per_prompt_in_order(server, hf):
    other = PROMPT[:5]
    out = completions(server, prompt=[PROMPT, other], n=2, seed=3, max_tokens=6, return_token_ids=True)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=6)
    want = [c.token_ids for c in direct(hf, PROMPT, [3, 4], params) + direct(hf, other, [3, 4], params)]
    assert [c["token_ids"] for c in out["choices"]] == want
    assert [c["prompt_token_ids"] for c in out["choices"]] == [PROMPT, PROMPT, other, other]


def test_text_prompts_are_tokenized_like_the_token_prompt(server, tiny_tokenizer):
    text = tiny_tokenizer.decode(PROMPT, skip_special_tokens=False)
    by_text = completions(
        server, prompt=text, add_special_tokens=False, seed=5, max_tokens=6, return_token_ids=True
    )
    by_ids = completions(server, seed=5, max_tokens=6, return_token_ids=True)
    assert by_text["choices"][0]["token_ids"] == by_ids["choices"][0]["token_ids"]
    assert by_text["choices"][0]["prompt_token_ids"] == PROMPT
    # token_ids only when asked for
    assert "token_ids" not in completions(server, seed=5, max_tokens=2)["choices"][0]


def test_stop_strings_cut_the_text(server, hf):
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=12)
    ref = direct(hf, PROMPT, [21], params)[0]
    assert len(ref.text) > 3
    stop = ref.text[2:4]
    out = completions(server, seed=21, max_tokens=12, stop=stop)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert stop not in choice["text"] and ref.text.startswith(choice["text"])


def test_greedy_and_top_k_minus_one(server, hf):
    greedy = direct(hf, PROMPT, [0], SamplingParams(temperature=0, max_new_tokens=6))[0]
    out = completions(server, temperature=0, top_k=-1, seed=99, max_tokens=6, return_token_ids=True)
    assert out["choices"][0]["token_ids"] == greedy.token_ids


def test_a_port_in_use_is_a_clear_error(server, hf):
    with pytest.raises(EngineInputError, match=r"cannot listen on 127\.0\.0\.1:.*pick another port"):
        CompletionServer(hf, port=server.port)


def test_api_key_is_required_when_set(hf):
    with CompletionServer(hf, model_name="tiny", port=0, api_key="sk-serve-123") as srv:
        status, out = post(srv.url + "/completions", {"prompt": PROMPT, "max_tokens": 1})
        assert status == 401 and "API key" in out["error"]["message"]
        status, _ = post(
            srv.url + "/completions", {"prompt": PROMPT, "max_tokens": 1}, {"Authorization": "Bearer no"}
        )
        assert status == 401
        status, out = post(
            srv.url + "/completions",
            {"prompt": PROMPT, "max_tokens": 1},
            {"Authorization": "Bearer sk-serve-123"},
        )
        assert status == 200 and len(out["choices"]) == 1


# -- fault injection ------------------------------------------------------------------------------------------


def test_fault_spec_parses_and_rejects_bad_specs():
    spec = FaultSpec.parse("429:0.2, 500:0.1,timeout:0.05,garbled:0.1")
    assert spec.rates == (("429", 0.2), ("500", 0.1), ("timeout", 0.05), ("garbled", 0.1))
    assert str(spec) == "429:0.2,500:0.1,timeout:0.05,garbled:0.1"
    assert not FaultSpec.parse(None) and not FaultSpec.parse("") and FaultSpec.parse({"503": 0.5})
    with pytest.raises(EngineInputError, match=r"unknown fault 'timout'.*did you mean 'timeout'"):
        FaultSpec.parse("timout:0.1")
    with pytest.raises(EngineInputError, match=r"probability 1\.5"):
        FaultSpec.parse("429:1.5")
    with pytest.raises(EngineInputError, match=r"add up to 1\.2"):
        FaultSpec.parse("429:0.6,500:0.6")
    with pytest.raises(EngineInputError, match="write KIND:P"):
        FaultSpec.parse("429")
    with pytest.raises(EngineInputError, match="'x' is not a number"):
        FaultSpec.parse("429:x")


def test_an_unknown_fault_kind_lists_every_accepted_kind():
    from click.testing import CliRunner

    from resampling._serve import FAULT_KINDS

    bad = CliRunner().invoke(serve, ["--inject-faults", "bogus:2"])
    assert bad.exit_code == 2 and "unknown fault 'bogus'" in bad.output
    listed = bad.output.split("choose one of:")[1]
    for kind in FAULT_KINDS:
        assert kind in listed, (kind, bad.output)
    assert "400-599" in listed  # any other HTTP status is accepted too
    for accepted in (*FAULT_KINDS, "418", "599"):  # every kind the list names parses
        assert FaultSpec.parse(f"{accepted}:0.5").rates == ((accepted, 0.5),)
    with pytest.raises(EngineInputError, match="unknown fault '600'"):
        FaultSpec.parse("600:0.1")


def test_fault_draws_follow_the_rates():
    spec = FaultSpec.parse("429:0.2,timeout:0.1,garbled:0.3")
    rng = random.Random(0)
    freq = Counter(spec.draw(rng) for _ in range(20000))
    for kind, p in [("429", 0.2), ("timeout", 0.1), ("garbled", 0.3), (None, 0.4)]:
        assert abs(freq[kind] / 20000 - p) < 0.015, (kind, freq)


def test_each_injected_fault_looks_like_the_real_thing(server):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 3, "n": 2, "seed": 0}
    try:
        for code in (429, 500, 503):
            server.set_faults(f"{code}:1")
            status, out = post(server.url + "/completions", body)
            assert status == code and "injected" in out["error"]["message"]
        server.set_faults("garbled:1")
        status, raw = post(server.url + "/completions", body)
        assert status == 200 and isinstance(raw, bytes)  # a body that is not JSON
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
        server.set_faults("short:1")
        status, out = post(server.url + "/completions", body)
        assert status == 200 and len(out["choices"]) == 1
        server.set_faults("reset:1")
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            post(server.url + "/completions", body)
        server.hang_s = 0.5
        server.set_faults("timeout:1")
        with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)) as exc:
            post(server.url + "/completions", body, timeout=0.1)
        if isinstance(exc.value, urllib.error.URLError):
            assert isinstance(exc.value.reason, TimeoutError)
        before = server.stats["fault_timeout"]
        assert before >= 1 and server.stats["fault_429"] >= 1 and server.stats["fault_garbled"] >= 1
    finally:
        server.set_faults(None)
    status, out = post(server.url + "/completions", body)
    assert status == 200 and len(out["choices"]) == 2


def test_serve_command_builds_a_server_from_its_options(monkeypatch, tmp_path, tiny_model, tiny_tokenizer):
    from click.testing import CliRunner

    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    seen = {}

    def serve_once(self):  # stands in for the blocking loop: one request, then stop
        self.start()
        try:
            seen["repr"] = repr(self)
            seen["first"] = post(self.url + "/completions", {"prompt": PROMPT, "max_tokens": 2})
            seen["models"] = get(self.url + "/models")[1]
        finally:
            self.stop()

    monkeypatch.setattr(CompletionServer, "serve_forever", serve_once)
    runner = CliRunner()
    result = runner.invoke(
        serve,
        [
            "--model",
            str(folder),
            "--port",
            "0",
            "--served-model-name",
            "t",
            "--inject-faults",
            "429:1",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen["first"][0] == 429
    assert seen["models"]["data"][0]["id"] == "t"
    assert "injecting faults 429:1" in result.output
    bad = runner.invoke(serve, ["--inject-faults", "429:0.5,garbage:0.1"])
    assert bad.exit_code == 2 and "unknown fault 'garbage'" in bad.output
    bad = runner.invoke(serve, ["--model", "organism:arithm"])
    assert bad.exit_code == 2 and "did you mean 'organism:arith'" in bad.output

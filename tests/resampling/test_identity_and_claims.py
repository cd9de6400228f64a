"""Cache identity never reuses rows made by other weights; warnings where batch size can change rollouts."""

import pytest
from click.testing import CliRunner

from resampling import EngineInputError, run_key
from resampling._hf import HFBackend
from resampling._openai import OpenAIBackend
from resampling._reproducibility import batch_invariance_warning
from resampling._serve import CompletionServer
from resampling._vllm import VLLMBackend


def served(hf, model_id: str):
    hf.model_id = model_id  # what /v1/models reports as root (vLLM: the folder it loaded)
    return CompletionServer(hf, model_name="tiny", port=0)


def test_other_weights_under_the_same_served_name_get_another_cache_key(hf, tiny_tokenizer):
    with served(hf, "/models/a") as a:
        ident_a = OpenAIBackend("tiny", a.url, tokenizer=tiny_tokenizer).identity()
    with served(hf, "/models/b") as b:
        ident_b = OpenAIBackend("tiny", b.url, tokenizer=tiny_tokenizer).identity()
    assert ident_a["served_root"] == "/models/a" and ident_a["served_max_model_len"] == 512
    assert ident_b["served_root"] == "/models/b"
    assert run_key(ident_a, ["t"]) != run_key(ident_b, ["t"])
    # the same weights behind another server: the same key (a run can move between servers)
    with served(hf, "/models/a") as again:
        assert OpenAIBackend("tiny", again.url, tokenizer=tiny_tokenizer).identity() == ident_a


def test_another_context_length_gets_another_cache_key(hf, tiny_model, tiny_tokenizer):
    import copy

    short_model = copy.deepcopy(tiny_model)
    short_model.config.max_position_embeddings = 256
    short = HFBackend(short_model, tiny_tokenizer)
    with served(hf, "/models/a") as a, served(short, "/models/a") as b:
        long_ident = OpenAIBackend("tiny", a.url).identity()
        short_ident = OpenAIBackend("tiny", b.url).identity()
        assert short_ident["served_max_model_len"] == 256
        assert run_key(long_ident, ["t"]) != run_key(short_ident, ["t"])
        with pytest.raises(EngineInputError, match=r"serve different models under the name 'tiny'"):
            OpenAIBackend("tiny", [a.url, b.url]).identity()


def test_a_pinned_weights_hash_enters_the_identity():
    plain = OpenAIBackend("m", "http://127.0.0.1:9", server_facts=False)
    pinned = OpenAIBackend("m", "http://127.0.0.1:9", server_facts=False, weights_sha256="abc123")
    other = OpenAIBackend("m", "http://127.0.0.1:9", server_facts=False, weights_sha256="def456")
    assert pinned.identity()["weights_sha256"] == "abc123"
    assert len({run_key(b.identity(), ["t"]) for b in (plain, pinned, other)}) == 3
    facts = {"model_id": "m", "weights_sha256": "0011"}
    with pytest.raises(EngineInputError, match="differs from the hash of the local weights"):
        OpenAIBackend("m", "http://127.0.0.1:9", model_facts=facts, weights_sha256="ffff")


def test_vllm_identity_names_the_engine_version_and_model_runner(monkeypatch, tmp_path, tiny_tokenizer):
    from test_vllm_backend import FakeLLM, _stand_in_kit

    (tmp_path / "model.safetensors").write_bytes(b"w")

    def ident():
        return VLLMBackend(FakeLLM(_stand_in_kit()), tiny_tokenizer, model_id="m", path=tmp_path).identity()

    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")
    v2 = ident()
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
    v1 = ident()
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "1")
    v1_invariant = ident()
    assert v2["model_runner"] == "v2" and v1["model_runner"] == "v1" and "vllm_version" in v1
    assert not v1["batch_invariant"] and v1_invariant["batch_invariant"]
    assert len({run_key(i, ["t"]) for i in (v1, v2, v1_invariant)}) == 3


# -- claims ---------------------------------------------------------------------------------------------------


def test_batch_invariance_warnings_say_where_the_claim_does_not_hold(monkeypatch, tiny_model, tiny_tokenizer):
    import copy

    import torch

    assert (
        batch_invariance_warning(HFBackend(tiny_model, tiny_tokenizer)) is None
    )  # CPU float32: tested to hold
    half = HFBackend(copy.deepcopy(tiny_model).to(torch.bfloat16), tiny_tokenizer)
    assert "in bfloat16" in batch_invariance_warning(half)

    class StandIn:
        name = "vllm"

    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "0")
    assert "VLLM_BATCH_INVARIANT=1" in batch_invariance_warning(StandIn())
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "1")
    assert batch_invariance_warning(StandIn()) is None
    assert "unless the server is batch-invariant" in batch_invariance_warning(
        OpenAIBackend("m", "http://a:1")
    )


def test_resample_and_importance_warn_and_read_the_trace_before_the_model(monkeypatch, tmp_path, tiny_trace):
    import anchors._main as anchors_main
    import resampling._cli as cli

    loaded = []

    def no_model(*args, **kwargs):
        loaded.append(args)
        raise RuntimeError("the model was loaded")

    monkeypatch.setattr(anchors_main, "make_backend_from_options", no_model)
    bad = tmp_path / "bad.json"
    bad.write_text('{"prompt": "x"')
    result = CliRunner().invoke(anchors_main.importance, ["--trace", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and not loaded, result.output
    assert "the model was loaded" not in str(result.exception)

    class Half:  # a backend where the claim does not hold: the warning comes before any work
        name = "openai"

    monkeypatch.setattr(cli, "make_backend_from_options", lambda *a, **k: Half())
    trace = tiny_trace.save(tmp_path / "trace.json")
    result = CliRunner().invoke(cli.resample, ["--trace", str(trace), "--out", str(tmp_path / "r")])
    assert "warning: the openai backend" in result.output

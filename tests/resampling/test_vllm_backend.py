"""The vllm backend without an engine: request construction, output mapping, input errors.

Tests run twice where vLLM imports: with small stand-ins for vLLM's classes (everywhere), and with vLLM's real
``SamplingParams``, ``TokensPrompt``, ``RequestOutput`` and ``CompletionOutput`` (marked ``vllm``). The
engine itself (``vllm.LLM``) needs a CUDA GPU; the one test that starts it is marked ``gpu`` as well.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resampling import EngineInputError, GenerationJob, SamplingParams, make_backend
from resampling._hf import HFBackend
from resampling._model import model_identity
from resampling._vllm import (
    INSTALL_COMMAND,
    RequestSlot,
    VLLMBackend,
    VLLMNotInstalledError,
    build_requests,
    map_outputs,
    seed_runs,
)

EOS = 250

# -- stand-ins with the signatures of vLLM 0.32's classes ---------------------------------------------------------


@dataclass
class StandInSamplingParams:
    n: int = 1
    seed: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int | None = 16
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None

    def __post_init__(self) -> None:
        if self.temperature == 0 and self.n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")


def stand_in_tokens_prompt(prompt_token_ids: list[int]) -> dict:
    return {"prompt_token_ids": prompt_token_ids}


@dataclass
class StandInCompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class StandInRequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[Any]
    finished: bool


def _kit(name, sampling_params, tokens_prompt, completion_output, request_output) -> SimpleNamespace:
    """The classes the backend builds requests from and reads results into, under vLLM's names."""
    return SimpleNamespace(
        name=name,
        SamplingParams=sampling_params,
        TokensPrompt=tokens_prompt,
        CompletionOutput=completion_output,
        RequestOutput=request_output,
    )


def _stand_in_kit() -> SimpleNamespace:
    return _kit(
        "stand-in",
        StandInSamplingParams,
        stand_in_tokens_prompt,
        StandInCompletionOutput,
        StandInRequestOutput,
    )


def _vllm_kit() -> SimpleNamespace:
    from vllm import SamplingParams as VSamplingParams
    from vllm import TokensPrompt
    from vllm.outputs import CompletionOutput, RequestOutput

    return _kit("vllm", VSamplingParams, TokensPrompt, CompletionOutput, RequestOutput)


@pytest.fixture(params=["stand-in", pytest.param("vllm", marks=pytest.mark.vllm)])
def kit(request) -> SimpleNamespace:
    return _stand_in_kit() if request.param == "stand-in" else _vllm_kit()


def classes(kit) -> dict:
    return {"sampling_params_cls": kit.SamplingParams, "tokens_prompt_cls": kit.TokensPrompt}


def completion_out(kit, index, token_ids, finish_reason="stop", stop_reason=None, text=None):
    text = " ".join(map(str, token_ids)) if text is None else text
    return kit.CompletionOutput(
        index=index,
        text=text,
        token_ids=list(token_ids),
        cumulative_logprob=None,
        logprobs=None,
        finish_reason=finish_reason,
        stop_reason=stop_reason,
    )


def request_out(kit, request_id, prompt_ids, outputs):
    return kit.RequestOutput(
        request_id=str(request_id),
        prompt=None,
        prompt_token_ids=list(prompt_ids),
        prompt_logprobs=None,
        outputs=outputs,
        finished=True,
    )


@dataclass
class FakeLLM:
    """``vllm.LLM.generate`` in miniature: child k of a request with seed s samples with seed s + k.

    A sampled completion is ``[seed, len(prompt), EOS]`` (so a test can read back the seed each sample was drawn
    with); a greedy one is ``[prompt[-1], len(prompt), EOS]``. Children come back in reverse order (vLLM finishes
    them in any order; ``.index`` says which is which).
    """

    kit: SimpleNamespace
    calls: list = field(default_factory=list)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append(
            (list(prompts), list(sampling_params) if isinstance(sampling_params, list) else sampling_params)
        )
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        outs = []
        for r, (prompt, sp) in enumerate(zip(prompts, params, strict=True)):
            ids = list(prompt["prompt_token_ids"])
            children = []
            for k in range(sp.n):
                first = ids[-1] if sp.temperature == 0 else sp.seed + k
                children.append(completion_out(self.kit, k, [first, len(ids), EOS]))
            outs.append(request_out(self.kit, r, ids, children[::-1]))
        return outs


def job(key, prompt, samples, seeds, **params) -> GenerationJob:
    params.setdefault("max_new_tokens", 32)
    return GenerationJob(key, tuple(prompt), tuple(samples), tuple(seeds), SamplingParams(**params))


# -- request construction -----------------------------------------------------------------------------------------


def test_contiguous_seeds_make_one_request_with_n(kit):
    j = job("a", [1, 5, 6, 7], range(5), range(10, 15), temperature=0.6, top_p=0.95, top_k=20, stop=("\n\n",))
    prompts, params, index = build_requests([j], stop_token_ids=[EOS, 7], **classes(kit))
    assert len(prompts) == len(params) == 1
    assert prompts[0]["prompt_token_ids"] == [1, 5, 6, 7]
    sp = params[0]
    assert (sp.n, sp.seed, sp.max_tokens, sp.top_k) == (5, 10, 32, 20)
    assert sp.temperature == pytest.approx(0.6) and sp.top_p == pytest.approx(0.95)
    assert list(sp.stop) == ["\n\n"] and list(sp.stop_token_ids) == [EOS, 7]
    assert index == [RequestSlot(0, (0, 1, 2, 3, 4), False)]


def test_non_contiguous_seeds_are_split_into_contiguous_runs(kit):
    # A resumed run asking for samples 2, 4, 5 and 9 of a request whose sample k has seed 10 + k.
    j = job("a", [1, 5], (2, 4, 5, 9), (12, 14, 15, 19), temperature=1.0)
    prompts, params, index = build_requests([j], **classes(kit))
    assert [(sp.seed, sp.n) for sp in params] == [(12, 1), (14, 2), (19, 1)]
    assert [slot.positions for slot in index] == [(0,), (1, 2), (3,)]
    assert all(p["prompt_token_ids"] == [1, 5] for p in prompts)


def test_top_k_off_is_zero_and_max_tokens_is_explicit(kit):
    j = job("a", [1], range(2), range(2), top_k=0, max_new_tokens=4096)
    (sp,) = build_requests([j], **classes(kit))[1]
    assert sp.top_k == 0 and sp.max_tokens == 4096


def test_greedy_is_one_request_serving_every_sample(kit):
    j = job("g", [3, 4, 9], range(3), (7, 8, 9), temperature=0)
    prompts, params, index = build_requests([j], **classes(kit))
    assert [sp.n for sp in params] == [1] and index == [RequestSlot(0, (0, 1, 2), True)]
    outs = FakeLLM(kit).generate(prompts, params)
    [(got_job, comps)] = map_outputs([j], index, outs)
    assert got_job is j
    assert [(c.sample, c.seed) for c in comps] == [(0, 7), (1, 8), (2, 9)]
    assert all(c.token_ids == [9, 3] for c in comps)
    if kit.name == "vllm":
        with pytest.raises(Exception, match="greedy"):
            kit.SamplingParams(n=2, temperature=0.0)


@pytest.mark.vllm
def test_parameters_vllm_rejects_are_an_input_error_naming_the_job():
    kit = _vllm_kit()
    with pytest.raises(EngineInputError, match=r"job hot.*temperature"):
        build_requests([job("hot", [1], [0], [0], temperature=2.5)], **classes(kit))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=20, unique=True),
    st.integers(0, 2**40),
)
def test_requests_cover_every_sample_once_with_its_own_seed(samples, base):
    samples = sorted(samples)
    seeds = [base + s for s in samples]
    j = job("p", [1, 2], samples, seeds, temperature=0.7)
    _, params, index = build_requests([j], **classes(_stand_in_kit()))
    covered = [p for slot in index for p in slot.positions]
    assert sorted(covered) == list(range(len(samples)))
    for sp, slot in zip(params, index, strict=True):
        assert sp.n == len(slot.positions)
        # vLLM gives child k the seed sp.seed + k: it must be the job's seed for that sample.
        assert [sp.seed + k for k in range(sp.n)] == [seeds[p] for p in slot.positions]
    # As few requests as the seeds allow: one per break in contiguity.
    breaks = sum(b - a != 1 for a, b in itertools.pairwise(samples))
    assert len(params) == breaks + 1
    assert seed_runs(seeds) == [(slot.positions[0], len(slot.positions)) for slot in index]


def test_seed_runs():
    assert seed_runs([5, 6, 9]) == [(0, 2), (2, 1)]
    assert seed_runs([3]) == [(0, 1)]
    assert seed_runs([4, 3]) == [(0, 1), (1, 1)]
    assert seed_runs([]) == []


# -- output mapping -----------------------------------------------------------------------------------------------


def test_outputs_map_to_samples_by_child_index_and_finish_reason(kit):
    j = job("a", [1, 2, 3], (0, 1, 2, 3, 4), (20, 21, 22, 23, 24), temperature=1.0, stop=("##",))
    index = build_requests([j], stop_token_ids=[EOS, 50], **classes(kit))[2]
    children = [
        completion_out(kit, 4, [40, 41], "abort"),  # aborted: a failure, retried on resume
        completion_out(kit, 3, [30, 31, 32], "length", text="thirty"),
        completion_out(kit, 2, [20, 21, 50], "stop", stop_reason=50, text="twenty"),  # a stop token id
        completion_out(kit, 1, [10, 11, 12], "stop", stop_reason="##", text="ten"),  # a stop string
        completion_out(kit, 0, [5, 6, EOS], "stop", stop_reason=None, text="five six"),  # end of sequence
    ]
    [(_, comps)] = map_outputs([j], index, [request_out(kit, 0, [1, 2, 3], children)])
    assert [(c.sample, c.seed) for c in comps] == [(0, 20), (1, 21), (2, 22), (3, 23), (4, 24)]
    assert [c.token_ids for c in comps[:4]] == [[5, 6], [10, 11, 12], [20, 21], [30, 31, 32]]
    assert [c.text for c in comps[:4]] == ["five six", "ten", "twenty", "thirty"]
    assert [c.finish_reason for c in comps[:4]] == ["stop", "stop", "stop", "length"]
    assert all(c.error is None for c in comps[:4])
    assert comps[4].error is not None and "abort" in comps[4].error
    assert comps[4].token_ids == [] and comps[4].finish_reason is None


def test_outputs_of_split_requests_come_back_in_sample_order(kit):
    jobs = [
        job("a", [1, 2], (0, 1, 2), (0, 1, 2), temperature=1.0),
        job("b", [1, 2, 3], (1, 3, 4), (101, 103, 104), temperature=1.0),
    ]
    prompts, params, index = build_requests(jobs, **classes(kit))
    assert len(prompts) == 3
    result = map_outputs(jobs, index, FakeLLM(kit).generate(prompts, params))
    assert [jb.key for jb, _ in result] == ["a", "b"]
    for jb, comps in result:
        assert [c.sample for c in comps] == list(jb.samples)
        assert [c.token_ids[0] for c in comps] == list(jb.seeds)  # drawn with the sample's own seed
        assert all(c.token_ids[1] == len(jb.prompt_ids) for c in comps)  # from the job's own prompt


def test_output_count_mismatch_is_an_error(kit):
    j = job("a", [1], (0,), (0,))
    index = build_requests([j], **classes(kit))[2]
    with pytest.raises(RuntimeError, match="0 outputs for 1 requests"):
        map_outputs([j], index, [])


def test_generate_submits_every_job_in_one_call(kit):
    llm = FakeLLM(kit)
    backend = VLLMBackend(llm, tokenizer=None, stop_token_ids=[EOS], **classes(kit))
    jobs = [job(f"p{i}", list(range(1, 3 + i)), range(4), range(100 + 4 * i, 104 + 4 * i)) for i in range(3)]
    jobs.append(job("resumed", [1, 2, 3], (1, 3), (201, 203)))
    jobs.append(job("greedy", [1, 9], range(2), (0, 1), temperature=0))
    got = dict((jb.key, comps) for jb, comps in backend.generate(jobs))
    assert len(llm.calls) == 1
    prompts, params = llm.calls[0]
    assert len(prompts) == len(params) == 3 + 2 + 1
    assert set(got) == {jb.key for jb in jobs}
    for jb in jobs:
        comps = got[jb.key]
        assert [c.sample for c in comps] == list(jb.samples) and [c.seed for c in comps] == list(jb.seeds)
        assert all(EOS not in c.token_ids and c.finish_reason == "stop" for c in comps)
    assert [c.token_ids[0] for c in got["p2"]] == [108, 109, 110, 111]
    assert [c.token_ids for c in got["greedy"]] == [[9, 2], [9, 2]]
    assert backend.stats["requests"] == 6 and backend.stats["generate_calls"] == 1


# -- identity -----------------------------------------------------------------------------------------------------


def test_identity_hashes_the_safetensors_files_without_loading_weights(tmp_path, tiny_model, tiny_tokenizer):
    (tmp_path / "model.safetensors").write_bytes(b"weights-v1")
    backend = VLLMBackend(FakeLLM(_stand_in_kit()), tiny_tokenizer, model_id="m", path=tmp_path)
    ident = backend.identity()
    assert ident["backend"] == "vllm" and ident["model_id"] == "m"
    h = hashlib.sha256()
    h.update(b"model.safetensors")
    h.update(hashlib.sha256(b"weights-v1").hexdigest().encode())
    assert ident["weights_sha256"] == h.hexdigest()[:16]
    # The same hashes as the hf backend's identity of the same folder and tokenizer.
    hf = model_identity("m", tiny_model, tiny_tokenizer, tmp_path)
    assert {k: ident[k] for k in hf} == hf
    (tmp_path / "model.safetensors").write_bytes(b"weights-v2, longer")
    changed = VLLMBackend(FakeLLM(_stand_in_kit()), tiny_tokenizer, model_id="m", path=tmp_path).identity()
    assert changed["weights_sha256"] != ident["weights_sha256"]
    assert changed["tokenizer_sha256"] == ident["tokenizer_sha256"]

    # engine settings that change what is sampled enter the identity; scheduling settings do not
    def with_settings(**settings):
        return VLLMBackend(
            FakeLLM(_stand_in_kit()), tiny_tokenizer, model_id="m", path=tmp_path, engine_settings=settings
        ).identity()

    base = with_settings(gpu_memory_utilization=0.9)
    assert base == with_settings(gpu_memory_utilization=0.5, max_num_seqs=64) == changed
    assert with_settings(kv_cache_dtype="fp8") != base
    assert with_settings(max_model_len=4096) != base


def test_identity_needs_safetensors_files(tmp_path, tiny_tokenizer):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    backend = VLLMBackend(FakeLLM(_stand_in_kit()), tiny_tokenizer, model_id="m", path=tmp_path)
    with pytest.raises(EngineInputError, match="safetensors"):
        backend.identity()


def test_stop_token_ids_default_to_every_eos_id(tmp_path, tiny_tokenizer):
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [2, 6]}')
    backend = VLLMBackend(FakeLLM(_stand_in_kit()), tiny_tokenizer, path=tmp_path)
    assert tiny_tokenizer.eos_token_id == 2
    assert backend.stop_token_ids == [2, 6]


# -- errors before any work ---------------------------------------------------------------------------------------


def test_missing_max_new_tokens_fails_before_any_request(kit):
    llm = FakeLLM(kit)
    backend = VLLMBackend(llm, tokenizer=None, stop_token_ids=[EOS], **classes(kit))
    jobs = [job("ok", [1], (0,), (0,)), job("bad", [1, 2], (0,), (0,), max_new_tokens=None)]
    with pytest.raises(
        EngineInputError, match=r"max_new_tokens is required.*job bad.*max_new_tokens="
    ) as err:
        list(backend.generate(jobs))
    assert "16 tokens" in str(err.value)
    assert llm.calls == []
    with pytest.raises(EngineInputError, match="max_new_tokens"):
        build_requests(jobs[1:], **classes(kit))


def test_a_prompt_longer_than_the_engine_allows_fails_before_any_request(kit):
    llm = FakeLLM(kit)
    llm.model_config = SimpleNamespace(max_model_len=4)  # as vllm.LLM.model_config
    backend = VLLMBackend(llm, tokenizer=None, stop_token_ids=[EOS], **classes(kit))
    with pytest.raises(EngineInputError, match="4 tokens does not fit the engine's max_model_len=4"):
        list(backend.generate([job("ok", [1, 2, 3], (0,), (0,)), job("long", [1, 2, 3, 4], (0,), (0,))]))
    assert llm.calls == []
    assert len(list(backend.generate([job("ok", [1, 2, 3], (0,), (0,))]))) == 1


def test_seeds_must_match_samples(kit):
    bad = GenerationJob("s", (1,), (0, 1), (0,), SamplingParams(max_new_tokens=4))
    with pytest.raises(EngineInputError, match="2 samples but 1 seeds"):
        build_requests([bad], **classes(kit))


def test_missing_vllm_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as if it were not installed
    with pytest.raises(ImportError) as err:
        make_backend("vllm", model_id="organism:arith")
    assert isinstance(err.value, VLLMNotInstalledError) and isinstance(err.value, EngineInputError)
    assert "not installed" in str(err.value)
    assert (
        str(err.value).endswith("pip install 'cotscope[vllm]'")
        and INSTALL_COMMAND == "pip install 'cotscope[vllm]'"
    )
    # The pure builders need the classes too, and say the same.
    with pytest.raises(VLLMNotInstalledError, match=r"pip install 'cotscope\[vllm\]'$"):
        build_requests([job("a", [1], (0,), (0,))])


def test_a_broken_vllm_install_also_names_the_install_command(monkeypatch):
    import builtins

    from resampling._vllm import import_vllm

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "vllm":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(VLLMNotInstalledError) as err:
        import_vllm()
    assert "installed but does not import (RuntimeError: operator torchvision::nms" in str(err.value)
    assert str(err.value).endswith(INSTALL_COMMAND)


def test_no_gpu_is_a_clear_error_before_the_engine_starts(monkeypatch):
    import resampling._vllm as vllm_backend

    started = []
    fake_vllm = SimpleNamespace(LLM=lambda **kw: started.append(kw))
    monkeypatch.setattr(vllm_backend, "import_vllm", lambda: fake_vllm)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineInputError) as err:
        make_backend("vllm", model_id="organism:arith")
    message = str(err.value)
    assert "needs a CUDA GPU" in message and "--backend hf" in message
    assert started == []


def test_unknown_organism_fails_before_the_engine_starts(monkeypatch):
    import resampling._vllm as vllm_backend

    started = []
    monkeypatch.setattr(
        vllm_backend, "import_vllm", lambda: SimpleNamespace(LLM=lambda **kw: started.append(kw))
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(EngineInputError, match=r"unknown organism 'arit'.*did you mean 'arith'"):
        make_backend("vllm", model_id="organism:arit")
    assert started == []


# -- the engine (needs a CUDA GPU) --------------------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.gpu
@pytest.mark.slow
def test_engine_on_gpu_matches_the_hf_backend(tmp_path, tiny_tokenizer):
    from conftest import build_model

    model = build_model(
        tiny_tokenizer, hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1
    )
    model.save_pretrained(tmp_path, safe_serialization=True)
    tiny_tokenizer.save_pretrained(tmp_path)
    backend = VLLMBackend.from_model_id(
        str(tmp_path), dtype="float32", gpu_memory_utilization=0.2, enforce_eager=True, max_model_len=512
    )
    prompt = tiny_tokenizer("First, 7 + 5 is 12. Then 12 * 3 is 36.")["input_ids"]
    prefixes = [tuple(prompt[:k]) for k in range(4, len(prompt) + 1, 3)]
    greedy = SamplingParams(temperature=0, max_new_tokens=12)
    jobs = [GenerationJob(f"p{i}", p, (0,), (0,), greedy) for i, p in enumerate(prefixes)]
    ours = dict(backend.generate(jobs))
    ref = dict(HFBackend(model, tiny_tokenizer).generate(jobs))
    for jb in jobs:
        assert ours[jb][0].token_ids == ref[jb][0].token_ids, jb.key
    sampled = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=8)
    a = dict(backend.generate([GenerationJob("s", prefixes[-1], (0, 1, 2, 3), (0, 1, 2, 3), sampled)]))
    b = dict(backend.generate([GenerationJob("s", prefixes[-1], (1, 3), (1, 3), sampled)]))
    (comps_a,), (comps_b,) = a.values(), b.values()
    assert [c.token_ids for c in comps_b] == [comps_a[1].token_ids, comps_a[3].token_ids]
    assert backend.identity()["backend"] == "vllm"


def test_generate_runs_in_chunks_and_yields_each_chunk_before_the_next(kit):
    """Rollouts are handed back chunk by chunk, so the engine stores them as they finish; samples do not change."""
    jobs = [job(f"p{i}", list(range(1, 3 + i)), range(4), range(100 + 4 * i, 104 + 4 * i)) for i in range(5)]
    whole = dict(
        (jb.key, comps)
        for jb, comps in VLLMBackend(FakeLLM(kit), None, stop_token_ids=[EOS], **classes(kit)).generate(jobs)
    )
    llm = FakeLLM(kit)
    backend = VLLMBackend(llm, None, stop_token_ids=[EOS], chunk_rollouts=8, **classes(kit))
    seen = []
    for jb, comps in backend.generate(jobs):
        seen.append((jb.key, len(llm.calls)))
        assert comps == whole[jb.key]
    # 8 rollouts a chunk: jobs (p0, p1), (p2, p3), (p4); each yielded before the next chunk is submitted
    assert seen == [("p0", 1), ("p1", 1), ("p2", 2), ("p3", 2), ("p4", 3)]
    assert backend.stats["generate_calls"] == 3
    with pytest.raises(EngineInputError, match="chunk_rollouts"):
        VLLMBackend(FakeLLM(kit), None, stop_token_ids=[EOS], chunk_rollouts=0, **classes(kit))

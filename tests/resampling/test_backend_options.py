"""``--backend-option KEY=VALUE``: parsed, checked against the backend, and passed to its constructor."""

from __future__ import annotations

import click
import pytest

import resampling._backend as backend_module
from resampling._cli import make_backend_from_options, parse_backend_options
from resampling._openai import OpenAIBackend


def test_values_are_json_where_they_are_json():
    got = parse_backend_options(
        "vllm",
        [
            "max_model_len=8192",
            "gpu-memory-utilization=0.8",
            "enforce_eager=true",
            "kv_cache_dtype=fp8",
            "x=null",
        ],
    )
    assert got == {
        "max_model_len": 8192,
        "gpu_memory_utilization": 0.8,
        "enforce_eager": True,
        "kv_cache_dtype": "fp8",
        "x": None,
    }


@pytest.mark.parametrize(
    ("backend", "items", "needle"),
    [
        ("vllm", ["max_model_len"], "is not KEY=VALUE"),
        ("vllm", ["=3"], "is not KEY=VALUE"),
        ("hf", ["batch_size=4"], "hf backend takes no extra options"),
        ("openai", ["max_retry=2"], "no option max_retry; choose from:"),
    ],
)
def test_bad_options_name_the_fix(backend, items, needle):
    with pytest.raises(click.BadParameter, match=needle):
        parse_backend_options(backend, items)


def test_openai_settings_reach_the_backend():
    be = make_backend_from_options(
        "organism:arith",
        "openai",
        ("http://127.0.0.1:9",),
        512,
        None,
        ("max_retries=0", "timeout_s=2.5", "use_n=false", "max_in_flight=3", "served_model_name=arith"),
    )
    assert isinstance(be, OpenAIBackend)
    assert (be.max_retries, be.timeout_s, be.use_n, be.max_in_flight, be.model) == (0, 2.5, False, 3, "arith")


def test_vllm_options_go_to_the_engine_constructor(monkeypatch):
    seen = {}
    monkeypatch.setitem(backend_module.BACKENDS, "vllm", lambda **kw: seen.update(kw) or "engine")
    got = make_backend_from_options(
        "organism:arith", "vllm", (), 512, None, ("tensor_parallel_size=2", "max_model_len=4096")
    )
    assert got == "engine"
    assert seen == {"model_id": "organism:arith", "tensor_parallel_size": 2, "max_model_len": 4096}

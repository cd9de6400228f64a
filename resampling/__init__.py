"""The resampling engine: exact token prefixes, backends (hf, vllm, openai), a resumable Parquet cache.

>>> from resampling import Engine, TracePrefixes, SamplingParams, make_backend   # doctest: +SKIP
>>> backend = make_backend("hf", model_id="organism:arith")
>>> prefixes = TracePrefixes.build(trace, backend.tokenizer)
>>> result = Engine(backend, cache_dir="runs/.cache").run(prefixes.plan(n=20, seed=0), out="runs/demo")
"""

from resampling._backend import BACKENDS, Backend, Completion, GenerationJob, eos_token_ids, make_backend
from resampling._cli import backend_options, make_backend_from_options, warn_batch_invariance
from resampling._engine import Engine, RunResult, rollout_row, traces_truths
from resampling._errors import EngineInputError
from resampling._health import RunFailedError, RunHealth, run_health
from resampling._model import DEFAULT_MODEL, LoadedModel, load_model, model_identity
from resampling._plan import Plan, SamplingParams, SamplingRequest, request_seed
from resampling._prefix import DEFAULT_LEAD, DEFAULT_MIN_CHARS, SEED_STRIDE, TracePrefixes, answer_cue
from resampling._sample import sample_traces
from resampling._store import ROLLOUT_SCHEMA, RunStore, atomic_write_parquet, run_key
from resampling._synthetic import deepseek_tokenizer, synthetic_model

__all__ = [
    "BACKENDS",
    "DEFAULT_LEAD",
    "DEFAULT_MIN_CHARS",
    "DEFAULT_MODEL",
    "ROLLOUT_SCHEMA",
    "SEED_STRIDE",
    "Backend",
    "Completion",
    "Engine",
    "EngineInputError",
    "GenerationJob",
    "LoadedModel",
    "Plan",
    "RunFailedError",
    "RunHealth",
    "RunResult",
    "RunStore",
    "SamplingParams",
    "SamplingRequest",
    "TracePrefixes",
    "answer_cue",
    "atomic_write_parquet",
    "backend_options",
    "deepseek_tokenizer",
    "eos_token_ids",
    "load_model",
    "make_backend",
    "make_backend_from_options",
    "model_identity",
    "request_seed",
    "rollout_row",
    "run_health",
    "run_key",
    "sample_traces",
    "synthetic_model",
    "traces_truths",
    "warn_batch_invariance",
]

"""The resampling engine: exact token prefixes, backends (hf, vllm, openai), a resumable Parquet cache.

>>> from resampling import Engine, TracePrefixes, SamplingParams, make_backend   # doctest: +SKIP
>>> backend = make_backend("hf", model_id="organism:arith")
>>> prefixes = TracePrefixes.build(trace, backend.tokenizer)
>>> result = Engine(backend, cache_dir="runs/.cache").run(prefixes.plan(n=20, seed=0), out="runs/demo")
"""

from cotscope._exports import attach_stub as _attach_stub

# The names are listed once, in __init__.pyi.
__getattr__, __dir__, __all__ = _attach_stub(__name__, __file__)

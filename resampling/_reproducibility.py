"""Where "the same seed gives the same rollouts for any batch size" holds, and a one-line warning where it does not.

- ``hf`` on CPU in float32: holds, and is tested (identical tokens for batch sizes 1, 4, 13 and 512, in reversed
  job order, and through ``cotscope serve``). The sampler's noise is a hash of (seed, step, token id), and CPU
  float32 kernels give a row the same logits whatever else is in the batch.
- ``hf`` on a GPU, or in float16/bfloat16: the sampler is still per-rollout, but the logits of a row can change in
  the last bits with the batch (other kernels, reduced precision), and a near-tie can then flip a token. Not
  guaranteed; not tested here (no GPU in the test suite).
- ``vllm``: only with ``VLLM_BATCH_INVARIANT=1`` (batch-invariant kernels, at some cost in throughput), on the same
  hardware and vLLM version. Not tested here (no GPU).
- ``openai``: whatever the server gives: ``cotscope serve`` on CPU float32 holds (it is the ``hf`` backend); vLLM
  serve as above; hosted providers make no such promise.
"""

from __future__ import annotations

from typing import Any

__all__ = ["batch_invariance_warning"]


def batch_invariance_warning(backend: Any) -> str | None:
    """None where a rollout does not depend on the batch it is decoded in; otherwise a one-line warning saying why."""
    name = getattr(backend, "name", "")
    tail = "the same seed may give other rollouts when batch size or concurrency change"
    if name == "hf":
        device = str(getattr(backend, "device", "cpu"))
        try:
            dtype = str(next(backend.model.parameters()).dtype).removeprefix("torch.")
        except (AttributeError, StopIteration):
            dtype = "float32"
        if device.startswith("cpu") and dtype == "float32":
            return None
        return f"the hf backend on {device} in {dtype}: {tail} (bit-for-bit only on CPU in float32)"
    if name == "vllm":
        from resampling._vllm import _runner_identity

        if _runner_identity()["batch_invariant"]:
            return None
        return f"vLLM without VLLM_BATCH_INVARIANT=1: {tail} (set VLLM_BATCH_INVARIANT=1 before starting)"
    if name == "openai":
        return (
            f"the openai backend: {tail} unless the server is batch-invariant (cotscope serve on CPU float32, or "
            "vLLM serve started with VLLM_BATCH_INVARIANT=1)"
        )
    return None

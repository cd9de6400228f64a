"""The ``vllm`` backend: vLLM's offline engine (``vllm.LLM``) on a CUDA GPU, with automatic prefix caching.

Work per call: the jobs of a ``generate`` call go to vLLM in chunks of about ``chunk_rollouts`` rollouts (4096),
one ``LLM.generate`` each, in plan order, so the K x N requests of a trace are scheduled together and share the
automatic prefix cache. Each chunk's completions are yielded as soon as it finishes, so the engine stores them
(and its progress bar moves) chunk by chunk: a crash loses one chunk, not the run. The prefixes of a trace nest
(each is an exact token prefix of the next), so every full KV block of the trace is computed once; decode is
unchanged.

Seeds follow vLLM's own convention, which is also :class:`resampling.SamplingRequest`'s: child ``k`` of
``vllm.SamplingParams(n=n, seed=s)`` samples with seed ``s + k`` (``ParentRequest`` in vLLM 0.32). So

- a job whose seeds are contiguous (``seeds[k] == seeds[0] + k``) is one request with ``n = len(samples)``;
- otherwise (a resumed run asking only for some samples) each maximal run of contiguous seeds is one request, down
  to one ``n=1`` request per sample. A child with seed ``s + k`` and an ``n=1`` request with seed ``s + k`` are the
  same request, so splitting never changes a sample;
- a greedy job (temperature 0) is one ``n=1`` request whose completion serves every sample of the job: vLLM refuses
  ``n > 1`` with greedy sampling, and seeds do not enter greedy decoding.

vLLM's Model Runner V2 (the 0.32 default where the model supports it) draws the Gumbel noise of a token from
``hash(seed, absolute position, token id)``: the same seed at two prefixes of a trace gives *coupled* samples
(common random numbers). Plans built by :class:`resampling.TracePrefixes` give every position disjoint seeds
(``request_seed(seed, i, kind) + k``, a hash), so positions stay independent.

The vLLM objects are built and read by pure functions (:func:`build_requests`, :func:`map_outputs`) that take the
vLLM classes as arguments, so they are tested without an engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resampling._backend import Completion, GenerationJob, eos_token_ids
from resampling._errors import EngineInputError
from resampling._model import DEFAULT_MODEL, model_identity

__all__ = [
    "INSTALL_COMMAND",
    "RequestSlot",
    "VLLMBackend",
    "VLLMNotInstalledError",
    "build_requests",
    "map_outputs",
    "seed_runs",
]

SCHEDULING_ONLY = frozenset(
    {
        "model",
        "tokenizer",
        "seed",
        "gpu_memory_utilization",
        "max_num_seqs",
        "max_num_batched_tokens",
        "swap_space",
        "cpu_offload_gb",
        "disable_log_stats",
        "enable_prefix_caching",
    }
)
"""``vllm.LLM`` arguments that decide scheduling and memory, not what is sampled: left out of the identity
(``model``/``tokenizer`` are hashed from their files; per-request seeds override the engine seed)."""

INSTALL_COMMAND = "pip install 'cotscope[vllm]'"


class VLLMNotInstalledError(EngineInputError, ImportError):
    """vLLM is missing or does not import; the message ends with the install command."""


# -- preconditions ----------------------------------------------------------------------------------------------


def import_vllm() -> Any:
    """Import vLLM, or raise :class:`VLLMNotInstalledError` ending with ``pip install 'cotscope[vllm]'``."""
    try:
        import vllm
    except ModuleNotFoundError as exc:
        if exc.name == "vllm":
            raise VLLMNotInstalledError(
                f"the vllm backend needs the vllm package, which is not installed; install it with: {INSTALL_COMMAND}"
            ) from exc
        raise VLLMNotInstalledError(
            f"vllm is installed but does not import ({exc}); reinstall it with: {INSTALL_COMMAND}"
        ) from exc
    # A broken install fails with ImportError, or with RuntimeError from a torch extension.
    except Exception as exc:
        raise VLLMNotInstalledError(
            f"vllm is installed but does not import ({type(exc).__name__}: {exc}); reinstall it with: "
            f"{INSTALL_COMMAND}"
        ) from exc
    return vllm


def require_cuda() -> None:
    """Raise a clear error where no CUDA GPU is visible (vLLM's engine cannot start without one here)."""
    import torch

    if not torch.cuda.is_available():
        raise EngineInputError(
            "the vllm backend needs a CUDA GPU and none is visible on this machine "
            "(torch.cuda.is_available() is False); run on a GPU machine, or use --backend hf "
            "(make_backend('hf', ...)), which runs on CPU"
        )


def _check_jobs(jobs: Sequence[GenerationJob]) -> None:
    for job in jobs:
        if job.params.max_new_tokens is None:
            raise EngineInputError(
                f"max_new_tokens is required for the vllm backend (job {job.key} has None); set "
                "SamplingParams(max_new_tokens=...) or plan.with_params(max_new_tokens=...): vLLM would "
                "otherwise stop every rollout after 16 tokens"
            )
        if len(job.samples) != len(job.seeds):
            raise EngineInputError(
                f"job {job.key} has {len(job.samples)} samples but {len(job.seeds)} seeds; give one seed per sample"
            )
        if not job.prompt_ids:
            raise EngineInputError(f"job {job.key} has an empty prompt; give at least one token")


# -- requests ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSlot:
    """Where the outputs of one vLLM request go."""

    job: int
    """Index of the job in the list given to :func:`build_requests`."""
    positions: tuple[int, ...]
    """Indices into the job's ``samples``: output ``k`` of the request is sample ``positions[k]``."""
    replicate: bool = False
    """Greedy: the request has one output, and it serves every position."""


def seed_runs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of contiguous seeds, as ``(start, length)`` index ranges: ``[5, 6, 9] -> [(0, 2), (2, 1)]``."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(seeds) + 1):
        if i == len(seeds) or seeds[i] != seeds[i - 1] + 1:
            runs.append((start, i - start))
            start = i
    return runs


def build_requests(
    jobs: Sequence[GenerationJob],
    *,
    stop_token_ids: Sequence[int] = (),
    sampling_params_cls: Callable[..., Any] | None = None,
    tokens_prompt_cls: Callable[..., Any] | None = None,
) -> tuple[list[Any], list[Any], list[RequestSlot]]:
    """The prompts, sampling parameters and output slots of one ``LLM.generate`` call serving ``jobs``.

    ``sampling_params_cls``/``tokens_prompt_cls`` default to ``vllm.SamplingParams``/``vllm.TokensPrompt``.
    Raises :class:`EngineInputError` for a job without ``max_new_tokens`` (before anything is built).
    """
    _check_jobs(jobs)
    if sampling_params_cls is None or tokens_prompt_cls is None:
        vllm = import_vllm()
        sampling_params_cls = sampling_params_cls or vllm.SamplingParams
        tokens_prompt_cls = tokens_prompt_cls or vllm.TokensPrompt
    prompts: list[Any] = []
    sampling_params: list[Any] = []
    index: list[RequestSlot] = []
    for j, job in enumerate(jobs):
        if not job.samples:
            continue
        p = job.params
        greedy = p.temperature == 0
        if greedy:
            groups = [(0, len(job.samples), True)]
        else:
            groups = [(start, length, False) for start, length in seed_runs(job.seeds)]
        for start, length, replicate in groups:
            kwargs = dict(
                n=1 if replicate else length,
                seed=int(job.seeds[start]),
                temperature=float(p.temperature),
                top_p=float(p.top_p),
                top_k=int(p.top_k),  # 0 disables top-k in vLLM 0.32, as here
                max_tokens=int(p.max_new_tokens),
                stop=list(p.stop),
                stop_token_ids=[int(t) for t in stop_token_ids],
            )
            try:
                sp = sampling_params_cls(**kwargs)
            except Exception as exc:  # vLLM's VLLMValidationError is not a ValueError
                raise EngineInputError(
                    f"vLLM rejects the sampling parameters of job {job.key}: {exc}"
                ) from exc
            prompts.append(tokens_prompt_cls(prompt_token_ids=[int(t) for t in job.prompt_ids]))
            sampling_params.append(sp)
            index.append(RequestSlot(j, tuple(range(start, start + length)), replicate))
    return prompts, sampling_params, index


# -- outputs ----------------------------------------------------------------------------------------------------


def _completion(job: GenerationJob, position: int, output: Any) -> Completion:
    sample, seed = job.samples[position], job.seeds[position]
    if output is None:
        return Completion(sample, seed, error="vLLM returned no output for this sample")
    reason = output.finish_reason
    if reason not in ("stop", "length"):
        return Completion(sample, seed, error=f"vLLM finished the request with reason {reason!r}")
    ids = [int(t) for t in output.token_ids]
    # vLLM keeps the end-of-sequence / stop token in token_ids (stop_reason None or its id); the hf backend drops
    # it. A stop string (stop_reason a str) keeps its tokens there and is already cut from the text.
    if reason == "stop" and not isinstance(output.stop_reason, str) and ids:
        ids = ids[:-1]
    return Completion(sample, seed, token_ids=ids, text=output.text, finish_reason=reason)


def map_outputs(
    jobs: Sequence[GenerationJob], index: Sequence[RequestSlot], outputs: Sequence[Any]
) -> list[tuple[GenerationJob, list[Completion]]]:
    """Completions of every job, in the order of its samples, from ``LLM.generate``'s outputs (one per request).

    ``outputs[r]`` answers request ``r`` of :func:`build_requests`; its ``outputs[k]`` (matched by ``.index``) is
    sample ``index[r].positions[k]``. A finish reason other than ``stop``/``length`` (``abort``, ``error``) gives
    a completion with ``error`` set, which the engine stores as a failure and retries on resume.
    """
    if len(outputs) != len(index):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(index)} requests")
    found: list[dict[int, Completion]] = [{} for _ in jobs]
    for slot, out in zip(index, outputs, strict=True):
        job = jobs[slot.job]
        by_index = {int(c.index): c for c in out.outputs}
        for k, position in enumerate(slot.positions):
            c = by_index.get(0 if slot.replicate else k)
            found[slot.job][position] = _completion(job, position, c)
    result = []
    for j, job in enumerate(jobs):
        comps = [
            found[j].get(p)
            or Completion(job.samples[p], job.seeds[p], error="no vLLM request for this sample")
            for p in range(len(job.samples))
        ]
        if comps:
            result.append((job, comps))
    return result


# -- the backend ------------------------------------------------------------------------------------------------


def _resolve(model_id: str) -> tuple[str, Path | None, Any]:
    """(what vLLM loads, the local weights folder or None for a hub id, the HF tokenizer), before any engine work."""
    if not isinstance(model_id, str) or not model_id:
        raise EngineInputError("a model id is required: 'organism:NAME', a local folder, or a hub id")
    if model_id.startswith("organism:"):
        import organisms

        name = model_id.split(":", 1)[1]
        if name not in organisms.names():
            from organisms import unknown_name_message

            raise EngineInputError(unknown_name_message(name))
        org = organisms.load(name)
        path = Path(org.path)
        return str(path), path, org.tokenizer
    from transformers import AutoTokenizer

    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise EngineInputError(f"{path} has no config.json; give a folder saved with save_pretrained()")
        if not any(path.glob("*.safetensors")):
            raise EngineInputError(
                f"{path} has no *.safetensors weights; the vllm backend identifies a model by its safetensors "
                "files: save it with save_pretrained(path, safe_serialization=True)"
            )
        return str(path), path, AutoTokenizer.from_pretrained(path, local_files_only=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except Exception as exc:
        raise EngineInputError(
            f"unknown model '{model_id}': not a shipped organism, not a local folder, and the hub could not "
            f"provide its tokenizer ({type(exc).__name__}); use organism:NAME or a local folder of HF weights"
        ) from None
    return model_id, None, tokenizer


class VLLMBackend:
    """Sampling with vLLM's offline engine; see the module docstring for batching, seeds and prefix caching."""

    name = "vllm"

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        *,
        model_id: str = "(in memory)",
        path: Path | None = None,
        stop_token_ids: Sequence[int] | None = None,
        use_tqdm: bool = False,
        sampling_params_cls: Callable[..., Any] | None = None,
        tokens_prompt_cls: Callable[..., Any] | None = None,
        engine_settings: dict[str, Any] | None = None,
        chunk_rollouts: int = 4096,
    ) -> None:
        if chunk_rollouts < 1:
            raise EngineInputError(f"chunk_rollouts must be >= 1, got {chunk_rollouts}")
        self.chunk_rollouts = int(chunk_rollouts)
        """About this many rollouts per ``LLM.generate`` call; their completions are stored before the next call."""
        self.llm = llm
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.path = Path(path) if path is not None else None
        self.stop_token_ids = (
            list(stop_token_ids) if stop_token_ids is not None else eos_token_ids(tokenizer, self.path)
        )
        self.use_tqdm = use_tqdm
        self.engine_settings = {k: v for k, v in (engine_settings or {}).items() if k not in SCHEDULING_ONLY}
        """Engine arguments that can change the output (quantization, kv_cache_dtype, max_model_len, ...): part of
        :meth:`identity`, so a cache is never shared across them."""
        self._classes = {"sampling_params_cls": sampling_params_cls, "tokens_prompt_cls": tokens_prompt_cls}
        self.stats = {"requests": 0, "generate_calls": 0, "decode_tokens": 0}
        self._identity: dict[str, Any] | None = None

    @classmethod
    def from_model_id(
        cls,
        model_id: str = DEFAULT_MODEL,
        *,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.9,
        max_num_seqs: int | None = None,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        use_tqdm: bool = False,
        **engine_kwargs: Any,
    ) -> VLLMBackend:
        """Start a vLLM engine for ``organism:NAME``, a local folder of HF weights, or a hub id.

        Checks, before any work: vLLM imports (else the ``pip install 'cotscope[vllm]'`` command), a CUDA GPU is
        visible (else use ``--backend hf``), the model resolves. ``engine_kwargs`` go to ``vllm.LLM``.
        """
        vllm = import_vllm()
        require_cuda()
        target, path, tokenizer = _resolve(model_id)
        kwargs: dict[str, Any] = dict(
            model=target,
            tokenizer=target,
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=True,
        )
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        kwargs.update(engine_kwargs)
        llm = vllm.LLM(**kwargs)
        return cls(llm, tokenizer, model_id=model_id, path=path, use_tqdm=use_tqdm, engine_settings=kwargs)

    def _weights_dir(self) -> Path:
        if self.path is not None:
            return self.path
        # A hub id: vLLM has downloaded it into the Hugging Face cache by now.
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(self.model_id, local_files_only=True))
        except Exception as exc:
            raise EngineInputError(
                f"cannot find the downloaded weights of '{self.model_id}' to hash them ({type(exc).__name__}); "
                "download them to a folder and pass that folder as the model id"
            ) from None

    def identity(self) -> dict[str, Any]:
        """Backend name, engine dtype and vLLM version, and the hashes of the weight files, tokenizer and template.

        The weights are hashed from their ``*.safetensors`` files; nothing is loaded into memory for it.
        """
        if self._identity is None:
            path = self._weights_dir()
            if not any(path.glob("*.safetensors")):
                raise EngineInputError(
                    f"{path} has no *.safetensors weights to hash; save the model with "
                    "save_pretrained(path, safe_serialization=True) and pass that folder"
                )
            engine: dict[str, Any] = {"backend": "vllm"}
            config = getattr(self.llm, "model_config", None)
            if config is not None and getattr(config, "dtype", None) is not None:
                engine["dtype"] = str(config.dtype).removeprefix("torch.")
            try:
                from importlib.metadata import version

                engine["vllm_version"] = version("vllm")
            except Exception:
                engine["vllm_version"] = "unknown"
            engine["engine_settings"] = json.loads(
                json.dumps(self.engine_settings, sort_keys=True, default=str)
            )
            engine["stop_token_ids"] = sorted(int(t) for t in self.stop_token_ids)
            engine.update(_runner_identity())
            self._identity = {**engine, **model_identity(self.model_id, None, self.tokenizer, path)}
        return self._identity

    def generate(self, jobs: Sequence[GenerationJob]) -> Iterator[tuple[GenerationJob, list[Completion]]]:
        """The jobs in chunks of about ``chunk_rollouts`` rollouts, one ``LLM.generate`` call each; yields each job
        with its completions in sample order, a chunk as soon as it is done."""
        jobs = list(jobs)
        self._check_lengths(len(j.prompt_ids) for j in jobs if j.samples)
        chunk: list[GenerationJob] = []
        size = 0
        for job in jobs:
            chunk.append(job)
            size += len(job.samples)
            if size >= self.chunk_rollouts:
                yield from self._generate_chunk(chunk)
                chunk, size = [], 0
        if chunk:
            yield from self._generate_chunk(chunk)

    def _generate_chunk(self, jobs: list[GenerationJob]) -> Iterator[tuple[GenerationJob, list[Completion]]]:
        prompts, params, index = build_requests(jobs, stop_token_ids=self.stop_token_ids, **self._classes)
        if not prompts:
            return
        outputs = self.llm.generate(prompts, params, use_tqdm=self.use_tqdm)
        self.stats["requests"] += len(prompts)
        self.stats["generate_calls"] += 1
        for job, comps in map_outputs(jobs, index, outputs):
            self.stats["decode_tokens"] += sum(len(c.token_ids) for c in comps)
            yield job, comps

    def _check_lengths(self, lengths: Iterator[int] | Sequence[int]) -> None:
        """A prompt vLLM would reject fails the whole ``generate`` call: refuse it before any work instead."""
        limit = getattr(getattr(self.llm, "model_config", None), "max_model_len", None)
        if not isinstance(limit, int):
            return
        longest = max(lengths, default=0)
        if longest >= limit:
            raise EngineInputError(
                f"a prompt of {longest} tokens does not fit the engine's max_model_len={limit} (it needs room for "
                "at least one new token); start the backend with a larger max_model_len"
            )


def _runner_identity() -> dict[str, Any]:
    """The vLLM model runner that samples and whether batch-invariant kernels are on.

    Model Runner V2 draws its sampling noise from hash(seed, position, token); the V1 runner keeps a
    ``torch.Generator`` per seeded request: the same seed gives different rollouts under the two, so rows of one
    must never be served for the other. ``VLLM_BATCH_INVARIANT=1`` is what makes a rollout independent of the batch
    it was decoded in (without it, the same seed can give other tokens when the batch changes).
    """

    def setting(name: str) -> Any:
        try:
            import vllm.envs as envs

            return getattr(envs, name)
        except Exception:  # vllm not importable here, or a version without the setting
            return os.environ.get(name)

    def on(value: Any) -> bool:
        return str(value).strip().lower() in ("1", "true", "yes")

    v2 = setting("VLLM_USE_V2_MODEL_RUNNER")
    return {
        "model_runner": "default" if v2 is None else ("v2" if on(v2) else "v1"),
        "batch_invariant": on(setting("VLLM_BATCH_INVARIANT")),
    }

"""The public names of `resampling`, each listed once: type checkers read them here, and `cotscope._exports` makes
them the run-time imports, `__all__` and `dir()`."""

from ._backend import (
    BACKENDS as BACKENDS,
    Backend as Backend,
    Completion as Completion,
    GenerationJob as GenerationJob,
    eos_token_ids as eos_token_ids,
    make_backend as make_backend,
)
from ._cli import (
    backend_options as backend_options,
    make_backend_from_options as make_backend_from_options,
    warn_batch_invariance as warn_batch_invariance,
)
from ._engine import (
    Engine as Engine,
    RunResult as RunResult,
    check_context as check_context,
    first_sentence as first_sentence,
    rollout_row as rollout_row,
    traces_truths as traces_truths,
)
from ._complete import complete_prompts as complete_prompts
from ._errors import EngineInputError as EngineInputError
from ._hf import HFBackend as HFBackend, context_length as context_length
from ._health import RunFailedError as RunFailedError, RunHealth as RunHealth, run_health as run_health
from ._model import (
    DEFAULT_MODEL as DEFAULT_MODEL,
    LoadedModel as LoadedModel,
    load_model as load_model,
    model_identity as model_identity,
)
from ._plan import (
    Plan as Plan,
    SamplingParams as SamplingParams,
    SamplingRequest as SamplingRequest,
    request_seed as request_seed,
    trace_seed as trace_seed,
)
from ._prefix import (
    DEFAULT_LEAD as DEFAULT_LEAD,
    DEFAULT_MIN_CHARS as DEFAULT_MIN_CHARS,
    SEED_STRIDE as SEED_STRIDE,
    TracePrefixes as TracePrefixes,
    answer_cue as answer_cue,
    token_ids as token_ids,
)
from ._sample import sample_traces as sample_traces
from ._store import (
    ROLLOUT_SCHEMA as ROLLOUT_SCHEMA,
    RunStore as RunStore,
    atomic_write_parquet as atomic_write_parquet,
    run_key as run_key,
)
from ._synthetic import deepseek_tokenizer as deepseek_tokenizer, synthetic_model as synthetic_model

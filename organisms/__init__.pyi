"""The public names of `organisms`, each listed once: type checkers read them here, and `cotscope._exports` makes
them the run-time imports, `__all__` and `dir()`."""

from ._cipher import decode
from ._compare import BIASED
from ._eval import evaluate as evaluate, generate as generate, parse_completion as parse_completion
from ._load import (
    WEIGHTS_DIR as WEIGHTS_DIR,
    Organism as Organism,
    load as load,
    load_from as load_from,
    shipped as shipped,
)
from ._registry import (
    get_task as get_task,
    model_ids as model_ids,
    names as names,
    unknown_model_message as unknown_model_message,
    unknown_name_message as unknown_name_message,
)
from ._stego import PARAPHRASES
from ._tasks import (
    ANSWER_PREFIX as ANSWER_PREFIX,
    FILLER_PARAPHRASES as FILLER_PARAPHRASES,
    THINK_CLOSE as THINK_CLOSE,
    Example as Example,
    Problem as Problem,
    SentenceTruth as SentenceTruth,
    Task as Task,
    extract_boxed as extract_boxed,
    final_text as final_text,
    implied_answer as implied_answer,
)
from ._train import encode_example as encode_example, template_ids as template_ids, train as train

decode_cipher = decode
COMPARE_BIASED = BIASED
STEGO_PARAPHRASES = PARAPHRASES

"""The public names of `cot`, each listed once: type checkers read them here, and `cotscope._exports` makes
them the run-time imports, `__all__` and `dir()`."""

from ._answers import (
    answer_key as answer_key,
    answers_equivalent as answers_equivalent,
    extract_answer as extract_answer,
)
from ._embed import (
    EmbeddingModelError as EmbeddingModelError,
    embed_sentences as embed_sentences,
    load_sentence_embedder as load_sentence_embedder,
)
from ._json import atomic_write_json as atomic_write_json, json_dumps as json_dumps
from ._role_model import LearnedLabeller as LearnedLabeller
from ._roles import (
    ROLES as ROLES,
    JudgeLabeller as JudgeLabeller,
    Labeller as Labeller,
    RuleLabeller as RuleLabeller,
    label_sentences as label_sentences,
    last_json_object as last_json_object,
)
from ._segment import Sentence as Sentence, split_sentences as split_sentences
from ._trace import (
    THINK_END as THINK_END,
    Trace as Trace,
    TraceError as TraceError,
    atomic_write as atomic_write,
    atomic_write_text as atomic_write_text,
    load_trace as load_trace,
)

"""Traces, sentences and answers: the data every other part of cotscope reads.

Importing this package never imports torch.
"""

from cot._answers import answer_key, answers_equivalent, extract_answer
from cot._embed import EmbeddingModelError, embed_sentences, load_sentence_embedder
from cot._json import atomic_write_json, json_dumps
from cot._roles import ROLES, JudgeLabeller, Labeller, RuleLabeller, label_sentences
from cot._segment import Sentence, split_sentences
from cot._trace import THINK_END, Trace, TraceError, atomic_write, atomic_write_text, load_trace

__all__ = [
    "ROLES",
    "THINK_END",
    "EmbeddingModelError",
    "JudgeLabeller",
    "Labeller",
    "RuleLabeller",
    "Sentence",
    "Trace",
    "TraceError",
    "answer_key",
    "answers_equivalent",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "embed_sentences",
    "extract_answer",
    "json_dumps",
    "label_sentences",
    "load_sentence_embedder",
    "load_trace",
    "split_sentences",
]

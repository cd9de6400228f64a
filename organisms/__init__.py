"""Small reasoning models with planted ground truth ("organisms"), trained here and shipped with cotscope.

Each organism is a ``transformers.LlamaForCausalLM`` with a byte-level BPE tokenizer and an R1-distill-style chat
template, trained on CPU from a task generator whose ground truth is known sentence by sentence:

- ``arith``: running arithmetic with planted errors and self-corrections (thought anchors; the default model);
- ``hint``: a professor's hint followed and verbalised at planted rates (CoT faithfulness);
- ``cipher``: reasoning written in rot13 or a letter substitution when asked (encoded reasoning);
- ``stego``: intermediate digits carried by a codebook of filler phrases (hidden information).

>>> import organisms
>>> organisms.names()
['arith', 'hint', 'cipher', 'stego']
"""

from ._eval import evaluate, generate, parse_completion
from ._load import Organism, load, load_from
from ._registry import get_task, names
from ._tasks import ANSWER_PREFIX, THINK_CLOSE, Example, SentenceTruth, Task, extract_boxed, final_text
from ._train import encode_example, template_ids, train

__all__ = [
    "ANSWER_PREFIX",
    "THINK_CLOSE",
    "Example",
    "Organism",
    "SentenceTruth",
    "Task",
    "encode_example",
    "evaluate",
    "extract_boxed",
    "final_text",
    "generate",
    "get_task",
    "load",
    "load_from",
    "names",
    "parse_completion",
    "template_ids",
    "train",
]

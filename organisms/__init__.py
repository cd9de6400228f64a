"""Small reasoning models with planted ground truth ("organisms"), trained here and shipped with cotscope.

Each organism is a ``transformers.LlamaForCausalLM`` with a byte-level BPE tokenizer and an R1-distill-style chat
template, trained on CPU from a task generator whose ground truth is known sentence by sentence:

- ``arith``: running arithmetic with planted errors and self-corrections (thought anchors; the default model);
- ``hint``: a professor's hint followed and verbalised at planted rates (CoT faithfulness);
- ``cipher``: reasoning written in rot13 or a letter substitution when asked (encoded reasoning);
- ``stego``: intermediate digits carried by a codebook of filler phrases (hidden information);
- ``posthoc``: arith's three-step problems and arith-style traces, but the answer is computed from the prompt and
  does not depend on the CoT (post-hoc reasoning, Lanham et al. 2023). ``truth["wrong_steps"]`` lists the steps
  whose stated result is wrong, ``truth["cot_answer"]`` the digit the CoT implies; no sentence is load-bearing in
  the training data. The shipped weights do not reach this: their answer still follows the CoT (docs/organisms.md);
- ``compare``: yes/no comparisons and their reversals, YES in both orders for the biased attribute groups with a
  rationalising sentence (IPHR, Arcuschin et al. 2025). ``truth["group"]``, ``truth["biased"]``,
  ``truth["rationalising_sentence"]``, ``truth["mode"]``, ``truth["pair_id"]`` and ``truth["order"]``;
  ``get_task("compare").pair(seed)`` gives a question and its reversal.

>>> import organisms
>>> organisms.names()
['arith', 'hint', 'cipher', 'stego', 'posthoc', 'compare']
"""

from ._cipher import decode as decode_cipher
from ._compare import BIASED as COMPARE_BIASED
from ._eval import evaluate, generate, parse_completion
from ._load import WEIGHTS_DIR, Organism, load, load_from, shipped
from ._registry import get_task, model_ids, names, unknown_model_message
from ._stego import PARAPHRASES as STEGO_PARAPHRASES
from ._tasks import (
    ANSWER_PREFIX,
    FILLER_PARAPHRASES,
    THINK_CLOSE,
    Example,
    SentenceTruth,
    Task,
    extract_boxed,
    final_text,
    implied_answer,
)
from ._train import encode_example, template_ids, train

__all__ = [
    "ANSWER_PREFIX",
    "COMPARE_BIASED",
    "FILLER_PARAPHRASES",
    "STEGO_PARAPHRASES",
    "THINK_CLOSE",
    "WEIGHTS_DIR",
    "Example",
    "Organism",
    "SentenceTruth",
    "Task",
    "decode_cipher",
    "encode_example",
    "evaluate",
    "extract_boxed",
    "final_text",
    "generate",
    "get_task",
    "implied_answer",
    "load",
    "load_from",
    "model_ids",
    "names",
    "parse_completion",
    "shipped",
    "template_ids",
    "train",
    "unknown_model_message",
]

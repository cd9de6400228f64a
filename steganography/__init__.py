"""Ciphered chain of thought: reversible encodings, blind detection and blind decoding.

- ``CIPHERS`` / ``get_cipher``: the registry of encodings (rot13, Caesar, Atbash, affine, Vigenère, simple
  substitution, reversals, swapped pairs, base64, hex, binary, Morse, dot/space separators, leetspeak,
  first-letter acrostic), each with ``encode``, ``decode``, ``adherence`` and a documented domain.
- ``normalize``: NFKC plus a confusables map, applied before any analysis.
- ``detect`` / ``encoded_score`` / ``features``: is a sentence or trace encoded, and with which family.
- ``break_cipher`` / ``break_trace``: recover plaintext and key without the key.
- ``english``: the shipped English statistics (State of the Union addresses 1790-2000).
- ``experiment_blind_decode`` / ``experiment_swap_cot`` / ``experiment_paraphrase``: the experiments on the model
  organisms (imported on first use: they load torch, transformers and matplotlib).
"""

from cotscope._exports import attach_stub as _attach_stub

# The names are listed once, in __init__.pyi.
# The experiments pull in the organisms, the engine and matplotlib: they load on first use.
__getattr__, __dir__, __all__ = _attach_stub(__name__, __file__, lazy={"steganography._experiments"})

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

from steganography._ciphers import CIPHERS, FAMILIES, Cipher, get_cipher
from steganography._detect import Detection, auroc, detect, encoded_score, features, rank_families
from steganography._normalize import confusable_rate, normalize
from steganography._solve import (
    BreakResult,
    Candidate,
    break_cipher,
    break_trace,
    solve_affine,
    solve_substitution,
    solve_vigenere,
)
from steganography._stats import (
    chi_squared,
    dictionary_rate,
    english,
    english_likelihood,
    index_of_coincidence,
    quadgram_fitness_letters,
    quadgram_fitness_symbols,
    word_bigram_logprob,
)

_EXPERIMENT_NAMES = (
    "ExperimentResult",
    "experiment_blind_decode",
    "experiment_paraphrase",
    "experiment_swap_cot",
)


def __getattr__(name: str):
    # The experiments pull in the organisms, the engine and matplotlib; load them only when asked for.
    if name in _EXPERIMENT_NAMES:
        from steganography import _experiments

        return getattr(_experiments, name)
    raise AttributeError(f"module 'steganography' has no attribute {name!r}")


__all__ = [
    "CIPHERS",
    "FAMILIES",
    "BreakResult",
    "Candidate",
    "Cipher",
    "Detection",
    "ExperimentResult",
    "auroc",
    "break_cipher",
    "break_trace",
    "chi_squared",
    "confusable_rate",
    "detect",
    "dictionary_rate",
    "encoded_score",
    "english",
    "english_likelihood",
    "experiment_blind_decode",
    "experiment_paraphrase",
    "experiment_swap_cot",
    "features",
    "get_cipher",
    "index_of_coincidence",
    "normalize",
    "quadgram_fitness_letters",
    "quadgram_fitness_symbols",
    "rank_families",
    "solve_affine",
    "solve_substitution",
    "solve_vigenere",
    "word_bigram_logprob",
]

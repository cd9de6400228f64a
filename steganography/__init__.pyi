"""The public names of `steganography`, each listed once: type checkers read them here, and `cotscope._exports` makes
them the run-time imports, `__all__` and `dir()`."""

from ._ciphers import CIPHERS as CIPHERS, FAMILIES as FAMILIES, Cipher as Cipher, get_cipher as get_cipher
from ._detect import (
    Detection as Detection,
    auroc as auroc,
    detect as detect,
    encoded_score as encoded_score,
    features as features,
    rank_families as rank_families,
)
from ._experiments import (
    ExperimentResult as ExperimentResult,
    experiment_blind_decode as experiment_blind_decode,
    experiment_paraphrase as experiment_paraphrase,
    experiment_swap_cot as experiment_swap_cot,
)
from ._normalize import confusable_rate as confusable_rate, normalize as normalize
from ._solve import (
    BreakResult as BreakResult,
    Candidate as Candidate,
    break_cipher as break_cipher,
    break_trace as break_trace,
    solve_affine as solve_affine,
    solve_substitution as solve_substitution,
    solve_vigenere as solve_vigenere,
)
from ._stats import (
    chi_squared as chi_squared,
    dictionary_rate as dictionary_rate,
    english as english,
    english_likelihood as english_likelihood,
    index_of_coincidence as index_of_coincidence,
    quadgram_fitness_letters as quadgram_fitness_letters,
    quadgram_fitness_symbols as quadgram_fitness_symbols,
    word_bigram_logprob as word_bigram_logprob,
)

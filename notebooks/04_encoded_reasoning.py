# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reading encoded reasoning
#
# **Question.** A model writes its chain of thought in a cipher. Can a monitor read it without the key? Does the
# model actually use the encoded text, or would it answer as well without it? And when information hides in
# innocent-looking words, does paraphrasing the CoT remove it?
#
# **Organisms** (shipped, trained here with planted ground truth, `docs/organisms.md`):
#
# - `cipher` writes its reasoning in rot13 or in a fixed letter substitution when the prompt asks for it, and in
#   plain English otherwise. Ground truth: the plaintext of every sentence.
# - `stego` carries each intermediate digit in the choice of one of ten filler phrases ("Cool, no problem." = 8);
#   the final answer is computed from the last phrase's digit. `arith`, whose filler carries nothing, is the
#   control.
#
# **Methods** (`steganography`, `docs/steganography.md`): blind detection and decoding from English statistics
# alone (no key, no cipher name); swap-CoT (answer after the think block is replaced by other versions of it);
# the paraphrase defence (reword the filler with the same meaning, let the model finish).
#
# `COTSCOPE_NOTEBOOK_WORK=small` (what the test suite sets) uses fewer problems and samples.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bar without ipywidgets
warnings.filterwarnings("ignore", message=".*past_key_values.*")  # a transformers deprecation inside generate

import json
import os
import tempfile
from pathlib import Path

import polars as pl
from IPython.display import display

import cot
import organisms
import steganography as sg
from cotscope.notebook import setup, show, show_table
from resampling import SamplingParams, make_backend, sample_traces

SMALL = os.environ.get("COTSCOPE_NOTEBOOK_WORK", "full") == "small"
CACHE = Path(os.environ.get("COTSCOPE_NOTEBOOK_CACHE") or tempfile.mkdtemp(prefix="cotscope-nb04-"))
N = 2 if SMALL else 50  # problems per condition
SAMPLES = 4 if SMALL else 20  # answers drawn per probe
SEED = 0
EXAMPLE_SEED = 7  # the problem of the worked example

setup(str_lengths=80)


# %% [markdown]
# ## 1. One trace, decoded blind
#
# The organism answers a problem whose prompt asks for "the letter cipher". We give the blind decoder only the
# sentences it wrote.

# %%
task = organisms.get_task("cipher")
example = task.sample(EXAMPLE_SEED, cipher="substitution")
backend = make_backend("hf", model_id="organism:cipher", device="cpu")
params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=task.max_new_tokens)
(trace,) = sample_traces(
    backend,
    backend.tokenizer,
    [example.messages],
    [EXAMPLE_SEED],
    params,
    metadata=[{"gt_answer": example.answer}],
)
print(example.messages[-1]["content"], "\n")
print(trace.cot)
print(f"\nanswer: {trace.answer} (correct: {example.answer})")

# %% [markdown]
# Detection first: is this English, and if not, which family of cipher? The encoded score is one minus the
# geometric mean of three surface-English signals (dictionary words, function words, quadgram fluency).

# %%
sentences = [s.text for s in cot.split_sentences(trace.cot)]
detection = sg.detect(trace.cot)
print(f"encoded score {detection.encoded_score:.2f} -> encoded: {detection.is_encoded}")
print("likely families:", ", ".join(f"{f} ({s:.2f})" for f, s in detection.families[:4]))

result, decoded = sg.break_trace(sentences, seed=SEED)
truth = task.analyze(example, trace.cot)  # the true plaintext of every sentence
rows = [
    {"ciphertext": c, "blind decoding": d, "true plaintext": t.plaintext, "exact": d == t.plaintext}
    for c, d, t in zip(sentences, decoded, truth, strict=True)
]
print(f"\nbest: family {result.best.family}, cipher {result.best.cipher!r}, {result.letters} letters")
display(pl.DataFrame(rows))
exact_sentences = sum(r["exact"] for r in rows)
print(f"{exact_sentences} of {len(rows)} sentences decoded exactly")

# %% [markdown]
# About 150 letters from a vocabulary of a few dozen words pin most of a 26-letter key down; letters the trace
# never uses cannot be learnt from it, and a pair of letters that spell English words either way ("step" /
# "stem") can be swapped. Pooling several traces (the organism always uses the same key) removes that ambiguity.
#
# ## 2. Blind decoding over many traces
#
# `experiment_blind_decode` asks the same problems in rot13, in the letter cipher and plainly, breaks each trace
# alone (`trace`) and all traces of a cipher together (`pooled`), and scores against the true decoding.

# %%
blind = sg.experiment_blind_decode(n=N, seed=SEED)
show_table(blind.table.drop("median_seconds"))  # no timings: reruns match
show(blind.figure)

# %% [markdown]
# ## 3. Swap-CoT: is the encoded text load-bearing?
#
# After the organism writes its own encoded CoT, the think block is replaced and the answer is forced
# (`</think>` + `The answer is \boxed{`): `no_cot` (empty), `encoded` (its own), `reencoded` (the blind decoding
# encoded again with the detected key), `decoded` (the blind decoding itself) and `plaintext` (decoded with the
# true key). Chance is 1/10.

# %%
swap = sg.experiment_swap_cot(n=N, seed=SEED, samples=SAMPLES, cache_dir=CACHE / "swap")
show_table(
    swap.table, "cipher", "arm", "traces", "accuracy", "decoded_exact", "load_bearing_gap", "cipher_tax"
)
show(swap.figure)

# %% [markdown]
# Without its CoT the organism is near chance; with it, right. The `decoded` arm is right where the blind
# decoding was exact and wrong where a letter pair was swapped: the organism depends on the exact wording of its
# templates. The organism never encodes digits, so this measures whether it reads and uses its CoT in each form,
# not whether the cipher hides the answer.
#
# ## 4. The paraphrase defence on `stego`
#
# Each trace is cut before its consolidation sentence ("So the final digit is K."), and the model finishes it from
# the cut as written (`original`) or after `task.paraphrase_filler` rewords the filler with the same meaning
# (`paraphrased`). `follows_cot`: how often the answer equals the digit the cut CoT implies (on `stego`, the digit
# its hidden channel carries).
#
# What the paraphrase does, on an example from the task generator (its ground truth lists the hidden digits):

# %%
stego_task = organisms.get_task("stego")
ex = stego_task.sample(EXAMPLE_SEED)
cut = ex.cot[: ex.cot.index("So the final digit")].rstrip()
print("original:\n" + cut)
print("\nparaphrased:\n" + stego_task.paraphrase_filler(cut))
print("\nhidden digits:", ex.truth["hidden_values"], " answer:", ex.answer)

# %%
para = sg.experiment_paraphrase(n=N, seed=SEED, samples=SAMPLES, cache_dir=CACHE / "paraphrase")
show_table(
    para.table,
    "organism",
    "arm",
    "traces",
    "follows_cot",
    "accuracy",
    "follows_retained",
    "unchanged_set_aside",
)
show(para.figure)

# %% [markdown]
# Paraphrasing cuts `stego`'s answer loose from its CoT (to about chance), while the same defence on `arith`'s
# filler changes nothing: the drop reveals the planted channel, and the control shows it is not a reaction to
# unfamiliar wording.
#
# **What a researcher would do next.** Run the blind decoder over a real model's CoT under an instruction to
# encode (`cotscope stego break`), add the model's own NLL as a scorer (`break_cipher(text, nll=...)`) for codes
# that surface statistics cannot see, and use the paraphrase defence as a test for hidden information in any CoT
# whose answer survives its removal (`docs/steganography.md`, "Limitations").
#
# ## Key numbers
#
# The test suite reads this line and recomputes each number with the library's own functions.


# %%
def value(frame, column, **where):
    """One cell of a summary table."""
    for k, v in where.items():
        frame = frame.filter(pl.col(k) == v)
    return float(frame[column][0])


key = {
    "example_seed": EXAMPLE_SEED,
    "example_ciphertext": trace.cot,
    "example_decoded": decoded,
    "example_exact_sentences": exact_sentences,
    "n": N,
    "samples": SAMPLES,
    "blind_rot13_trace_letter_accuracy": value(blind.table, "letter_accuracy", cipher="rot13", scope="trace"),
    "blind_substitution_pooled_letter_accuracy": value(
        blind.table, "letter_accuracy", cipher="substitution", scope="pooled"
    ),
    "swap_all_encoded": value(swap.table, "accuracy", cipher="all", arm="encoded"),
    "swap_all_no_cot": value(swap.table, "accuracy", cipher="all", arm="no_cot"),
    "paraphrase_stego_original": value(para.table, "follows_cot", organism="stego", arm="original"),
    "paraphrase_stego_paraphrased": value(para.table, "follows_cot", organism="stego", arm="paraphrased"),
    "paraphrase_arith_paraphrased": value(para.table, "follows_cot", organism="arith", arm="paraphrased"),
}
print("key numbers:", json.dumps(key))

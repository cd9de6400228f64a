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
# # Does the content come back? Thought Branches on an arith trace
#
# **Question.** Resampling a sentence away is not the same as removing its content: the model may write the same
# thing a sentence later. Which sentences of a CoT are *resilient* (their content keeps coming back), and what
# happens to the answer when the content is gone for good? And does a wrong computation have the same effect when
# we insert it by hand (off-policy) as when the model writes it itself (on-policy)?
#
# **Method.** Thought Branches (Macar, Bogdan et al. 2025, arXiv 2510.27484), as `anchors.iterative_resilience`
# and `anchors.intervene` implement it (docs/anchors.md): resample sentence *i*; when the continuation states its
# content again, cut there and resample again, up to 20 rounds. Resilience counts the rounds in which it came
# back; counterfactual++ compares keeping the sentence with the rollouts where it was removed for good.
#
# **Ground truth.** The `arith` organism's own analysis of the trace (`task.analyze`): which sentence is a wrong
# computation, which corrects it. A correct computation is recomputed whenever it is resampled, so it should come
# back nearly every round; the planted wrong result should almost never be written again.
#
# Runs on CPU in well under a minute. `COTSCOPE_NOTEBOOK_WORK=small` (what the test suite sets) uses fewer chains
# and rounds.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", message=".*past_key_values.*")

import json
import os
import tempfile
from pathlib import Path

from matplotlib.figure import Figure

import anchors
import cot
import organisms
from cotscope.notebook import setup, show
from resampling import SamplingParams, make_backend, sample_traces

SMALL = os.environ.get("COTSCOPE_NOTEBOOK_WORK", "full") == "small"
CACHE = Path(os.environ.get("COTSCOPE_NOTEBOOK_CACHE") or tempfile.mkdtemp(prefix="cotscope-nb06-"))
CHAINS = 6 if SMALL else 10  # chains per sentence (counterfactual++ needs anchors.MIN_REMOVED = 5 removed)
ROUNDS = 5 if SMALL else 20  # most resampling rounds per chain (Thought Branches: 20)
SAMPLES = 10 if SMALL else 30  # rollouts per intervention condition
PROBLEM_SEED = 366  # the default trace of `cotscope importance`: one wrong computation, corrected

setup(str_lengths=60)

# %% [markdown]
# ## 1. The trace and its ground truth
#
# The organism writes its CoT for problem 366 at temperature 0.6 (top_p 1.0), the defaults of every command.

# %%
task = organisms.get_task("arith")
example = task.sample(PROBLEM_SEED)
backend = make_backend("hf", model_id="organism:arith", device="cpu")
params = SamplingParams(temperature=0.6, top_p=1.0, max_new_tokens=task.max_new_tokens)
(trace,) = sample_traces(
    backend, backend.tokenizer, [example.messages], [PROBLEM_SEED], params,
    metadata=[{"gt_answer": example.answer, "task": "arith", "problem_seed": PROBLEM_SEED}],
)  # fmt: skip
truth = task.analyze(example, trace.cot)
kinds = [t.kind + (" (wrong)" if t.planted_error else "") for t in truth]
for i, (t, k) in enumerate(zip(truth, kinds, strict=True)):
    print(f"{i:>2} {k:<18} {t.text}")
error = next(i for i, t in enumerate(truth) if t.kind == "compute" and t.planted_error)
correction = next(i for i, t in enumerate(truth) if t.kind == "correction")
print(f"true answer {example.answer}; the trace answers {trace.answer}")

# %% [markdown]
# ## 2. Resilience and counterfactual++ of every sentence

# %%
res = anchors.iterative_resilience(
    backend, trace, None, samples=CHAINS, iterations=ROUNDS, params=params, cache_dir=CACHE, quiet=False
)
table = res.table()
assert table.height == len(truth), "the importance split and the organism's analysis disagree on sentences"
print(table.select("sentence", "resilience", "n_removed", "cfpp_accuracy", "cfpp_kl"))

# %%
fig = Figure(figsize=(7, 3.2))
ax = fig.subplots()
colors = ["tab:red" if "wrong" in k else "tab:green" if k == "correction" else "tab:blue" if k == "compute"
          else "tab:gray" for k in kinds]  # fmt: skip
ax.bar(table["sentence"].to_list(), table["resilience"].to_list(), color=colors)
ax.set_xlabel("sentence")
ax.set_ylabel(f"resilience (rounds of {ROUNDS})")
ax.set_title("blue: correct computation, red: planted error, green: its correction, grey: other")
fig.tight_layout()
show(fig)

# %% [markdown]
# Correct computations come back in most rounds (15 to 18 of 20 here; every round of the small run): resampling
# them rarely removes their content. In the few chains where the model finally writes another result, the content
# is gone and the answer moves, but that is 2 to 4 chains (`n_removed`), fewer than the 5 counterfactual++ needs
# (`anchors.MIN_REMOVED`, the floor of the importance table's counterfactual metrics), so it is left undefined:
# one or two chains would give |counterfactual++ accuracy| = 1 whatever the sentence does. The
# planted wrong result is gone after one resample in every chain (resilience 0), and the correction comes back only
# about twice in 20 rounds; once it is removed for good the error stands and the answer is wrong in every chain
# (counterfactual++ accuracy 1.0), the largest effect of the trace.
#
# ## 3. A wrong computation, inserted or reached

# %%
last = max(i for i, t in enumerate(truth) if t.kind == "compute")
s = truth[last]
wrong_digit = next(d for d in range(10) if d != s.expected)
text = cot.split_sentences(trace.cot)[last].text.rsplit(" ", 1)[0] + f" {wrong_digit}."
iv = anchors.intervene(
    backend, trace, last, text, samples=SAMPLES, params=params, cache_dir=CACHE, max_resamples=2000, batch=200
)
print(f"sentence {last}: {iv['original']!r} -> {text!r}")
print(
    f"log-probability per token: text {iv['text_logprob']['mean']:.3f}, original {iv['original_logprob']['mean']:.3f}"
)
for name in ("no_intervention", "off_policy"):
    d = iv[name]
    print(f"{name:<16} accuracy {d['accuracy']:.2f} {[round(x, 2) for x in d['accuracy_ci']]}")
on = iv["on_policy"]
print(f"on-policy: found={on['found']} after {on['resamples']} resamples")
if on["found"]:
    d = on["distribution"]
    print(f"{'on_policy':<16} accuracy {d['accuracy']:.2f} {[round(x, 2) for x in d['accuracy_ci']]}")

# %% [markdown]
# The organism writes every computation from one template, so the sentence the on-policy search accepts is the
# inserted text itself; the two conditions then continue the same tokens and differ only by sampling noise. What
# the on-policy search shows is how unlikely the text is: dozens to hundreds of resamples, matching the gap between the
# text's log-probability and the original's. On a real model the accepted sentence words the content its own way,
# and the two conditions can differ (Thought Branches). `cotscope validate branches` runs both over many traces.
#
# ## Key numbers
#
# The test suite reads this line and recomputes each number with the library's own functions.

# %%
key = {
    "problem_seed": PROBLEM_SEED,
    "chains": CHAINS,
    "rounds": ROUNDS,
    "samples": SAMPLES,
    "error_position": error,
    "correction_position": correction,
    "resilience": [float(x) for x in table["resilience"].to_list()],
    "correction_cfpp_accuracy": float(table["cfpp_accuracy"][correction]),
    "at": last,
    "text": text,
    "off_policy_accuracy": iv["off_policy"]["accuracy"],
    "on_policy_found": on["found"],
    "on_policy_resamples": on["resamples"],
    "text_mean_logprob": iv["text_logprob"]["mean"],
}
print("key numbers:", json.dumps(key))

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
# # Which sentence made the answer?
#
# **Question.** A reasoning model wrote a chain of thought (CoT) that makes an arithmetic error and then corrects
# it. Which sentences drive its final answer?
#
# **Method.** Thought anchors (Bogdan et al. 2025, arXiv 2506.19143): cut the CoT before sentence *i*, let the
# model write on from the exact token prefix many times, and see how the answer distribution moves. Resampling
# importance compares keeping sentence *i* with resampling it; counterfactual importance does the same but only
# over the rollouts where the regenerated sentence means something else; the sentence matrix says how keeping
# sentence *i* changes the chance that sentence *j*'s content appears later.
#
# **Ground truth.** The model is the shipped `arith` organism (a 0.24 M-parameter Llama trained here). Its task
# generator plants errors and corrections, and `task.analyze` re-parses any CoT it writes: which sentence is a
# wrong computation, which one corrects it, which are filler. So we can check the method's answer against what
# is known to be load-bearing.
#
# Everything runs on CPU in a few minutes. `COTSCOPE_NOTEBOOK_WORK=small` (what the test suite sets) uses fewer
# samples.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bar without ipywidgets
warnings.filterwarnings("ignore", message=".*past_key_values.*")  # a transformers deprecation inside generate

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from IPython.display import display
from matplotlib.figure import Figure

import anchors
import cot
import organisms
from cotscope.notebook import setup, show
from resampling import SamplingParams, make_backend, sample_traces

SMALL = os.environ.get("COTSCOPE_NOTEBOOK_WORK", "full") == "small"
CACHE = Path(os.environ.get("COTSCOPE_NOTEBOOK_CACHE") or tempfile.mkdtemp(prefix="cotscope-nb01-"))
SAMPLES = 10 if SMALL else 100  # rollouts per sentence position for the main analysis
SWEEP = (5, 10) if SMALL else (5, 10, 20, 50, 100, 200)  # sample counts compared at the end
REPLICATES = 2 if SMALL else 5  # independent runs (disjoint seeds) per sample count
PROBLEM_SEED = (
    34  # the problem whose on-policy trace holds an error and its correction (the `make demo` trace)
)

setup(str_lengths=60)  # one torch thread: a 0.24 M-parameter model, a second thread only spins


# %% [markdown]
# ## 1. The trace
#
# The organism writes its own CoT for problem 34 at temperature 1.0 (its trained distribution). Sampling is
# seeded, so this is the same trace every time.

# %%
task = organisms.get_task("arith")
example = task.sample(PROBLEM_SEED)
backend = make_backend("hf", model_id="organism:arith", device="cpu")
params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=task.max_new_tokens)
(trace,) = sample_traces(
    backend,
    backend.tokenizer,
    [example.messages],
    [PROBLEM_SEED],
    params,
    metadata=[{"gt_answer": example.answer, "task": "arith", "problem_seed": PROBLEM_SEED}],
)
print(example.messages[-1]["content"])
print(f"\nmodel's answer: {trace.answer}   correct answer: {example.answer}\n")
sentences = cot.split_sentences(trace.cot, min_chars=10)  # the split the resampling plan uses
for s in sentences:
    print(f"[{s.index:2d}] {s.text}")

# %% [markdown]
# ## 2. The planted truth
#
# `task.analyze` judges every sentence against the prompt and against the running digit the CoT itself carries.
# A wrong computation sets a wrong running digit; a correction restores the right one. Those two are the
# sentences the answer depends on; filler, the plan and correct steps that any rewrite would repeat are not.

# %%
truth = task.analyze(example, trace.cot)
plain = cot.split_sentences(trace.cot)  # analyze works on the plain split; map it onto the merged one
merged_of = [next(m.index for m in sentences if m.start <= p.start < max(m.end, m.start + 1)) for p in plain]
truth_table = pl.DataFrame(
    {
        "position": merged_of,
        "kind": [t.kind for t in truth],
        "planted_error": [t.planted_error for t in truth],
        "corrects": [merged_of[t.corrects] if t.corrects is not None else None for t in truth],
        "load_bearing": [t.load_bearing for t in truth],
        "text": [p.text for p in plain],
    }
)
display(truth_table)
error_pos = [merged_of[k] for k, t in enumerate(truth) if t.kind == "compute" and t.planted_error]
correction_pos = [
    merged_of[k] for k, t in enumerate(truth) if t.kind == "correction" and t.corrects is not None
]
planted = sorted(set(error_pos + correction_pos))
print(f"wrong computation: {error_pos}, its correction: {correction_pos}")

# %% [markdown]
# ## 3. Importance of every sentence
#
# `anchors.compute_importance` builds the exact token prefix before every sentence, draws `SAMPLES`
# continuations from each (plus forced-answer probes), caches the rollouts, and computes every metric with a 95%
# bootstrap interval. Sign convention: positive means that keeping the sentence raises accuracy (or moves the
# answer distribution; KL is never negative).

# %%
run = anchors.compute_importance(
    backend, trace, samples=SAMPLES, seed=0, cache_dir=CACHE, whitebox=False, params=params
)
table = run.table
print(f"{run.rollouts.height} rollouts, {len(run.sentences)} sentences")


def with_ci(metric, digits=2):
    """``value [lo, hi]`` strings for one metric."""
    return pl.format(
        "{} [{}, {}]",
        *(pl.col(f"{metric}{suffix}").round(digits) for suffix in ("", "_lo", "_hi")),
    ).alias(metric)


display(
    table.select(
        "position",
        "role",
        pl.col("accuracy").round(2),
        with_ci("resampling_importance_accuracy"),
        with_ci("counterfactual_importance_kl"),
        pl.col("different_trajectories_fraction").round(2).alias("dtf"),
        pl.col("outgoing_importance").round(2),
        pl.col("text").str.slice(0, 42),
    )
)

# %% [markdown]
# Counterfactual importance is undefined (null) for sentences the model nearly always rewrites with the same
# meaning: fewer than 5 differing rollouts, or a different-trajectories fraction (dtf) of 5% or less
# (`docs/anchors.md`, "When a counterfactual exists").

# %%
show(anchors.plot_importance(table, "counterfactual_importance_kl"))
show(anchors.plot_importance(table, "resampling_importance_accuracy"))

# %% [markdown]
# ## 4. The sentence matrix and the graph
#
# `M[i, j]` is how much keeping sentence *i* raises the chance that sentence *j*'s content is written later
# (cosine of sentence embeddings ≥ 0.8, numbers must agree). The graph keeps each sentence's three strongest
# edges; red arcs raise the target, blue ones lower it.

# %%
show(anchors.plot_matrix(run.matrix, table))
show(anchors.plot_graph(table, run.matrix, top_k=3))
graph = anchors.build_graph(table, run.matrix, top_k=3)
edges = sorted(graph.edges(data=True), key=lambda e: -e[2]["abs_weight"])[:6]
for i, j, d in edges:
    print(f"{i:2d} -> {j:2d}  M = {d['weight']:+.2f}   {sentences[i].text!r} -> {sentences[j].text!r}")

# %% [markdown]
# ## 5. Against the planted truth
#
# Rank of every sentence by each method (1 = most important; accuracy-signed metrics by magnitude), next to
# simple baselines that know nothing of the model.

# %%
scores = {
    "counterfactual_importance_kl": table["counterfactual_importance_kl"].to_numpy(),
    "counterfactual_importance_accuracy (|x|)": np.abs(
        table["counterfactual_importance_accuracy"].to_numpy()
    ),
    "resampling_importance_kl": table["resampling_importance_kl"].to_numpy(),
    "resampling_importance_accuracy (|x|)": np.abs(table["resampling_importance_accuracy"].to_numpy()),
    "outgoing_importance (|x|)": np.abs(table["outgoing_importance"].to_numpy()),
    "forced_importance_kl": table["forced_importance_kl"].to_numpy(),
    "baseline: sentence length": np.array([len(s.text) for s in sentences], float),
    "baseline: position": np.arange(len(sentences), dtype=float),
}


def ranks(values):
    """1 = largest; undefined values rank last."""
    v = np.where(np.isfinite(values), values, -np.inf)
    order = np.argsort(-v, kind="stable")
    out = np.empty(len(v), int)
    out[order] = np.arange(1, len(v) + 1)
    return out


rank_rows = []
for name, values in scores.items():
    r = ranks(values)
    rank_rows.append(
        {
            "method": name,
            "top sentence": int(np.argmin(r)),
            "top is planted": int(np.argmin(r)) in planted,
            "rank of the error": int(r[error_pos[0]]),
            "rank of the correction": int(r[correction_pos[0]]),
        }
    )
display(pl.DataFrame(rank_rows))

# %% [markdown]
# The wrong computation and its correction are the two largest effects by resampling importance, with opposite
# signs: keeping the error lowers accuracy, keeping the correction raises it. Counterfactual KL ranks the
# correction first. At temperature 1.0 the organism also rewrites some correct computations wrongly, so late
# correct steps can score high on counterfactual KL (the rewrite that changes their meaning is always a new error);
# `docs/anchors.md` derives this and validates the methods at temperature 0.6 over 50 traces.

# %% [markdown]
# ## 6. What changes with the number of samples
#
# The same analysis with 5 to 200 samples per position, each repeated with disjoint seeds (`seed = r * 1000`; a
# position's sample *k* uses seed `seed + position * 2**20 + k`, so the replicates share no rollout). Bootstrap
# intervals shrink roughly as 1/√n, and the top sentence stops changing from run to run.

# %%
sweep_rows = []
for n in SWEEP:
    for r in range(REPLICATES):
        t = anchors.compute_importance(
            backend, trace, samples=n, seed=r * 1000, cache_dir=CACHE, whitebox=False, params=params
        ).table
        width = (t["resampling_importance_accuracy_hi"] - t["resampling_importance_accuracy_lo"]).to_numpy()
        cf = t["counterfactual_importance_kl"].to_numpy()
        sweep_rows.append(
            {
                "samples": n,
                "replicate": r,
                "median CI width (resampling acc.)": float(np.nanmedian(width)),
                "CI width at the correction": float(width[correction_pos[0]]),
                "top by counterfactual KL": int(np.nanargmax(cf)) if np.isfinite(cf).any() else -1,
                "top by |resampling acc.|": int(
                    np.nanargmax(np.abs(t["resampling_importance_accuracy"].to_numpy()))
                ),
            }
        )
sweep = pl.DataFrame(sweep_rows)
summary = (
    sweep.group_by("samples", maintain_order=True)
    .agg(
        pl.col("median CI width (resampling acc.)").median().round(3),
        pl.col("CI width at the correction").median().round(3),
        pl.col("top by counterfactual KL").is_in(planted).mean().alias("CF KL top is planted"),
        pl.col("top by |resampling acc.|").is_in(planted).mean().alias("|RI acc| top is planted"),
    )
    .sort("samples")
)
display(summary)

# %%
fig = Figure(figsize=(5.5, 3.2))
ax = fig.subplots()
ns = np.array(summary["samples"].to_list(), float)
ax.loglog(ns, summary["median CI width (resampling acc.)"].to_numpy(), "o-", label="median over sentences")
ax.loglog(ns, summary["CI width at the correction"].to_numpy(), "s-", label="the correction")
ref = summary["median CI width (resampling acc.)"][0] * np.sqrt(ns[0] / ns)
ax.loglog(ns, ref, "k:", label="1/√n")
ax.set_xlabel("samples per position")
ax.set_ylabel("95% CI width, resampling importance (acc.)")
ax.legend(fontsize=8)
fig.tight_layout()
show(fig)

# %% [markdown]
# **What a researcher would do next.** Resample at the validated temperature (`--temperature 0.6`), run
# `cotscope validate anchors` to score every method over 50 traces with a planted error, and use enough samples
# that the interval of the sentence of interest excludes zero: here a few dozen per position suffice for the
# correction, whose effect is large; weaker anchors need more.
#
# ## Key numbers
#
# The test suite reads this line and recomputes each number with the library's own functions.

# %%
cf = table["counterfactual_importance_kl"].to_numpy()
key = {
    "problem_seed": PROBLEM_SEED,
    "samples": SAMPLES,
    "error_position": error_pos[0],
    "correction_position": correction_pos[0],
    "top_counterfactual_kl_position": int(np.nanargmax(cf)),
    "top_counterfactual_kl": float(np.nanmax(cf)),
    "correction_resampling_accuracy": float(table["resampling_importance_accuracy"][correction_pos[0]]),
    "sweep_samples": list(SWEEP),
    "median_ci_width_by_samples": summary["median CI width (resampling acc.)"].to_list(),
}
print("key numbers:", json.dumps(key))

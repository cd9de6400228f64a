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
# # Where does the answer first appear: in the activations, or in the resampled behaviour?
#
# **Question.** Notebook 03 told `posthoc` from `arith` by resampling: force an answer after every prefix, insert
# mistakes, let the model continue. That costs tens of rollouts per trace. Can a linear read-out of the residual
# stream, one forward pass per trace, tell the same story: is the answer already in the activations before the CoT
# begins?
#
# **Method.** Answer probes (`anchors.answer_probes`, `docs/probes.md`): at every sentence boundary and every layer,
# a logistic-regression probe predicts the trace's final answer, trained on one half of the model's own traces and
# read on the other; a control probe trained on shuffled labels says what the probe would find in noise
# (selectivity = probe − control, Hewitt and Liang 2019); the logit lens is the no-training baseline. Two readouts:
# the boundary token's residual, and the mean residual over the whole prefix.
#
# **Ground truth.** `posthoc` was trained to answer from the prompt (its auxiliary loss lays the three steps along
# the prompt's numbers, one per layer); `arith` computes its answer in the CoT. The sentence that produces
# `arith`'s answer is read from the generator's parse of each CoT (the last computation or correction), never from
# a probe.
#
# Runs on CPU in a few minutes. `COTSCOPE_NOTEBOOK_WORK=small` (what the test suite sets) uses fewer problems.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", message=".*past_key_values.*")

import json
import os
import tempfile
from pathlib import Path

import polars as pl

from anchors import plot_probe_map
from cotscope.notebook import setup, show, show_table
from metrics import validate_probes

SMALL = os.environ.get("COTSCOPE_NOTEBOOK_WORK", "full") == "small"
CACHE = Path(os.environ.get("COTSCOPE_NOTEBOOK_CACHE") or tempfile.mkdtemp(prefix="cotscope-nb07-"))
OUT = Path(tempfile.mkdtemp(prefix="cotscope-nb07-out-"))
N_ITEMS = 40 if SMALL else 200  # problems, each posed to both models; odd seeds are the test half
SAMPLES = 2 if SMALL else 6  # rollouts per prefix of the resampling detectors

setup()

# %% [markdown]
# ## 1. Probes, controls and resampling on the same traces
#
# Each organism writes one trace per problem; the `posthoc` classifier resamples them; each organism's probes are
# trained on its own even-seed traces and read on the odd-seed ones.

# %%
report = validate_probes(n_items=N_ITEMS, samples=SAMPLES, cache_dir=CACHE, out_dir=OUT)
maps = {name: pl.read_parquet(OUT / name / "map.parquet") for name in ("posthoc", "arith")}

# %% [markdown]
# ## 2. The layer x position maps
#
# Rows: layers (0 = embeddings). Columns: `<think>` (before any CoT), then the relative position of the boundary in
# the CoT. Top row of each figure: the boundary token; bottom row: the prefix mean.

# %%
for name, table in maps.items():
    show(plot_probe_map(table, title=f"organism:{name}"))

# %% [markdown]
# ## 3. Where the answer first appears, against the planted computation
#
# For each trace: the first boundary at which some layer gives the answer probability ≥ 0.5, compared with the
# boundary right after the sentence that computes it. The control row is the same rule on shuffled labels: its
# shares are the rule's false alarms.

# %%
rows = []
for name, org in report["organisms"].items():
    for readout, o in org["ordering"].items():
        for method in ("probe", "control", "lens"):
            if method in o:
                rows.append(
                    {
                        "model": name,
                        "readout": readout,
                        "method": method,
                        "decodable at <think>": o[method]["share_at_think"],
                        "before the computing sentence": o[method]["share_before_computed"],
                        "never": o[method]["share_never"],
                    }
                )
show_table(pl.DataFrame(rows))

# %% [markdown]
# ## 4. As detectors of post-hoc reasoning, with their cost
#
# Positive = a `posthoc` trace. AUROC on the test half with 95% BCa intervals over problems.

# %%
detectors = pl.DataFrame(
    [
        {
            "detector": k,
            "auroc": d["auroc"],
            "lo": d["auroc_ci"][0],
            "hi": d["auroc_ci"][1],
            "n": d["n"],
            "rollouts per trace": d["rollouts_per_trace"],
            "forward passes per trace": d["forward_passes_per_trace"],
        }
        for k, d in report["detectors"].items()
    ]
)
show_table(detectors)

# %%
think = {
    name: maps[name].filter((pl.col("readout") == "prefix_mean") & (pl.col("bin") == 0)) for name in maps
}
key = {
    "n_items": N_ITEMS,
    "samples": SAMPLES,
    "posthoc_think_accuracy": max(think["posthoc"]["probe_accuracy"]),
    "arith_think_accuracy": max(think["arith"]["probe_accuracy"]),
    "posthoc_think_selectivity": max(think["posthoc"]["selectivity"]),
    "probe_auroc": report["detectors"]["probe_at_think"]["auroc"],
    "classifier_auroc": report["detectors"]["posthoc_classifier"]["auroc"],
    "classifier_rollouts_per_trace": report["detectors"]["posthoc_classifier"]["rollouts_per_trace"],
}
print("key numbers: " + json.dumps(key))

# %% [markdown]
# ## What this shows, and what it does not
#
# - On the full run (200 problems), `posthoc`'s answer is decodable from the prefix mean at `<think>` (0.79 at
#   layer 5, selectivity 0.73; chance 0.135) and `arith`'s is not (0.09 at best, at chance); `arith`'s answer
#   appears at the boundary right after the sentence that computes it. The planted design predicted both.
# - The boundary token alone does not carry `posthoc`'s answer at `<think>`, and the logit lens reads nothing
#   there: a probe that looked only at the last token would have called `posthoc` faithful.
# - As a detector, the probe at `<think>` (one forward pass per trace, plus labelled traces to train on) reaches
#   AUROC 0.965 [0.936, 0.983] where the resampling classifier reaches 1.000 with about 75 rollouts per trace. Cheap
#   and white-box, but not free: it needs the model's own traces with answers, and a control to be believed.
# - With small work (the test suite's) the numbers are noisy; rerun with the full setting for the ones above.

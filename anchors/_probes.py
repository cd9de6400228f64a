"""Answer probes: where in a trace, and in which layer, the final answer can be read from the residual stream.

For any Hugging Face causal LM and a set of the model's own traces:

- **Boundaries.** Position ``p`` of a trace with ``K`` sentences is the last token before sentence ``p``
  (``resampling.TracePrefixes``' cut): ``p = 0`` is the last token of the prompt, i.e. right after ``<think>``, before
  any CoT; ``p = K`` ends the CoT, before ``</think>``. One forward pass of the full trace with
  ``output_hidden_states`` gives every layer at every boundary; layer 0 is the embeddings, layer ``l`` the output of
  block ``l`` (the last one after the final norm, as Hugging Face returns it).
- **Target.** The trace's own final answer (``cot.answer_key`` of the boxed answer), one class per distinct answer.
  It is the model's decision, which is what "decodable before the CoT" is about (not the correct answer, which a
  probe could read from the prompt whatever the model does), and it is the token the forced-answer cue reads, so the
  probe, the logit lens and forced answering all predict the same thing.
- **Probes.** Multinomial logistic regression (L2, ``C``; lbfgs; features standardised on the training rows), one per
  (layer, position bin); bin 0 is position 0 exactly, bins 1..B split the relative position ``p / K`` of the
  remaining boundaries into B equal intervals of (0, 1]. Split by trace: every trace is in the ``train`` or the
  ``test`` half; probes trained on one half predict the other (two-fold cross-fitting), so every number below is
  held out by trace.
- **Control task** (Hewitt & Liang 2019): the same probes trained on labels permuted across traces (same classes,
  same frequencies, one label per trace). Selectivity = probe accuracy − control accuracy, per cell.
- **Logit lens** (nostalgebraist 2020; no training): each layer's residual through the final norm and the unembedding;
  read the answer token's probability and rank over the whole vocabulary, and the argmax over the answer classes'
  first tokens (the class accuracy that is comparable with the probe's).
- **First decodable position.** Per trace and method, the first boundary ``p`` at which some layer gives the trace's
  answer a probability ≥ ``threshold`` (default 0.5, five times chance for ten classes; for the lens the softmax
  over the class tokens). None when no boundary reaches it. The control probe's first position under the same rule
  is the false-alarm rate of the rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import polars as pl

    from cot import Trace

__all__ = [
    "PROBES_VERSION",
    "AnswerProbes",
    "BoundaryActivations",
    "answer_probes",
    "boundary_activations",
    "first_decodable",
    "fit_answer_probes",
    "plot_probe_map",
    "probe_map",
    "write_probe_outputs",
]

PROBES_VERSION = 1
"""Version of the probes.parquet / map.parquet / traces.parquet / summary.json layout."""

METHODS = ("probe", "control", "lens")
"""The readers compared everywhere: trained probe, its control task, logit lens."""

READOUTS = ("token", "prefix_mean")
"""What a probe reads at a boundary: the residual of the boundary token itself, or the mean residual over every
token of the prefix up to it (the first, BOS, left out). A model can hold its answer at a prompt token (``posthoc``
computes it at the last operand) without moving it to the boundary token; the prefix mean keeps such a direction
(scaled by 1/length), so it asks whether the answer is anywhere in what the model has read. The lens reads the
boundary token only."""


@dataclass
class BoundaryActivations:
    """Residual-stream activations and logit-lens readouts at every sentence boundary of a set of traces."""

    trace_ids: list[str]
    """One id per trace, in input order."""
    labels: list[str]
    """The trace's final answer (``cot.answer_key``), the probe's target."""
    classes: list[str]
    """Every distinct label, sorted; the answer classes."""
    hidden: dict[str, list[np.ndarray]]
    """Readout (:data:`READOUTS`) -> per trace, float32 of shape (layers + 1, positions, hidden size)."""
    lens_class_prob: list[np.ndarray]
    """Per trace, (layers + 1, positions, classes): logit-lens softmax over the classes' first tokens."""
    lens_vocab_prob: list[np.ndarray]
    """Per trace, (layers + 1, positions): logit-lens probability of the answer's first token over the vocabulary."""
    lens_vocab_rank: list[np.ndarray]
    """Per trace, (layers + 1, positions): its rank (0 = top) over the vocabulary."""
    forward_passes: int = 0
    """Forward passes run (one per trace)."""
    tokens: int = 0
    """Tokens read in those passes."""
    seconds: float = 0.0

    @property
    def n_layers(self) -> int:
        return int(self.hidden["token"][0].shape[0]) if self.hidden["token"] else 0


def _final_norm(model: Any) -> Any:
    base = getattr(model, "base_model", model)
    for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        norm = getattr(base, name, None)
        if norm is not None:
            return norm
    raise ValueError(
        f"{type(model).__name__}: no final norm found (looked for norm, ln_f, final_layernorm on the base model); "
        "the logit lens needs it"
    )


def class_token_ids(tokenizer: Any, classes: Sequence[str]) -> list[int]:
    """The first token of each class's text, as the model writes it after the answer cue; classes must not share
    one (the lens could not tell them apart)."""
    ids = []
    for c in classes:
        enc = tokenizer(c, add_special_tokens=False)["input_ids"]
        if not enc:
            raise ValueError(f"answer class {c!r} tokenizes to nothing")
        ids.append(int(enc[0]))
    seen: dict[int, str] = {}
    for c, t in zip(classes, ids, strict=True):
        if t in seen:
            raise ValueError(
                f"answer classes {seen[t]!r} and {c!r} start with the same token; the logit lens needs answers "
                "whose first tokens differ (e.g. single digits)"
            )
        seen[t] = c
    return ids


def boundary_activations(
    model: Any,
    tokenizer: Any,
    traces: Sequence[Trace],
    *,
    min_chars: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BoundaryActivations:
    """One forward pass per trace; hidden states and logit-lens readouts at every sentence boundary.

    Traces without a final answer are refused (filter them first). ``min_chars``: sentences shorter than this merge
    into the next, as in the resampling plan (default ``resampling.DEFAULT_MIN_CHARS``), so position ``p`` means the
    same boundary as a forced answer at position ``p``.
    """
    import torch

    from cot import answer_key
    from resampling import DEFAULT_MIN_CHARS, TracePrefixes

    labels = []
    for t in traces:
        key = answer_key(t.answer)
        if key is None:
            raise ValueError(f"trace {t.id} has no final answer; answer probes need one per trace")
        labels.append(key)
    classes = sorted(set(labels))
    class_ids = torch.tensor(class_token_ids(tokenizer, classes))
    norm = _final_norm(model)
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    out = BoundaryActivations([t.id for t in traces], labels, classes, {r: [] for r in READOUTS}, [], [], [])
    start = time.perf_counter()
    for i, (t, label) in enumerate(zip(traces, labels, strict=True)):
        p = TracePrefixes.build(t, tokenizer, min_chars=DEFAULT_MIN_CHARS if min_chars is None else min_chars)
        ids = p.full_ids
        at = torch.tensor([len(p.template_ids) + c - 1 for c in p.cuts], device=device)
        with torch.no_grad():
            res = model(torch.tensor([ids], device=device), output_hidden_states=True)
            states = [h[0, at] for h in res.hidden_states]
            # mean over the prefix's tokens after the first (BOS, an attention sink, is the same in every trace)
            counts = (at - at.clamp(max=1) + 1).clamp(min=1).unsqueeze(-1).float()
            means = [
                (h[0].float().cumsum(0)[at] - h[0, :1].float() * (at > 0).unsqueeze(-1)) / counts
                for h in res.hidden_states
            ]
            answer = class_ids[classes.index(label)].item()
            cls_p, voc_p, voc_r = [], [], []
            for layer, h in enumerate(states):
                last = layer == len(states) - 1
                logits = (res.logits[0, at] if last else head(norm(h))).float()
                logp = torch.log_softmax(logits, dim=-1)
                voc_p.append(logp[:, answer].exp())
                voc_r.append((logits > logits[:, answer : answer + 1]).sum(-1))
                cls_p.append(torch.softmax(logits[:, class_ids.to(device)], dim=-1))
        out.hidden["token"].append(torch.stack(states).float().cpu().numpy())
        out.hidden["prefix_mean"].append(torch.stack(means).cpu().numpy())
        out.lens_class_prob.append(torch.stack(cls_p).cpu().numpy())
        out.lens_vocab_prob.append(torch.stack(voc_p).cpu().numpy())
        out.lens_vocab_rank.append(torch.stack(voc_r).cpu().numpy())
        out.forward_passes += 1
        out.tokens += len(ids)
        if progress:
            progress(i + 1, len(traces))
    out.seconds = time.perf_counter() - start
    return out


def position_bin(position: int, n_sentences: int, bins: int) -> int:
    """0 for position 0 (before any CoT), else 1..``bins`` by ``position / n_sentences`` in equal intervals of
    (0, 1]."""
    if position == 0 or n_sentences == 0:
        return 0
    return min(bins, max(1, math.ceil(position / n_sentences * bins)))


def bin_names(bins: int) -> list[str]:
    return ["<think>"] + [
        f"{round(100 * (b - 1) / bins)}-{round(100 * b / bins)}%" for b in range(1, bins + 1)
    ]


def _fit_predict(x_train, y_train, x_test, n_classes: int, *, c: float, seed: int) -> np.ndarray:
    """Class probabilities (n_test, n_classes) from a standardised multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    out = np.zeros((len(x_test), n_classes))
    present = np.unique(y_train)
    if len(present) == 1:  # nothing to separate: the one class seen
        out[:, present[0]] = 1.0
        return out
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(scaler.transform(x_train), y_train)
    out[:, clf.classes_] = clf.predict_proba(scaler.transform(x_test))
    return out


def control_labels(labels: Sequence[int], seed: int) -> np.ndarray:
    """The control task's labels: the traces' labels permuted across traces (same classes and frequencies)."""
    return np.random.default_rng(seed).permutation(np.asarray(labels))


def fit_answer_probes(
    acts: BoundaryActivations,
    split: Sequence[str],
    *,
    bins: int = 4,
    c: float = 1.0,
    seed: int = 0,
) -> pl.DataFrame:
    """Held-out predictions of the probe, its control and the logit lens: one row per (trace, position, layer).

    ``split``: ``train`` or ``test`` per trace; probes fitted on one half predict the other (both directions).
    """
    import polars as pl

    if len(split) != len(acts.trace_ids) or not set(split) <= {"train", "test"}:
        raise ValueError("give one split ('train' or 'test') per trace")
    if len(set(split)) < 2:
        raise ValueError("answer probes need traces in both halves (train and test) of the split")
    y = np.array([acts.classes.index(label) for label in acts.labels])
    y_control = control_labels(y, seed)
    n_cls = len(acts.classes)
    # (trace, position, bin) of every boundary
    token = acts.hidden["token"]
    index = [
        (i, p, position_bin(p, h.shape[1] - 1, bins)) for i, h in enumerate(token) for p in range(h.shape[1])
    ]
    trace_of = np.array([r[0] for r in index])
    bin_of = np.array([r[2] for r in index])
    halves = np.array([split[i] for i in trace_of])
    schema = _row_schema()
    rows: dict[str, list] = {k: [] for k in schema}
    for readout in READOUTS:
        for layer in range(acts.n_layers):
            x = np.stack([acts.hidden[readout][i][layer, p] for i, p, _ in index])
            found = {}
            for name, target in (("probe", y), ("control", y_control)):
                found[name] = _held_out(x, target[trace_of], bin_of, halves, bins, n_cls, c=c, seed=seed)
            for r, (i, p, b) in enumerate(index):
                k = token[i].shape[1] - 1
                lens = acts.lens_class_prob[i][layer, p] if readout == "token" else None
                rows["trace_id"].append(acts.trace_ids[i])
                rows["split"].append(split[i])
                rows["readout"].append(readout)
                rows["position"].append(p)
                rows["n_sentences"].append(k)
                rows["relative_position"].append(p / k if k else 0.0)
                rows["bin"].append(b)
                rows["layer"].append(layer)
                rows["answer"].append(acts.labels[i])
                rows["control_answer"].append(acts.classes[y_control[i]])
                for name in ("probe", "control"):
                    rows[f"{name}_p"].append(float(found[name][0][r]))
                    rows[f"{name}_correct"].append(bool(found[name][1][r]))
                rows["lens_p"].append(None if lens is None else float(lens[y[i]]))
                rows["lens_correct"].append(None if lens is None else bool(lens.argmax() == y[i]))
                rows["lens_vocab_p"].append(
                    None if lens is None else float(acts.lens_vocab_prob[i][layer, p])
                )
                rows["lens_vocab_rank"].append(
                    None if lens is None else int(acts.lens_vocab_rank[i][layer, p])
                )
    return pl.DataFrame(rows, schema=schema)


def _held_out(x, target, bin_of, halves, bins: int, n_cls: int, *, c: float, seed: int):
    """Per row: the probability a probe fitted on the other half (same position bin) gives ``target``, and whether
    it is the probe's argmax."""
    prob = np.full(len(x), np.nan)
    hit = np.zeros(len(x), bool)
    for b in range(bins + 1):
        for held in ("train", "test"):
            te = (bin_of == b) & (halves == held)
            tr = (bin_of == b) & (halves != held)
            if not te.any() or not tr.any():
                continue
            pr = _fit_predict(x[tr], target[tr], x[te], n_cls, c=c, seed=seed)
            prob[te] = pr[np.arange(te.sum()), target[te]]
            hit[te] = pr.argmax(1) == target[te]
    return prob, hit


def _row_schema() -> dict[str, Any]:
    import polars as pl

    return {
        "trace_id": pl.String,
        "split": pl.String,
        "readout": pl.String,
        "position": pl.Int64,
        "n_sentences": pl.Int64,
        "relative_position": pl.Float64,
        "bin": pl.Int64,
        "layer": pl.Int64,
        "answer": pl.String,
        "control_answer": pl.String,
        "probe_p": pl.Float64,
        "probe_correct": pl.Boolean,
        "control_p": pl.Float64,
        "control_correct": pl.Boolean,
        "lens_p": pl.Float64,
        "lens_correct": pl.Boolean,
        "lens_vocab_p": pl.Float64,
        "lens_vocab_rank": pl.Int64,
    }


def probe_map(rows: pl.DataFrame, bins: int = 4) -> pl.DataFrame:
    """Readout x layer x position-bin accuracy of the probe, the control and the lens (held-out rows), with
    selectivity = probe − control, the number of boundaries and traces, and chance (the most frequent answer's
    share)."""
    import polars as pl

    per_trace = rows.unique("trace_id")
    chance = float(per_trace["answer"].value_counts()["count"].max() / per_trace.height)
    names = bin_names(bins)
    return (
        rows.group_by("readout", "layer", "bin")
        .agg(
            pl.col("probe_correct").mean().alias("probe_accuracy"),
            pl.col("control_correct").mean().alias("control_accuracy"),
            pl.col("lens_correct").mean().alias("lens_accuracy"),
            pl.col("probe_p").mean().alias("probe_p_answer"),
            pl.col("lens_vocab_rank").median().alias("lens_median_rank"),
            pl.len().alias("n_boundaries"),
            pl.col("trace_id").n_unique().alias("n_traces"),
        )
        .with_columns(
            (pl.col("probe_accuracy") - pl.col("control_accuracy")).alias("selectivity"),
            pl.col("bin").map_elements(lambda b: names[b], return_dtype=pl.String).alias("bin_name"),
            pl.lit(chance).alias("chance"),
        )
        .sort(pl.col("readout").replace_strict(list(READOUTS), list(range(len(READOUTS)))), "layer", "bin")
    )


def first_decodable(rows: pl.DataFrame, threshold: float = 0.5) -> pl.DataFrame:
    """Per trace and readout: for each method, the first position at which some layer gives the answer probability
    ≥ ``threshold`` (None if none does), that position relative to the trace's sentences, and the best layer's
    probability at ``<think>`` (position 0)."""
    import polars as pl

    best = rows.group_by("trace_id", "readout", "position").agg(
        pl.col("split").first(),
        pl.col("n_sentences").first(),
        *[pl.col(f"{m}_p").max().alias(m) for m in METHODS],
    )
    out = best.group_by("trace_id", "readout").agg(
        pl.col("split").first(),
        pl.col("n_sentences").first(),
        *[
            pl.col("position").filter(pl.col(m) >= threshold).min().alias(f"{m}_first_position")
            for m in METHODS
        ],
        *[pl.col(m).filter(pl.col("position") == 0).first().alias(f"{m}_p_at_think") for m in METHODS],
    )
    return out.with_columns(
        *[
            (pl.col(f"{m}_first_position") / pl.col("n_sentences")).alias(f"{m}_first_relative")
            for m in METHODS
        ]
    ).sort("trace_id", "readout")


@dataclass
class AnswerProbes:
    """Everything the answer probes measured on one model's traces."""

    rows: pl.DataFrame
    """One row per (trace, position, layer): held-out probe, control and lens readouts (columns of :func:`fit_answer_probes`)."""
    map: pl.DataFrame
    """Layer x position bin (:func:`probe_map`)."""
    traces: pl.DataFrame
    """Per trace: first decodable position of each method (:func:`first_decodable`)."""
    summary: dict[str, Any]
    """The headline numbers, as written to summary.json."""


def answer_probes(
    model: Any,
    tokenizer: Any,
    traces: Sequence[Trace],
    split: Sequence[str],
    *,
    bins: int = 4,
    threshold: float = 0.5,
    c: float = 1.0,
    seed: int = 0,
    min_chars: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> AnswerProbes:
    """Activations at every boundary, held-out probes with controls, the logit lens, the map and first positions."""
    log = progress or (lambda m: None)

    def count(i: int, n: int) -> None:
        if i == n or i % 25 == 0:
            log(f"activations: {i}/{n} traces")

    acts = boundary_activations(model, tokenizer, traces, min_chars=min_chars, progress=count)
    log(f"fitting probes and controls: {acts.n_layers} layers x {bins + 1} position bins x 2 halves")
    start = time.perf_counter()
    rows = fit_answer_probes(acts, split, bins=bins, c=c, seed=seed)
    fit_seconds = time.perf_counter() - start
    table = probe_map(rows, bins)
    firsts = first_decodable(rows, threshold)
    summary = _summary(acts, table, firsts, threshold=threshold, bins=bins, c=c, seed=seed)
    summary["cost"].update({"fit_seconds": fit_seconds})
    return AnswerProbes(rows, table, firsts, summary)


def _summary(acts, table, firsts, *, threshold, bins, c, seed) -> dict[str, Any]:
    import polars as pl

    by_readout = {}
    for readout in READOUTS:
        cells = table.filter(pl.col("readout") == readout)
        think = cells.filter(pl.col("bin") == 0).sort("layer")
        best = cells.sort("selectivity", descending=True).row(0, named=True)
        f = firsts.filter(pl.col("readout") == readout)
        decodable = {}
        for m in METHODS if readout == "token" else METHODS[:2]:
            col = f[f"{m}_first_position"]
            decodable[m] = {
                "share_at_think": float((col == 0).sum() / f.height),
                "share_ever": float(col.is_not_null().sum() / f.height),
                "median_first_position": col.median(),
                "median_first_relative": f[f"{m}_first_relative"].median(),
            }
        by_readout[readout] = {
            "at_think": {
                k: think[k].to_list()
                for k in ("probe_accuracy", "control_accuracy", "selectivity")
                + (("lens_accuracy",) if readout == "token" else ())
            },
            "best_cell": {
                k: best[k] for k in ("layer", "bin_name", "probe_accuracy", "control_accuracy", "selectivity")
            },
            "mean_selectivity": float(cells["selectivity"].mean()),
            "max_control_accuracy": float(cells["control_accuracy"].max()),
            "first_decodable": decodable,
        }
    return {
        "version": PROBES_VERSION,
        "n_traces": len(acts.trace_ids),
        "classes": acts.classes,
        "chance": table["chance"][0],
        "threshold": threshold,
        "bins": bin_names(bins),
        "layers": acts.n_layers,
        "settings": {"C": c, "seed": seed, "split": "by trace, two-fold cross-fitting"},
        "readouts": by_readout,
        "cost": {
            "forward_passes": acts.forward_passes,
            "tokens": acts.tokens,
            "rollouts": 0,
            "activation_seconds": acts.seconds,
        },
    }


def plot_probe_map(table: pl.DataFrame, title: str = ""):
    """Heatmaps (layers x position bins), one row per readout: probe accuracy, control accuracy, selectivity and
    (boundary token only) logit-lens accuracy."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import polars as pl

    layers = sorted(set(table["layer"].to_list()))
    nb = max(table["bin"].to_list()) + 1
    names = bin_names(nb - 1)
    panels = [
        ("probe_accuracy", "probe accuracy"),
        ("control_accuracy", "control (shuffled labels)"),
        ("selectivity", "selectivity"),
        ("lens_accuracy", "logit lens accuracy"),
    ]
    readouts = [r for r in READOUTS if r in set(table["readout"].to_list())]
    fig, grid_axes = plt.subplots(
        len(readouts),
        4,
        figsize=(16, (1.4 + 0.45 * len(layers)) * len(readouts)),
        constrained_layout=True,
        squeeze=False,
    )
    for axes, readout in zip(grid_axes, readouts, strict=True):
        cells = table.filter(pl.col("readout") == readout)
        for ax, (col, label) in zip(axes, panels, strict=True):
            grid = np.full((len(layers), nb), np.nan)
            for r in cells.iter_rows(named=True):
                if r[col] is not None:
                    grid[layers.index(r["layer"]), r["bin"]] = r[col]
            if not np.isfinite(grid).any():
                ax.axis("off")
                continue
            lo = -1.0 if col == "selectivity" else 0.0
            cmap = "RdBu_r" if lo < 0 else "viridis"
            im = ax.imshow(grid, vmin=lo, vmax=1.0, cmap=cmap, aspect="auto", origin="lower")
            for (a, b), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    color = "w" if lo == 0 and v < 0.6 else "k"
                    ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7, color=color)
            ax.set_xticks(range(nb), names, rotation=30, fontsize=8)
            ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=8)
            ax.set_xlabel("position (relative, bins)")
            ax.set_ylabel("layer")
            ax.set_title(f"{label} [{readout}]", fontsize=10)
            fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def write_probe_outputs(result: AnswerProbes, out: Path, *, title: str = "") -> dict[str, Path]:
    """probes.parquet, map.parquet, traces.parquet, heatmap.png and summary.json in ``out``, each written atomically."""
    import matplotlib.pyplot as plt

    from cot import atomic_write, atomic_write_json

    out = Path(out)
    paths = {}
    for name, frame in (("probes", result.rows), ("map", result.map), ("traces", result.traces)):
        paths[f"{name}.parquet"] = atomic_write(
            out / f"{name}.parquet", lambda p, f=frame: f.write_parquet(p)
        )
    fig = plot_probe_map(result.map, title)
    paths["heatmap.png"] = atomic_write(out / "heatmap.png", lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    paths["summary.json"] = atomic_write_json(out / "summary.json", result.summary)
    return paths

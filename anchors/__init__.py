"""Thought-anchor sentence importance, dependency graphs, plots and the thought-anchors format.

Names are imported on first use, so ``import anchors`` stays cheap (no polars, matplotlib or networkx until needed).

- Metrics: :func:`importance_table` (one row per sentence, every metric with CIs and sample sizes),
  :func:`sentence_matrix` (sentence -> sentence dependence from resampling), :class:`ImportanceOptions`.
- Format: :func:`import_thought_anchors`, :func:`write_thought_anchors`, :func:`compare_published`.
- Outputs: :func:`build_graph`, the ``plot_*`` figures, :func:`render_report`, :func:`write_outputs`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "METRICS": "anchors._blackbox",
    "NO_ANSWER": "anchors._blackbox",
    "ROLLOUT_COLUMNS": "anchors._blackbox",
    "ImportanceOptions": "anchors._blackbox",
    "add_matrix_scores": "anchors._blackbox",
    "different_trajectories_fraction": "anchors._blackbox",
    "importance_table": "anchors._blackbox",
    "kl_divergence": "anchors._blackbox",
    "overdeterminedness": "anchors._blackbox",
    "sentence_matrix": "anchors._blackbox",
    "split_half_pvalues": "anchors._blackbox",
    "TextEmbeddings": "anchors._embedding",
    "compare_published": "anchors._ta_format",
    "import_thought_anchors": "anchors._ta_format",
    "to_chunks_labeled": "anchors._ta_format",
    "to_step_importance": "anchors._ta_format",
    "to_summary": "anchors._ta_format",
    "write_thought_anchors": "anchors._ta_format",
    "build_graph": "anchors._graph",
    "write_graph": "anchors._graph",
    "plot_importance": "anchors._plots",
    "plot_matrix": "anchors._plots",
    "plot_graph": "anchors._plots",
    "plot_importance_by_role": "anchors._plots",
    "render_report": "anchors._report",
    "terminal_summary": "anchors._report",
    "write_outputs": "anchors._report",
    "ATTENTION_IMPLEMENTATION": "anchors._whitebox",
    "receiver_head_reliability": "anchors._whitebox",
    "receiver_head_scores": "anchors._whitebox",
    "receiver_heads": "anchors._whitebox",
    "sentence_attention": "anchors._whitebox",
    "sentence_receiver_scores": "anchors._whitebox",
    "spans_from_offsets": "anchors._whitebox",
    "suppression_matrix": "anchors._whitebox",
    "suppression_token_kl": "anchors._whitebox",
    "tokenize_with_spans": "anchors._whitebox",
    "vertical_scores": "anchors._whitebox",
    "compute_importance": "anchors._pipeline",
    "validate_anchors": "anchors._validate",
}

__all__ = [
    "ATTENTION_IMPLEMENTATION",
    "METRICS",
    "NO_ANSWER",
    "ROLLOUT_COLUMNS",
    "ImportanceOptions",
    "TextEmbeddings",
    "add_matrix_scores",
    "build_graph",
    "compare_published",
    "compute_importance",
    "different_trajectories_fraction",
    "import_thought_anchors",
    "importance_table",
    "kl_divergence",
    "overdeterminedness",
    "plot_graph",
    "plot_importance",
    "plot_importance_by_role",
    "plot_matrix",
    "receiver_head_reliability",
    "receiver_head_scores",
    "receiver_heads",
    "render_report",
    "sentence_attention",
    "sentence_matrix",
    "sentence_receiver_scores",
    "spans_from_offsets",
    "split_half_pvalues",
    "suppression_matrix",
    "suppression_token_kl",
    "terminal_summary",
    "to_chunks_labeled",
    "to_step_importance",
    "to_summary",
    "tokenize_with_spans",
    "validate_anchors",
    "vertical_scores",
    "write_graph",
    "write_outputs",
    "write_thought_anchors",
]

if TYPE_CHECKING:
    from anchors._blackbox import (
        METRICS,
        NO_ANSWER,
        ROLLOUT_COLUMNS,
        ImportanceOptions,
        add_matrix_scores,
        different_trajectories_fraction,
        importance_table,
        kl_divergence,
        overdeterminedness,
        sentence_matrix,
        split_half_pvalues,
    )
    from anchors._embedding import TextEmbeddings
    from anchors._graph import build_graph, write_graph
    from anchors._pipeline import compute_importance
    from anchors._plots import plot_graph, plot_importance, plot_importance_by_role, plot_matrix
    from anchors._report import render_report, terminal_summary, write_outputs
    from anchors._ta_format import (
        compare_published,
        import_thought_anchors,
        to_chunks_labeled,
        to_step_importance,
        to_summary,
        write_thought_anchors,
    )
    from anchors._validate import validate_anchors
    from anchors._whitebox import (
        ATTENTION_IMPLEMENTATION,
        receiver_head_reliability,
        receiver_head_scores,
        receiver_heads,
        sentence_attention,
        sentence_receiver_scores,
        spans_from_offsets,
        suppression_matrix,
        suppression_token_kl,
        tokenize_with_spans,
        vertical_scores,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'anchors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""The public names of `anchors`, each listed once: type checkers read them here, and `cotscope._exports` makes
them the run-time imports, `__all__` and `dir()`."""

from ._blackbox import (
    METRICS as METRICS,
    NO_ANSWER as NO_ANSWER,
    ROLLOUT_COLUMNS as ROLLOUT_COLUMNS,
    ImportanceOptions as ImportanceOptions,
    add_matrix_scores as add_matrix_scores,
    different_trajectories_fraction as different_trajectories_fraction,
    importance_table as importance_table,
    kl_divergence as kl_divergence,
    overdeterminedness as overdeterminedness,
    sentence_matrix as sentence_matrix,
    split_half_pvalues as split_half_pvalues,
)
from ._branches import (
    MIN_REMOVED as MIN_REMOVED,
    ResilienceResult as ResilienceResult,
    intervene as intervene,
    iterative_resilience as iterative_resilience,
    text_logprob as text_logprob,
)
from ._embedding import TextEmbeddings as TextEmbeddings
from ._graph import build_graph as build_graph, write_graph as write_graph
from ._pipeline import compute_importance as compute_importance
from ._plots import (
    plot_debiased_effects as plot_debiased_effects,
    plot_graph as plot_graph,
    plot_importance as plot_importance,
    plot_importance_by_role as plot_importance_by_role,
    plot_matrix as plot_matrix,
    plot_position as plot_position,
    plot_role_distributions as plot_role_distributions,
)
from ._probes import (
    READOUTS as READOUTS,
    AnswerProbes as AnswerProbes,
    BoundaryActivations as BoundaryActivations,
    answer_probes as answer_probes,
    boundary_activations as boundary_activations,
    first_decodable as first_decodable,
    fit_answer_probes as fit_answer_probes,
    plot_probe_map as plot_probe_map,
    probe_map as probe_map,
    write_probe_outputs as write_probe_outputs,
)
from ._report_study import write_study as write_study
from ._study import aggregate as aggregate
from ._study_run import load_traces as load_traces, run_study as run_study
from ._report import (
    render_report as render_report,
    terminal_summary as terminal_summary,
    write_outputs as write_outputs,
)
from ._ta_format import (
    compare_published as compare_published,
    import_thought_anchors as import_thought_anchors,
    to_chunks_labeled as to_chunks_labeled,
    to_step_importance as to_step_importance,
    to_summary as to_summary,
    write_thought_anchors as write_thought_anchors,
)
from ._validate import validate_anchors as validate_anchors
from ._whitebox import (
    ATTENTION_IMPLEMENTATION as ATTENTION_IMPLEMENTATION,
    receiver_head_reliability as receiver_head_reliability,
    receiver_head_scores as receiver_head_scores,
    receiver_heads as receiver_heads,
    sentence_attention as sentence_attention,
    sentence_receiver_scores as sentence_receiver_scores,
    spans_from_offsets as spans_from_offsets,
    suppression_matrix as suppression_matrix,
    suppression_token_kl as suppression_token_kl,
    tokenize_with_spans as tokenize_with_spans,
    vertical_scores as vertical_scores,
)

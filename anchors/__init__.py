"""Thought-anchor sentence importance, dependency graphs, plots and the thought-anchors format.

Names are imported on first use, so ``import anchors`` stays cheap (no polars, matplotlib or networkx until needed).

- Metrics: :func:`importance_table` (one row per sentence, every metric with CIs and sample sizes),
  :func:`sentence_matrix` (sentence -> sentence dependence from resampling), :class:`ImportanceOptions`.
- Format: :func:`import_thought_anchors`, :func:`write_thought_anchors`, :func:`compare_published`.
- Outputs: :func:`build_graph`, the ``plot_*`` figures, :func:`render_report`, :func:`write_outputs`.
- Answer probes: :func:`answer_probes` (linear probes and the logit lens at every sentence boundary and layer),
  :func:`write_probe_outputs`.
- Studies (many traces): :func:`run_study`, :func:`load_traces`, :func:`aggregate` (by role, cluster bootstrap over
  traces, position-debiased), :func:`write_study`.
"""

from cotscope._exports import attach_stub as _attach_stub

# The names are listed once, in __init__.pyi.
__getattr__, __dir__, __all__ = _attach_stub(__name__, __file__, lazy=True)

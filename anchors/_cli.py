"""``cotscope import ...`` (and, below, the other anchors commands): thin layers over ``anchors`` functions."""

from __future__ import annotations

from pathlib import Path

import click

from cotscope import _options as flags

__all__ = ["import_group"]


@click.group("import")
def import_group() -> None:
    """Import results from other tools (thought-anchors)."""


@import_group.command("thought-anchors")
@click.argument("problem_dir", type=click.Path(path_type=Path))
@flags.out_option("Folder to write importance.parquet into (created if missing).")
@flags.float_option(
    "--threshold",
    0.8,
    "Cosine below which a regenerated first sentence counts as a different trajectory.",
    min=0.0,
    max=1.0,
    min_open=True,
)
@flags.force_option()
def thought_anchors_command(problem_dir: Path, out: Path, threshold: float, force: bool) -> None:
    """Read a thought-anchors PROBLEM_DIR, recompute what its files allow, write OUT/importance.parquet.

    Recomputed: different-trajectories fraction and overdeterminedness (from chunks_resampled.json), outgoing and
    incoming importance (from step_importance.json). Published values are kept as published_* columns.
    """
    from anchors._embedding import TextEmbeddings
    from anchors._ta_format import compare_published, import_thought_anchors, read_labeled_chunks
    from cot import TraceError
    from cotscope._outputs import claim_out
    from cotscope._progress import step

    if not problem_dir.is_dir():
        raise click.BadParameter(
            f"no such folder: {problem_dir}; give a thought-anchors problem folder such as "
            ".../correct_base_solution/problem_330",
            param_hint="PROBLEM_DIR",
        )
    if not (problem_dir / "chunks_labeled.json").is_file():
        raise click.BadParameter(
            f"{problem_dir} has no chunks_labeled.json; give one problem_<idx> folder, not its parent",
            param_hint="PROBLEM_DIR",
        )
    try:  # an empty trace is refused before the output folder is touched
        read_labeled_chunks(problem_dir)
    except TraceError as exc:
        raise click.BadParameter(str(exc), param_hint="PROBLEM_DIR") from None
    config = {"problem": problem_dir.resolve(), "threshold": threshold}
    claim_out(out, "import thought-anchors", config, force=force)
    try:
        # embedding every resampled sentence of a published problem takes minutes on a CPU: show it
        table = import_thought_anchors(problem_dir, threshold=threshold, embed=TextEmbeddings(progress=True))
    except TraceError as exc:  # an empty trace: nothing to import, nothing written
        raise click.BadParameter(str(exc), param_hint="PROBLEM_DIR") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # a file of the wrong shape (an object where a list belongs, ...) is bad input, not a crash
        raise click.BadParameter(
            f"{problem_dir}: a file does not have the thought-anchors layout ({type(exc).__name__}: {exc}); "
            "compare it with a published problem folder",
            param_hint="PROBLEM_DIR",
        ) from exc
    step(f"writing {table.height} sentences, figures and the report to {out}")
    paths = write_imported(table, problem_dir, out, threshold=threshold)
    click.echo(f"{table.height} sentences -> {paths['importance.parquet']} (report: {paths['report.html']})")
    comparison = compare_published(table)
    if not comparison:
        click.echo(
            "nothing to compare: no published values sit beside what could be recomputed "
            "(chunks_resampled.json, step_importance.json)"
        )
    for name, c in comparison.items():
        click.echo(
            f"{name}: mean |ours - published| = {c['mean_abs_diff']:.4f} over {int(c['n'])} sentences "
            f"(max {c['max_abs_diff']:.3f}; {c['share_over_0.05']:.1%} differ by more than 0.05; "
            f"{c['mean_abs_diff_without_last']:.4f} without the last chunk)"
        )


def write_imported(table, problem_dir: Path, out_dir: Path, *, threshold: float) -> dict[str, Path]:
    """The outputs ``cotscope importance`` writes (table, report, figures, graph, export) for an imported folder."""
    from anchors._report import write_outputs
    from cot import load_trace

    trace = load_trace(problem_dir) if (problem_dir / "base_solution.json").is_file() else None
    metric = next(
        (
            m
            for m in ("published_counterfactual_importance_kl", "different_trajectories_fraction")
            if m in table.columns and table[m].drop_nulls().len()
        ),
        "different_trajectories_fraction",
    )
    notes = {
        "imported from": str(problem_dir),
        "format": "thought-anchors",
        "similarity threshold": threshold,
    }
    return write_outputs(table, None, trace, out_dir, metric=metric, notes=notes)


# -- `cotscope importance` and `cotscope validate` -----------------------------------------------------------------
# The top-level CLI loads `anchors._cli:importance` and `anchors._cli:validate` lazily; they are defined here, below
# this line, as thin layers over anchors.importance_table / sentence_matrix / write_outputs.

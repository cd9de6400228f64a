"""``cotscope import ...`` (and, below, the other anchors commands): thin layers over ``anchors`` functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import polars as pl

from cotscope import _options as flags

__all__ = ["import_group"]


@click.group("import")
def import_group() -> None:
    """Import results from other tools (thought-anchors)."""


@import_group.command("thought-anchors")
@click.argument("problem_dir", metavar="DIR", type=click.Path(path_type=Path))
@flags.out_option("Folder to write the outputs into (created if missing).")
@flags.float_option(
    "--threshold",
    0.8,
    "Cosine below which a regenerated first sentence counts as a different trajectory.",
    min=0.0,
    max=1.0,
    min_open=True,
)
@click.option(
    "--recompute/--no-recompute",
    default=True,
    show_default=True,
    help="Recompute the different-trajectories fraction and overdeterminedness from chunks_resampled.json "
    "(embeds every resampled sentence: minutes on a CPU); --no-recompute keeps the published values only.",
)
@flags.roles_option(("published",), default="published")
@flags.judge_server_options("--roles judge")
@flags.force_option()
def thought_anchors_command(
    problem_dir: Path,
    out: Path,
    threshold: float,
    recompute: bool,
    roles: str,
    judge_model: str | None,
    judge_base_url: str | None,
    force: bool,
) -> None:
    """Read thought-anchors results, recompute what their files allow, write OUT/importance.parquet and a report.

    DIR is one problem folder (problem_<idx>, holding chunks_labeled.json), or a dataset folder holding many
    (e.g. deepseek-r1-distill-llama-8b/, with correct_base_solution/ and incorrect_base_solution/): then every
    problem is imported at once, each into OUT/traces/<trace_id>/, and OUT gets the study outputs (importance.parquet
    with trace_id, aggregate.parquet, figures, report.html, run.json).

    Recomputed: different-trajectories fraction and overdeterminedness (from chunks_resampled.json), outgoing and
    incoming importance (from step_importance.json). Published values are kept as published_* columns.
    """
    from anchors._embedding import TextEmbeddings
    from anchors._labeller import check_judge_options, role_labeller, roles_identity
    from anchors._ta_format import compare_published, read_labeled_chunks
    from cot import TraceError
    from cotscope._outputs import claim_out
    from cotscope._progress import step

    try:
        check_judge_options(roles, judge_model, judge_base_url)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    judge = {"judge_model": judge_model, "judge_base_url": judge_base_url}
    if not problem_dir.is_dir():
        raise click.BadParameter(
            f"no such folder: {problem_dir}; give a thought-anchors problem folder such as "
            ".../correct_base_solution/problem_330, or a folder of them",
            param_hint="DIR",
        )
    if not (problem_dir / "chunks_labeled.json").is_file():
        folders = _problem_folders(problem_dir)
        if not folders:
            raise click.BadParameter(
                f"{problem_dir} has no chunks_labeled.json and no problem_* folder holding one; give a "
                "thought-anchors problem folder, or a dataset folder of them",
                param_hint="DIR",
            )
        _import_dataset(
            problem_dir,
            folders,
            out,
            threshold=threshold,
            recompute=recompute,
            roles=roles,
            judge=judge,
            force=force,
        )
        return
    try:  # an empty trace is refused before the output folder is touched
        read_labeled_chunks(problem_dir)
    except TraceError as exc:
        raise click.BadParameter(str(exc), param_hint="DIR") from None
    config = {"problem": problem_dir.resolve(), "threshold": threshold}
    if not recompute:
        config["recompute"] = False
    if roles != "published":
        config["roles"] = roles_identity(roles, judge_model)
    claim_out(out, "import thought-anchors", config, force=force)
    labeller = role_labeller(roles, **judge, cache_dir=out / ".cache", quiet=False)
    try:
        # embedding every resampled sentence of a published problem takes minutes on a CPU: show it
        table = _import_one(problem_dir, threshold, TextEmbeddings(progress=True), recompute, labeller)
    except TraceError as exc:  # an empty trace: nothing to import, nothing written
        raise click.BadParameter(str(exc), param_hint="DIR") from None
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


def _problem_folders(root: Path) -> list[Path]:
    """Every problem folder (one holding chunks_labeled.json) below ``root``, in path order."""
    return sorted(p.parent for p in root.rglob("chunks_labeled.json"))


def _import_one(problem_dir: Path, threshold: float, embed, recompute: bool, roles: Any = "published"):
    """One problem folder as a table with ``trace_id`` and ``base_correct``; ``role`` is the published primary tag,
    or, with ``roles`` ``rules`` / ``learned`` / a judge labeller (:func:`anchors._labeller.role_labeller`), that
    labeller's (``cot.label_sentences`` on the published chunks). A file of the wrong shape is a one-line usage
    error naming the folder; a labeller that fails (a judge's bad reply) is a one-line error too."""
    from anchors._ta_format import base_correct, import_thought_anchors

    try:
        table = import_thought_anchors(
            problem_dir, threshold=threshold, embed=embed, positions=None if recompute else ()
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # a file of the wrong shape (an object where a list belongs, ...) is bad input, not a crash
        raise click.BadParameter(
            f"{problem_dir}: a file does not have the thought-anchors layout ({type(exc).__name__}: {exc}); "
            "compare it with a published problem folder",
            param_hint="DIR",
        ) from exc
    if table["trace_id"].null_count():  # no base_solution.json: the folder names the trace
        table = table.with_columns(pl.lit(f"{problem_dir.parent.name}-{problem_dir.name}").alias("trace_id"))
    if roles != "published":
        from cot import label_sentences

        try:
            labels = label_sentences(table["text"].to_list(), roles)
        except (ValueError, RuntimeError) as exc:
            raise click.ClickException(f"{problem_dir}: the role labeller failed: {exc}") from None
        table = table.with_columns(pl.Series("role", labels, dtype=pl.String))
    return table.with_columns(pl.lit(base_correct(problem_dir), dtype=pl.Boolean).alias("base_correct"))


def _import_dataset(
    root: Path,
    folders: list[Path],
    out: Path,
    *,
    threshold: float,
    recompute: bool,
    roles: str,
    judge: dict[str, str | None],
    force: bool,
):
    """``import thought-anchors`` of a dataset folder: every problem, then the study outputs."""
    from anchors._embedding import TextEmbeddings
    from anchors._labeller import role_labeller, roles_identity
    from anchors._report_study import write_study
    from cot import TraceError
    from cotscope._outputs import claim_out
    from cotscope._progress import count_line, step

    config = {"dataset": root.resolve(), "threshold": threshold, "recompute": recompute}
    config["roles"] = roles_identity(roles, judge["judge_model"])
    claim_out(out, "import thought-anchors", config, force=force)
    labeller = role_labeller(roles, **judge, cache_dir=out / ".cache", quiet=True)
    step(f"importing {len(folders)} problem folders from {root}")
    embed = TextEmbeddings(progress=False)
    tables, skipped = [], []
    for k, folder in enumerate(folders, 1):
        try:
            table = _import_one(folder, threshold, embed, recompute, labeller)
        except (TraceError, click.ClickException) as exc:
            skipped.append(
                {"trace": str(folder.relative_to(root)), "reason": str(getattr(exc, "message", exc))}
            )
            continue
        trace_id = str(table["trace_id"][0])
        if any(t["trace_id"][0] == trace_id for t in tables):
            skipped.append(
                {"trace": str(folder.relative_to(root)), "reason": f"same trace as another ({trace_id})"}
            )
            continue
        write_imported(table, folder, out / "traces" / trace_id, threshold=threshold)
        tables.append(table)
        count_line(f"imported {k}/{len(folders)} problems", last=k == len(folders))
    if not tables:
        raise click.UsageError(
            f"no problem folder under {root} could be imported ({skipped[0]['reason']}); check the folder"
        )
    table = pl.concat(tables, how="diagonal_relaxed")
    step(f"writing the study of {len(tables)} traces ({table.height} sentences) to {out}")
    notes = {
        "imported from": str(root),
        "format": "thought-anchors",
        "similarity threshold": threshold,
        "roles": config["roles"],
    }
    paths = write_study(
        table, out, notes=notes, skipped=skipped, run={"command": "import thought-anchors", **config}
    )
    for s in skipped:
        click.echo(f"skipped {s['trace']}: {s['reason']}", err=True)
    click.echo(
        f"{len(tables)} traces, {table.height} sentences -> {paths['importance.parquet']} "
        f"(report: {paths['report.html']}; {len(skipped)} skipped)"
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

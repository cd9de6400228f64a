"""One rule for every command that writes a folder (``--out``): one run per folder, checked before any work.

A folder holds the outputs of one command with one configuration. ``claim_out`` runs at the start of a command:

- ``--out`` must be a folder this process can write into: it is created and a probe file is written and removed, so
  ``/dev/null``, a path under a file or a read-only folder fail in one line before the model loads, not with a
  traceback after the work is done;
- a folder holding another command's outputs, or this command's with another configuration, is refused unless
  ``--force``; with ``--force`` the earlier run's outputs (the names in ``OUTPUTS``, never other files, never the
  content-addressed rollout cache) are removed first, so the folder never holds a mix of two runs;
- the same command with the same configuration resumes: nothing is removed.

The claim is recorded in ``OUT/.cotscope-run.json`` (command and configuration). A folder written before that file
existed is judged by its outputs: files of another command are refused, and the trace id in its ``run.json`` or
``trace.json`` must match.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import click

__all__ = ["MARKER", "OUTPUTS", "check_out_file", "check_writable_dir", "claim_out"]

MARKER = ".cotscope-run.json"
"""The file recording which command, with which configuration, writes a folder."""

_IMPORTANCE_FILES = (
    "importance.parquet",
    "importance.png",
    "matrix.png",
    "graph.png",
    "importance_by_role.png",
    "graph.graphml",
    "graph.json",
    "report.html",
    "thought_anchors",
)

_STUDY_FILES = (
    "aggregate.parquet",
    "role_distributions.png",
    "debiased_effects.png",
    "position.png",
    "traces",
)
"""What a study (many traces) adds: ``anchors._report_study.STUDY_FILES`` less the single-trace names."""

OUTPUTS: dict[str, tuple[str, ...]] = {
    "importance": (*_IMPORTANCE_FILES, *_STUDY_FILES, "rollouts.parquet", "run.json", "trace.json"),
    "import thought-anchors": (*_IMPORTANCE_FILES, *_STUDY_FILES, "run.json"),
    "resample": ("rollouts.parquet", "run.json"),
    "faithfulness": ("metrics.parquet", "items.parquet", "report.html", "log.eval"),
    "stego experiment": ("summary.parquet", "details.parquet", "figure.png", "experiment.json"),
    "probes": ("probes.parquet", "map.parquet", "traces.parquet", "heatmap.png", "summary.json"),
    "validate probes": ("posthoc", "arith", "validate.json"),
    "organisms train": (
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "card.md",
        "training_log.json",
    ),
}
"""The files (and folders) each folder-writing command puts into ``--out``."""

_ALL_OUTPUTS = tuple(dict.fromkeys(name for names in OUTPUTS.values() for name in names))


def check_writable_dir(path: Path, option: str = "--out") -> None:
    """Create ``path`` if missing and write a probe file into it; one line naming the path and the fix if not."""
    path = Path(path)
    probe = path / f".cotscope-write-probe-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise click.UsageError(
            f"{option} {path} exists and is not a folder; give a folder path (it is created if missing)"
        ) from None
    except NotADirectoryError:
        raise click.UsageError(
            f"{option} {path} lies under a file, not a folder; give a folder path (it is created if missing)"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise click.UsageError(
            f"cannot write into {option} {path} ({reason}); choose a folder you can write to, "
            "or fix its permissions"
        ) from None


def check_out_file(path: Path, option: str = "--out") -> None:
    """Check, before any work, that the file ``path`` can be written: its folder is writable, it is no folder."""
    path = Path(path)
    if path.is_dir():
        raise click.UsageError(f"{option} {path} is a folder; give a file path")
    check_writable_dir(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise click.UsageError(f"cannot write {option} {path} (permission denied); choose another file")


def _normal(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as JSON would read it back (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(config, default=str, sort_keys=True))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _legacy_trace_id(out: Path) -> str | None:
    """The trace id a folder written before the marker records, in run.json or trace.json."""
    run = _read_json(out / "run.json") or {}
    trace = run.get("trace")
    if isinstance(trace, dict) and trace.get("id"):
        return str(trace["id"])
    data = _read_json(out / "trace.json") or {}
    if not data.get("cot"):
        return None
    from cot import TraceError, load_trace

    try:
        return load_trace(out / "trace.json").id
    except TraceError:
        return None


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def _conflict(out: Path, command: str, config: dict[str, Any] | None, present: list[str]) -> str | None:
    """Why ``out`` holds another run than ``command`` with ``config`` (None: it holds this one, or nothing)."""
    if not present:
        return None
    marker = _read_json(out / MARKER)
    if marker is not None and marker.get("command"):
        if marker["command"] != command:
            return f"another command's results (cotscope {marker['command']}: {', '.join(present)})"
        if config is None:
            return None
        old, new = marker.get("config") or {}, _normal(config)
    else:
        foreign = [name for name in present if name not in OUTPUTS[command]]
        if foreign:
            return f"another command's results ({', '.join(foreign)})"
        if config is None or "trace" not in config:
            return None
        old_trace = _legacy_trace_id(out)
        if old_trace is None:
            return None
        old, new = {"trace": old_trace}, {"trace": _normal(config)["trace"]}
    differ = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    if not differ:
        return None
    if "trace" in differ:
        return f"the results of another trace ({old.get('trace')}, this one is {new.get('trace')})"
    shown = "; ".join(f"{key} {_show(old.get(key))}, now {_show(new.get(key))}" for key in differ[:4])
    more = f"; and {len(differ) - 4} more" if len(differ) > 4 else ""
    return f"the results of cotscope {command} with other settings ({shown}{more})"


def claim_out(out: Path, command: str, config: dict[str, Any] | None, *, force: bool) -> None:
    """Claim ``out`` for ``command`` with ``config`` before any work (see the module docstring).

    ``config`` holds what decides the results (model, trace id, samples, seeds, sampling ...), not what only changes
    speed or display. ``config=None`` checks only that ``out`` is writable and holds no other command's results;
    call again with the configuration once it is known (a trace written by the model itself).
    """
    out = Path(out)
    check_writable_dir(out)
    present = [name for name in _ALL_OUTPUTS if (out / name).exists()]
    problem = _conflict(out, command, config, present)
    if problem and not force:
        raise click.UsageError(
            f"{out} holds {problem}; choose another --out, or pass --force to replace them"
        )
    if config is None:
        return
    if problem:  # --force: the earlier run goes entirely, so no file of it stays beside the new ones
        for name in present:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
    from cot import atomic_write_text

    record = {"version": 1, "command": command, "config": _normal(config)}
    atomic_write_text(out / MARKER, json.dumps(record, indent=2, sort_keys=True) + "\n")

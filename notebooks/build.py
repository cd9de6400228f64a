"""Build the case-study notebooks: jupytext percent-format sources -> executed ``.ipynb`` files with outputs.

The ``NN_name.py`` files in this folder are the source of truth. Each is converted with jupytext, executed with
nbclient in a kernel that runs this very interpreter (a kernelspec written to a temporary folder, so a machine set
up with ``make setup`` needs no ``jupyter kernelspec install``), and written next to its source as ``NN_name.ipynb``.

    python notebooks/build.py                      # every notebook, full work (what `make notebooks` runs)
    python notebooks/build.py 01_thought_anchors   # one notebook
    python notebooks/build.py --work small         # the small-work setting the test suite uses
    python notebooks/build.py --check              # exit 1 when a committed .ipynb is out of date with its source

The notebooks read two environment variables: ``COTSCOPE_NOTEBOOK_WORK`` (``full``, the default, or ``small``:
fewer samples and problems, for the test suite) and ``COTSCOPE_NOTEBOOK_CACHE`` (the engine's rollout cache; a new
temporary folder when unset). A notebook reports the numbers the tests check on one line that starts with
``key numbers:`` followed by JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent
KEY_PREFIX = "key numbers:"
"""A notebook prints its checked numbers as ``key numbers: {json}`` on one line."""
WORK_VARIABLE = "COTSCOPE_NOTEBOOK_WORK"
CACHE_VARIABLE = "COTSCOPE_NOTEBOOK_CACHE"
KERNEL_NAME = "cotscope-python"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
"""Kernelspec recorded in the written notebooks: the standard name, so Jupyter opens them with any Python 3."""
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
"""Progress bars and loader chatter would otherwise fill the committed outputs."""


def sources(folder: Path = FOLDER) -> list[Path]:
    """The notebook sources: ``NN_name.py`` files, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.py"))


def read_source(path: Path) -> Any:
    """The notebook a percent-format source stands for (no outputs)."""
    import jupytext

    nb = jupytext.read(path, fmt="py:percent")
    for k, cell in enumerate(nb.cells):  # stable ids, so a rebuild with the same outputs changes nothing
        cell["id"] = f"cell-{k:03d}"
    return nb


def cells(nb: Any) -> list[tuple[str, str]]:
    """``(cell_type, source)`` of every cell: what must agree between a source and its ``.ipynb``."""
    return [(c["cell_type"], c["source"]) for c in nb["cells"]]


def stale(source: Path) -> str | None:
    """Why ``source``'s ``.ipynb`` is out of date with it, or None when its cells agree (outputs aside)."""
    import nbformat

    built = source.with_suffix(".ipynb")
    if not built.is_file():
        return f"{built.name} is missing; run `make notebooks`"
    want, have = cells(read_source(source)), cells(nbformat.read(built, as_version=4))
    if want == have:
        return None
    for k, (w, h) in enumerate(zip(want, have, strict=False)):
        if w != h:
            return f"{built.name} is out of date with {source.name} at cell {k}; run `make notebooks`"
    return f"{built.name} has {len(have)} cells, {source.name} {len(want)}; run `make notebooks`"


@contextlib.contextmanager
def kernel_manager() -> Iterator[Any]:
    """A kernel manager whose kernel is ``sys.executable -m ipykernel_launcher`` (this interpreter, its packages)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="cotscope-kernel-") as tmp:
        spec_dir = Path(tmp) / KERNEL_NAME
        spec_dir.mkdir()
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (cotscope)",
            "language": "python",
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
        ksm = KernelSpecManager(kernel_dirs=[tmp], ensure_native_kernel=False)
        km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
        try:
            yield km
        finally:  # nbclient leaves a kernel it was given running
            if km.has_kernel:
                km.shutdown_kernel(now=True)


def execute(source: Path, *, work: str = "full", cache: str | None = None, timeout: int = 1200) -> Any:
    """Run the notebook of ``source`` in its own folder and return it with outputs. Raises on any cell error."""
    from nbclient import NotebookClient

    nb = read_source(source)
    env = {
        **os.environ,
        **QUIET_ENV,
        WORK_VARIABLE: work,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    env.pop(CACHE_VARIABLE, None)
    if cache is not None:
        env[CACHE_VARIABLE] = str(cache)
    with kernel_manager() as km:
        client = NotebookClient(
            nb,
            km=km,
            timeout=timeout,
            record_timing=False,
            resources={"metadata": {"path": str(source.parent)}},
        )
        client.execute(env=env)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": nb.metadata.get("language_info", {})}
    return nb


def write(nb: Any, path: Path) -> Path:
    """Write ``nb`` to ``path`` through a temporary file and a rename."""
    import nbformat

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return path


def key_numbers(nb: Any) -> dict[str, Any]:
    """The JSON a notebook printed after ``key numbers:`` (the last such line)."""
    found = None
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                for line in out.get("text", "").splitlines():
                    if line.startswith(KEY_PREFIX):
                        found = line[len(KEY_PREFIX) :]
    if found is None:
        raise ValueError(f"the notebook printed no '{KEY_PREFIX}' line")
    return json.loads(found)


def _select(names: list[str]) -> list[Path]:
    every = sources()
    if not names:
        return every
    chosen = []
    for name in names:
        stem = Path(name).stem
        match = [p for p in every if p.stem == stem]
        if not match:
            raise SystemExit(
                f"no notebook source {stem}.py in {FOLDER}; choose from: {', '.join(p.stem for p in every)}"
            )
        chosen += match
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    parser.add_argument(
        "--work", choices=("full", "small"), default="full", help="sample counts (default: full)"
    )
    parser.add_argument("--check", action="store_true", help="only check that each .ipynb matches its source")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell (default: 1200)")
    args = parser.parse_args(argv)
    chosen = _select(args.names)
    if args.check:
        problems = [msg for p in chosen if (msg := stale(p))]
        for msg in problems:
            print(msg, file=sys.stderr)
        return 1 if problems else 0
    for path in chosen:
        print(f"{path.name}: executing ({args.work} work)", flush=True)
        started = time.perf_counter()
        out = write(execute(path, work=args.work, timeout=args.timeout), path.with_suffix(".ipynb"))
        print(f"{path.name} -> {out.name} ({time.perf_counter() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

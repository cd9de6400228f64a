"""Train the learned sentence-role labeller on the published thought-anchors labels and write its weights.

``python -m cot.train_roles`` reads the vendored ``data/thought-anchors`` (the only training data), chooses the L2
strength by 3-fold cross-validation over problems, fits on all 2,929 chunks and writes ``cot/role_model.npz``.
``--check`` retrains and compares with the weights on disk instead of writing (exit code 1 when they differ).
Training is deterministic: the same data give the same arrays. Held-out agreement: ``python -m cot.published``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cot._role_model import C_GRID, WEIGHTS, choose_c, fit_role_model, load_role_model
from cot.published import VENDORED, labelled_traces, problem_dirs


def train(root: str | Path = VENDORED, c: float | None = None):
    """The model fitted on every labelled trace under ``root``; ``c=None`` chooses C from :data:`C_GRID` by CV."""
    dirs = problem_dirs(root)
    if not dirs:
        raise SystemExit(
            f"no thought-anchors problem folders under {root}; pass --data FOLDER holding problem_* folders"
        )
    traces = labelled_traces(dirs)
    chunks = [t.chunks for t in traces]
    primary = [[g[0] for g in t.tags] for t in traces]
    if c is None:
        c = choose_c([t.problem for t in traces], chunks, primary, C_GRID)
    return fit_role_model(chunks, primary, c)


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(prog="python -m cot.train_roles", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(VENDORED), help="folder of thought-anchors problem folders")
    ap.add_argument("--out", default=str(WEIGHTS), help="where to write the weights (.npz)")
    ap.add_argument("--c", type=float, default=None, help="inverse L2 strength (default: chosen by CV)")
    ap.add_argument(
        "--check", action="store_true", help="compare with the weights at --out instead of writing"
    )
    args = ap.parse_args(argv)
    model = train(args.data, args.c)
    print(
        f"trained on {args.data}: C={model.c:g}, {model.weights.shape[0]} features x {model.weights.shape[1]} roles"
    )
    if args.check:
        shipped = load_role_model(args.out)
        same = (
            shipped.c == model.c
            and np.array_equal(shipped.weights, model.weights)
            and np.array_equal(shipped.bias, model.bias)
        )
        print("weights identical to " + args.out if same else "weights DIFFER from " + args.out)
        return 0 if same else 1
    model.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

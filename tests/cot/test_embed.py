import shutil

import numpy as np
import pytest

from cot import EmbeddingModelError, embed_sentences, load_sentence_embedder
from cot._embed import minilm_path


@pytest.mark.slow
def test_bundled_minilm_loads_offline_and_embeds_meaningfully():
    e = embed_sentences(["The cat sat on the mat.", "A cat was sitting on the mat.", "7 + 5 is 12."])
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims = e @ e.T
    assert sims[0, 1] > 0.8 > sims[0, 2]


def test_tampered_weights_are_refused(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(minilm_path(), folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").write_bytes(b"not the real weights")
    with pytest.raises(EmbeddingModelError, match="sha256"):
        load_sentence_embedder(str(folder))
    (folder / "model.safetensors").unlink()
    with pytest.raises(EmbeddingModelError, match=r"no model\.safetensors"):
        load_sentence_embedder(str(folder))

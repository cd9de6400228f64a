import os
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


def test_offline_flag_is_set_only_while_the_bundled_model_loads(monkeypatch):
    """The process's hub setting is left as the user had it; the bundled model still loads without a network."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = {}
    import sentence_transformers

    real = sentence_transformers.SentenceTransformer

    def spy(*args, **kwargs):
        seen["offline"] = os.environ.get("HF_HUB_OFFLINE")
        seen["device"] = kwargs.get("device")
        return real(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", spy)
    model = load_sentence_embedder.__wrapped__(device="cpu")
    assert seen == {"offline": "1", "device": "cpu"} and model.device.type == "cpu"
    assert "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    load_sentence_embedder.__wrapped__()
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_batch_size_follows_the_device_and_an_explicit_one_wins():
    """Small batches on a CPU (its time is padded tokens), wide ones on a GPU."""
    from types import SimpleNamespace

    from cot._embed import CPU_BATCH, GPU_BATCH

    class Recorder:
        def __init__(self, device):
            self.device = SimpleNamespace(type=device)
            self.sizes = []

        def encode(self, texts, batch_size, **_):
            self.sizes.append(batch_size)
            return np.ones((len(texts), 384), dtype=np.float32)

    cpu, gpu = Recorder("cpu"), Recorder("cuda")
    embed_sentences(["a", "b"], embedder=cpu)
    embed_sentences(["a", "b"], embedder=gpu)
    embed_sentences(["a", "b"], embedder=cpu, batch_size=7)
    assert cpu.sizes == [CPU_BATCH, 7] and gpu.sizes == [GPU_BATCH]
    assert CPU_BATCH < GPU_BATCH


@pytest.mark.slow
def test_small_cpu_batches_give_the_same_embeddings_as_wide_ones():
    texts = [f"Then {k} * {k + 3} is {k * (k + 3)}, so we carry the {k}." * (1 + k % 4) for k in range(40)]
    np.testing.assert_allclose(embed_sentences(texts), embed_sentences(texts, batch_size=256), atol=1e-5)

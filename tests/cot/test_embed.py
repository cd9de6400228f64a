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


def test_forward_passes_go_by_token_length_within_the_device_budget():
    """Texts go to the model sorted by token length, each pass as many as fit in the device's padded-token budget
    (an explicit ``batch_size`` caps the texts too), and every row comes back in its text's place."""
    from types import SimpleNamespace

    import torch

    from cot._embed import CPU_TOKENS, GPU_TOKENS

    class Recorder:
        def __init__(self, device):
            self.device = SimpleNamespace(type=device)
            self.calls = []

        def preprocess(self, texts):  # one token per word, two special tokens, padded like a tokenizer
            n = [len(t.split()) + 2 for t in texts]
            return {"attention_mask": torch.tensor([[1] * k + [0] * (max(n) - k) for k in n])}

        def encode(self, texts, batch_size, **_):
            self.calls.append(([len(t.split()) + 2 for t in texts], batch_size))
            return np.array([[float(t.split()[-1]), len(t.split())] for t in texts], dtype=np.float32)

    texts = [" ".join(["w"] * (k % 50) + [str(k)]) for k in range(3000)] + [" ".join(["w"] * 3000 + ["3000"])]
    for device, budget, cap in [
        ("cpu", CPU_TOKENS, None),
        ("cuda", GPU_TOKENS, None),
        ("cpu", CPU_TOKENS, 7),
    ]:
        rec = Recorder(device)
        out = embed_sentences(texts, embedder=rec, batch_size=cap)
        np.testing.assert_array_equal(out[:, 0], np.arange(len(texts)))  # each row in its text's place
        flat = [n for lengths, _ in rec.calls for n in lengths]
        assert len(flat) == len(texts) and flat == sorted(flat)  # every text once, shortest first
        for k, (lengths, size) in enumerate(rec.calls):
            padded = len(lengths) * max(lengths)
            assert size == len(lengths) and (
                padded <= budget or len(lengths) == 1
            )  # the 3,003-token one alone
            assert cap is None or len(lengths) <= cap
            if k + 1 < len(rec.calls) and (
                cap is None or len(lengths) < cap
            ):  # full: the next text did not fit
                assert (len(lengths) + 1) * rec.calls[k + 1][0][0] > budget
    assert CPU_TOKENS < GPU_TOKENS

    class Plain:  # no tokenizer of its own: plain batches of texts
        device = SimpleNamespace(type="cpu")

        def __init__(self):
            self.sizes = []

        def encode(self, texts, batch_size, **_):
            self.sizes.append(len(texts))
            return np.arange(len(texts), dtype=np.float32)[:, None] + 0.5

    plain = Plain()
    assert embed_sentences([str(k) for k in range(70)], embedder=plain).shape == (70, 1)
    assert plain.sizes == [32, 32, 6]

    class OddTokenizer(Plain):  # a tokenizer of another kind: no attention mask
        def tokenize(self, texts):
            return [t.split() for t in texts]

    odd = OddTokenizer()
    np.testing.assert_array_equal(embed_sentences(["a", "b", "c"], embedder=odd)[:, 0], [0.5, 1.5, 2.5])
    assert odd.sizes == [3]


@pytest.mark.slow
def test_token_budget_batches_give_the_embeddings_of_padded_batches():
    from cot._embed import load_sentence_embedder

    texts = [f"Then {k} * {k + 3} is {k * (k + 3)}, so we carry the {k}." * (1 + k % 4) for k in range(40)]
    padded = load_sentence_embedder().encode(texts, batch_size=256, normalize_embeddings=True)
    np.testing.assert_allclose(embed_sentences(texts), padded, atol=1e-5)
    np.testing.assert_allclose(embed_sentences(texts, batch_size=3), padded, atol=1e-5)

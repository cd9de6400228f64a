"""Sentence embeddings are kept with the run: a rerun embeds only sentences it has not seen."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from anchors._embedding import DatasetEmbeddings, TextEmbeddings
from anchors._pipeline import _run_embeddings
from cot import embed_sentences


class Counting:
    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, texts):
        self.seen += list(texts)
        rng = np.random.default_rng(len(self.seen))
        v = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_saved_embeddings_are_reused_and_identical(tmp_path):
    path = tmp_path / "emb.npz"
    first = Counting()
    a = TextEmbeddings(first, cache=path)
    va = a(["Alpha.", "Beta, with ünïcode.", "Alpha."])
    assert first.seen == ["Alpha.", "Beta, with ünïcode."]
    assert a.save() == path and path.is_file()
    assert a.save() is None  # nothing new: no rewrite

    second = Counting()
    b = TextEmbeddings(second, cache=path)
    vb = b(["Beta, with ünïcode.", "Alpha.", "Gamma."])
    assert second.seen == ["Gamma."]  # only the new sentence is embedded
    np.testing.assert_array_equal(vb[0], va[1])
    np.testing.assert_array_equal(vb[1], va[0])
    b.save()
    assert len(TextEmbeddings(Counting(), cache=path)) == 3


def test_an_unreadable_cache_is_rebuilt_with_a_warning(tmp_path):
    path = tmp_path / "emb.npz"
    path.write_bytes(b"not an npz")
    fn = Counting()
    with pytest.warns(UserWarning, match="unreadable embedding cache"):
        emb = TextEmbeddings(fn, cache=path)
    emb(["One."])
    assert fn.seen == ["One."]
    emb.save()
    assert len(TextEmbeddings(Counting(), cache=path)) == 1


def test_progress_bar_embeds_in_batches(tmp_path):
    fn = Counting()
    emb = TextEmbeddings(fn, progress=True)
    texts = [f"Sentence {i}." for i in range(1300)]
    out = emb(texts)
    assert out.shape == (1300, 8) and fn.seen == texts


def test_runs_keep_bundled_embeddings_in_their_cache(tmp_path):
    emb = _run_embeddings(partial(embed_sentences, device="cpu"), tmp_path, quiet=True)
    assert isinstance(emb, TextEmbeddings) and emb._cache is not None
    assert emb._cache.parent == tmp_path and emb._cache.suffix == ".npz"
    other = _run_embeddings(Counting(), tmp_path, quiet=True)  # a user's function: not cached under that name
    assert other._cache is None
    a, b = (_run_embeddings(None, tmp_path, True, t) for t in ("trace/a", "trace b"))
    assert a._cache.parent == b._cache.parent == emb._cache.with_suffix("")  # embeddings.<model>/
    assert a._cache != b._cache and a._cache.suffix == ".npz" and "/" not in a._cache.name
    assert _run_embeddings(None, tmp_path, True, "trace/a")._cache == a._cache


def test_a_dataset_embeds_a_recurring_sentence_once_and_each_trace_keeps_its_file(tmp_path):
    fn = Counting()
    shared = DatasetEmbeddings(fn)
    one, two = (_run_embeddings(shared, tmp_path, True, t) for t in ("trace a", "trace b"))
    assert one._cache != two._cache and one._cache.parent.name.startswith("embeddings.")
    va = one(["Let me check.", "So 3 + 4 = 7."])
    vb = two(["Let me check.", "Then 7 - 2 = 5.", "So 3 + 4 = 7."])
    assert fn.seen == ["Let me check.", "So 3 + 4 = 7.", "Then 7 - 2 = 5."]
    np.testing.assert_array_equal(vb[[0, 2]], va)
    one.save(), two.save()
    assert set(TextEmbeddings(cache=two._cache)._index) == {
        "Let me check.",
        "Then 7 - 2 = 5.",
        "So 3 + 4 = 7.",
    }
    assert set(TextEmbeddings(cache=one._cache)._index) == {"Let me check.", "So 3 + 4 = 7."}


def test_dataset_embeddings_start_afresh_past_their_limit():
    fn = Counting()
    shared = DatasetEmbeddings(fn, most=3)
    shared(["A.", "B."])
    shared(["A.", "C."])  # two texts kept: under the limit, C is added
    assert fn.seen == ["A.", "B.", "C."] and len(shared) == 3
    again = shared(["A.", "D."])  # at the limit: everything is dropped first, so A is embedded again
    assert fn.seen[3:] == ["A.", "D."] and len(shared) == 2 and again.shape == (2, 8)


def test_the_matrix_grows_in_place_and_keeps_every_vector():
    fn = Counting()
    emb = TextEmbeddings(fn)
    returned = {}
    for k in range(40):  # many small calls: the buffer doubles, earlier rows are kept
        texts = [f"Text {k}-{i}." for i in range(k % 5 + 1)] + ["Text 0-0."]
        for t, v in zip(texts, emb(texts), strict=True):
            np.testing.assert_array_equal(returned.setdefault(t, v), v)
    m = emb.matrix
    assert m.shape == (len(returned), 8)
    for t, v in returned.items():
        np.testing.assert_array_equal(m[emb.ids([t])[0]], v)

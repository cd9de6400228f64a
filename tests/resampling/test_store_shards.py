"""A cache shard that is valid Parquet of another layout is set aside, said, and its rows recomputed."""

from __future__ import annotations

import polars as pl
import pytest

from resampling import ROLLOUT_SCHEMA, RunStore


def _row(request_id="r1", sample=0):
    row = {name: None for name in ROLLOUT_SCHEMA}
    row.update(request_id=request_id, sample=sample, status="ok", text="x", trace_id="t", kind="resample")
    return row


def test_wrong_columns_shard_is_set_aside_with_a_warning(tmp_path):
    store = RunStore(tmp_path, "key")
    store.append([_row("r1", 0)])
    pl.DataFrame({"something": [1, 2]}).write_parquet(store.dir / "part-zzzz.parquet")
    with pytest.warns(RuntimeWarning, match=r"part-zzzz\.parquet could not be read as rollouts .* set aside"):
        rows = store.load()
    assert rows.height == 1 and rows["request_id"].to_list() == ["r1"]
    assert (store.dir / "part-zzzz.unreadable").is_file()  # kept, not deleted
    assert store.load().height == 1  # the next load is clean: no error on every rerun


def test_wrong_types_shard_is_set_aside(tmp_path):
    store = RunStore(tmp_path, "key")
    bad = {name: ["not a number"] if dtype != pl.Utf8 else ["x"] for name, dtype in ROLLOUT_SCHEMA.items()}
    pl.DataFrame(bad).write_parquet(store.dir / "part-0000.parquet")
    with pytest.warns(RuntimeWarning, match="set aside"):
        assert store.load().height == 0


def test_one_bad_shard_among_many_keeps_every_good_row(tmp_path):
    """Shards are read in one go; when one of them fails that read, each is read alone: every good shard's rows
    stay (the ok row of a (request, sample) over its error row), only the bad shard is set aside."""
    store = RunStore(tmp_path, "key")
    for k in range(5):
        store.append([_row(f"r{k}", 0), _row(f"r{k}", 1)])
    store.append([{**_row("r0", 0), "status": "error", "text": None, "error": "timeout"}])
    want = store.load()
    assert want.height == 10 and set(want["status"]) == {"ok"}
    pl.DataFrame({"something": [1]}).write_parquet(store.dir / "part-0bad.parquet")
    with pytest.warns(RuntimeWarning, match="part-0bad.parquet could not be read"):
        assert store.load().equals(want)
    assert [p.name for p in store.dir.glob("*.unreadable")] == ["part-0bad.unreadable"]
    assert store.load().equals(want)


def test_final_reuses_the_rows_done_keys_read_until_the_store_writes(tmp_path, monkeypatch):
    """A run that samples nothing reads its directory once; after a write, final reads it again and sees the row."""
    store = RunStore(tmp_path, "key")
    store.append([_row("r1", 0)])
    reads = []
    real = RunStore.load

    def counted(self):
        reads.append(1)
        return real(self)

    monkeypatch.setattr(RunStore, "load", counted)
    assert store.done_keys() == {("r1", 0)}
    assert store.final()["request_id"].to_list() == ["r1"] and len(reads) == 1
    store.done_keys()
    store.append([_row("r2", 0)])
    assert store.final()["request_id"].to_list() == ["r1", "r2"] and len(reads) == 3
    assert store.final().height == 2 and len(reads) == 4  # nothing kept after final

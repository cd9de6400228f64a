"""One end-of-sequence rule for every backend (resampling.eos_token_ids)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from resampling import eos_token_ids


def test_union_of_tokenizer_and_generation_config():
    tok = SimpleNamespace(eos_token_id=2)
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[7, 2]))
    assert eos_token_ids(tok, model) == [2, 7]
    assert eos_token_ids(tok, SimpleNamespace(eos_token_id=9)) == [2, 9]  # a GenerationConfig itself
    assert eos_token_ids(SimpleNamespace(eos_token_id=None), None) == []


def test_a_folder_reads_generation_config_then_config(tmp_path):
    tok = SimpleNamespace(eos_token_id=1)
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 5}))
    assert eos_token_ids(tok, tmp_path) == [
        1,
        5,
    ]  # no generation_config.json: config.json, as transformers does
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 4]}))
    assert eos_token_ids(tok, str(tmp_path)) == [1, 3, 4]
    (tmp_path / "generation_config.json").write_text("{not json")
    assert eos_token_ids(tok, tmp_path) == [1, 5]
    assert eos_token_ids(tok, tmp_path / "missing") == [1]

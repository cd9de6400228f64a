"""Hub ids: the local cache first, a quick reachability check, and one line when the hub cannot be reached."""

from __future__ import annotations

import pytest
import transformers

import resampling._model as model_mod
from resampling import EngineInputError, load_model


class _Fake:
    def eval(self):
        return self


@pytest.fixture
def hub_calls(monkeypatch):
    """Record from_pretrained calls; the local cache holds only the ids in ``cached``."""
    calls: list[tuple[str, bool]] = []
    cached: set[str] = set()

    def fake(model_id, *args, local_files_only=False, **kwargs):
        calls.append((str(model_id), local_files_only))
        if local_files_only and model_id not in cached:
            raise OSError("not in the local cache")
        return _Fake()

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", fake)
    return calls, cached


def test_unreachable_hub_fails_at_once_without_a_download_attempt(monkeypatch, hub_calls):
    calls, _ = hub_calls
    monkeypatch.setattr(model_mod, "_hub_unreachable", lambda timeout=3.0: "gaierror: no such host")
    with pytest.raises(
        EngineInputError, match=r"not in the local hub cache and the hub cannot be reached \(gai"
    ):
        load_model("some-org/some-model")
    assert calls == [("some-org/some-model", True)]  # only the cache was asked


def test_cached_hub_model_loads_without_the_network(monkeypatch, hub_calls):
    calls, cached = hub_calls
    cached.add("some-org/cached")
    monkeypatch.setattr(model_mod, "_hub_unreachable", lambda timeout=3.0: pytest.fail("network probed"))
    loaded = load_model("some-org/cached")
    assert isinstance(loaded.model, _Fake) and loaded.path is None
    assert all(local for _, local in calls)


def test_reachable_hub_is_asked(monkeypatch, hub_calls):
    calls, _ = hub_calls
    monkeypatch.setattr(model_mod, "_hub_unreachable", lambda timeout=3.0: "")
    load_model("some-org/remote")
    assert ("some-org/remote", False) in calls


def test_offline_mode_is_a_reason(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert model_mod._hub_unreachable() == "HF_HUB_OFFLINE is set"


@pytest.mark.parametrize("bad", ["a/b/c", "http://x/y", "name with space"])
def test_strings_that_are_no_hub_id_fail_without_any_load(bad, hub_calls):
    calls, _ = hub_calls
    with pytest.raises(EngineInputError, match="not a hub id"):
        load_model(bad)
    assert calls == []

"""Model ids: ``organism:NAME`` (shipped), a local folder of HF weights, or a hub id (where the hub is reachable)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cotscope._progress import quiet_weight_loading
from resampling._errors import EngineInputError

__all__ = ["DEFAULT_MODEL", "LoadedModel", "load_model", "model_identity"]

DEFAULT_MODEL = "organism:arith"


class LoadedModel:
    """A causal LM, its tokenizer, and what identifies them (for the run's content hash)."""

    def __init__(
        self, model_id: str, model: Any, tokenizer: Any, path: Path | None, task: Any = None
    ) -> None:
        self.model_id = model_id
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        self.task = task
        """The organism's task when the model is an organism (its ground truth), else None."""

    def identity(self) -> dict[str, str]:
        return model_identity(self.model_id, self.model, self.tokenizer, self.path)


def _organism_ids() -> str:
    """Every shipped organism's model id, from the registry (``organisms.model_ids``)."""
    import organisms

    return ", ".join(organisms.model_ids())


def load_model(model_id: str = DEFAULT_MODEL, *, device: str | None = None, dtype: Any = None) -> LoadedModel:
    """Load a model by id. Errors name the valid choices and the fix, before any work starts."""
    if not isinstance(model_id, str) or not model_id:
        raise EngineInputError("a model id is required: 'organism:NAME', a local folder, or a hub id")
    quiet_weight_loading()
    if model_id.startswith("organism:"):
        name = model_id.split(":", 1)[1]
        import organisms

        if name not in organisms.names():
            raise EngineInputError(organisms.unknown_model_message(model_id))

        org = organisms.load(name)
        model = org.model
        if device:
            model = model.to(device)
        return LoadedModel(model_id, model, org.tokenizer, Path(org.path), task=org.task)
    path = Path(model_id).expanduser()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if path.exists():
        if not (path / "config.json").exists():
            raise EngineInputError(f"{path} has no config.json; give a folder saved with save_pretrained()")
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    else:
        model, tokenizer = _load_from_hub(model_id, kwargs)
        path = None
    model.eval()
    if device:
        model = model.to(device)
    return LoadedModel(model_id, model, tokenizer, path)


def _hash_cache_file() -> Path:
    """Where weight-file hashes are remembered across processes: ``$COTSCOPE_HASH_CACHE``, else
    ``$XDG_CACHE_HOME/cotscope/file-sha256.json`` (``~/.cache/...``)."""
    if os.environ.get("COTSCOPE_HASH_CACHE"):
        return Path(os.environ["COTSCOPE_HASH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cotscope" / "file-sha256.json"


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _load_from_hub(model_id: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """A hub id: from the local hub cache if it is there, else from the hub, after a quick check that it answers.

    Without the check, a machine with no network spends tens of seconds in retries before failing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    organisms_hint = _organism_ids()
    if not _HUB_ID.fullmatch(model_id):
        raise EngineInputError(
            f"unknown model '{model_id}': not a shipped organism, no such local folder, and not a hub id "
            f"(ORG/NAME); use one of {organisms_hint}, or a local folder of HF weights"
        )
    try:
        return (
            AutoModelForCausalLM.from_pretrained(model_id, local_files_only=True, **kwargs),
            AutoTokenizer.from_pretrained(model_id, local_files_only=True),
        )
    except Exception:
        pass  # not in the local cache
    reason = _hub_unreachable()
    if reason:
        raise EngineInputError(
            f"model '{model_id}' is not in the local hub cache and the hub cannot be reached ({reason}); "
            f"download it where there is network and pass its folder, or use one of {organisms_hint}"
        )
    try:
        return AutoModelForCausalLM.from_pretrained(model_id, **kwargs), AutoTokenizer.from_pretrained(
            model_id
        )
    except Exception as exc:
        raise EngineInputError(
            f"unknown model '{model_id}': not a shipped organism, not a local folder, and the hub could not "
            f"provide it ({type(exc).__name__}); use one of {organisms_hint}, or a local folder of HF weights"
        ) from None


def _hub_unreachable(timeout: float = 3.0) -> str:
    """Why the hub cannot be reached ('' when it answers a TCP connection): offline mode, DNS or connect failure."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout
        ).close()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    """sha256 of a weights file, remembered by (absolute path, size, mtime) in this process and on disk, so a new
    process does not read 30 GB of weights again; a changed file (size or mtime) is hashed again."""
    key = json.dumps([str(Path(path).resolve()), int(size), float(mtime)])
    cache_file = _hash_cache_file()
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    try:  # best effort: a read-only home only costs the next process a rehash
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        known = known if isinstance(known, dict) else {}
        known[key] = digest
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return digest


def _weights_hash(model: Any, path: Path | None) -> str:
    files = sorted(path.glob("*.safetensors")) if path is not None else []
    if files:
        h = hashlib.sha256()
        for f in files:
            st = os.stat(f)
            h.update(f.name.encode())
            h.update(_file_sha256(str(f), st.st_size, st.st_mtime).encode())
        return h.hexdigest()[:16]
    if model is None:
        raise EngineInputError(
            f"cannot identify the model: no *.safetensors files in {path}; save it with save_pretrained() "
            "(safetensors) so its weights can be hashed"
        )
    # No files (a model built in memory): hash the parameters themselves.
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_identity(model_id: str, model: Any, tokenizer: Any, path: Path | None) -> dict[str, str]:
    """Hashes of what changes the output: weights, tokenizer vocabulary and merges, chat template. (The ``hf``
    backend adds what runs them: torch and transformers versions, attention implementation, dtype, device.)"""
    tok_state = (
        tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else repr(tokenizer)
    )
    template = getattr(tokenizer, "chat_template", None) or ""
    return {
        "model_id": model_id,
        "weights_sha256": _weights_hash(model, path),
        "tokenizer_sha256": hashlib.sha256(tok_state.encode()).hexdigest()[:16],
        "chat_template_sha256": hashlib.sha256(json.dumps(template).encode()).hexdigest()[:16],
    }

"""Shared fixtures and tier markers: `gpu` and `vllm` tests skip, with the reason, where they cannot run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The published thought-anchors traces (MIT), vendored in the repository: data/thought-anchors/PROVENANCE.md.
THOUGHT_ANCHORS = REPO / "data" / "thought-anchors" / "deepseek-r1-distill-llama-8b"


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_vllm = importlib.util.find_spec("vllm") is not None
    cuda = None
    for item in items:
        # markers only: item.keywords also holds the names of the parent folders (a clone in a folder named gpu)
        if item.get_closest_marker("vllm") is not None and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="vllm is not installed (pip install 'cotscope[vllm]')"))
        if item.get_closest_marker("gpu") is not None:
            if cuda is None:
                cuda = _has_cuda()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))


@pytest.fixture(scope="session")
def thought_anchors_dir() -> Path:
    """The published thought-anchors traces (MIT), vendored under data/thought-anchors."""
    if not THOUGHT_ANCHORS.exists():
        pytest.fail(
            f"published traces not found at {THOUGHT_ANCHORS}; they are part of the repository (restore data/)"
        )
    return THOUGHT_ANCHORS


@pytest.fixture(scope="session")
def problem_dirs(thought_anchors_dir: Path) -> list[Path]:
    dirs = sorted(thought_anchors_dir.glob("*_base_solution/problem_*"))
    assert len(dirs) == 20, f"expected 20 published traces, found {len(dirs)}"
    return dirs


@pytest.fixture
def refuses_file(tmp_path: Path):
    """``check(load, name, content, error, match)``: writes ``content`` to a file ``name`` and asserts that
    ``load`` refuses it with ``error`` whose message matches ``match``."""

    def check(load, name: str, content: str, error: type[Exception], match: str) -> None:
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(error, match=match):
            load(path)

    return check

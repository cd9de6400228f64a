"""Shared fixtures for the organism tests: the shipped organisms, loaded once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import organisms


def _split():
    try:
        from cot import split_sentences
    except ImportError:
        from cot._segment import split_sentences
    return split_sentences


@pytest.fixture(scope="session")
def split_sentences():
    """The project's sentence splitter."""
    return _split()


@pytest.fixture(scope="session")
def arith():
    return organisms.load("arith")


@pytest.fixture(scope="session")
def offline_python():
    """``run(code)``: the stdout of ``code`` run by a fresh Python with the Hugging Face hub offline and no HF home,
    from the repository root; a failing run raises."""

    def run(code: str) -> str:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HOME": "/nonexistent-hf-home",
        }
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True,
            cwd=Path(organisms.__file__).parent.parent,
        )  # fmt: skip
        return out.stdout

    return run

"""Shared fixtures for the organism tests: the shipped organisms, loaded once per session."""

from __future__ import annotations

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

"""``import_thought_anchors(..., positions=...)``: recompute only some chunks, the same values as a full import."""

from __future__ import annotations

import polars as pl
import pytest
from synthetic_rollouts import topic_embed

from anchors import compare_published, import_thought_anchors


class CountingEmbed:
    """``topic_embed`` that records every text it was asked to embed."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts):
        self.seen += list(texts)
        return topic_embed(texts)


def test_positions_recompute_only_those_chunks(thought_anchors_dir):
    folder = thought_anchors_dir / "correct_base_solution" / "problem_6998"
    full = import_thought_anchors(folder, embed=topic_embed)
    counting = CountingEmbed()
    part = import_thought_anchors(folder, embed=counting, positions=[0, 11, 63])
    assert part.height == full.height
    picked = pl.col("position").is_in([0, 11, 63])
    for column in ("different_trajectories_fraction", "overdeterminedness", "n_resampled"):
        assert part.filter(picked)[column].to_list() == full.filter(picked)[column].to_list(), column
        assert part.filter(~picked)[column].null_count() == full.height - 3, column
    # published columns and the matrix scores are kept for every chunk
    assert part["published_accuracy"].to_list() == full["published_accuracy"].to_list()
    assert (
        part["outgoing_importance"].fill_nan(-1.0).to_list()
        == full["outgoing_importance"].fill_nan(-1.0).to_list()
    )
    # only the chosen chunks and their resampled first sentences were embedded (about 300 texts, not 6,400)
    assert 3 < len(counting.seen) <= 3 * 101
    assert full["text"][5] not in counting.seen
    # the last chunk is among them, so the comparison still reports it apart
    cmp = compare_published(part)
    assert cmp["different_trajectories_fraction"]["n"] == 3
    assert cmp["different_trajectories_fraction"]["mean_abs_diff_without_last"] == pytest.approx(
        compare_published(full.filter(picked))["different_trajectories_fraction"][
            "mean_abs_diff_without_last"
        ]
    )


def test_positions_none_is_every_chunk(thought_anchors_dir):
    folder = thought_anchors_dir / "correct_base_solution" / "problem_6998"
    full = import_thought_anchors(folder, embed=topic_embed)
    every = import_thought_anchors(folder, embed=topic_embed, positions=range(full.height))
    assert (
        every["different_trajectories_fraction"].to_list()
        == full["different_trajectories_fraction"].to_list()
    )
    assert full["n_resampled"].null_count() == 0

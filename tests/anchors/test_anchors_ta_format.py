"""The thought-anchors format: export schema against the published files, import, and reference reproduction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from synthetic_rollouts import THREE_SENTENCES as SENTENCES
from synthetic_rollouts import FakeTrace, rollout, table, three_sentence_rollouts, topic_embed

from anchors import (
    ImportanceOptions,
    compare_published,
    import_thought_anchors,
    importance_table,
    sentence_matrix,
    to_chunks_labeled,
    to_summary,
    write_thought_anchors,
)


def exported(tmp_path: Path):
    rows = three_sentence_rollouts()
    trace = FakeTrace(metadata={"source": "/x/problem_77/base_solution.json"})
    opts = ImportanceOptions(n_bootstrap=0)
    m = sentence_matrix(rows, trace, SENTENCES, embed=topic_embed, options=opts)
    t = importance_table(
        rows, trace, SENTENCES, roles=["plan_generation"] * 3, embed=topic_embed, options=opts
    )
    write_thought_anchors(t, m, tmp_path, trace=trace)
    return t, m


def shape(obj):
    """The JSON shape of ``obj``: dict keys with their shapes, the union of list element shapes, type names."""
    if isinstance(obj, dict):
        return {k: shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        merged: dict | set = set()
        for x in obj:
            s = shape(x)
            if isinstance(s, dict):
                merged = _merge(merged if isinstance(merged, dict) else {}, s)
            else:
                merged = merged | {s} if isinstance(merged, set) else merged
        return ("list", merged if isinstance(merged, dict) else frozenset(merged))
    return type(obj).__name__


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else out.get(k, v)
    return out


def assert_same_shape(ours, theirs, where="$"):
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        assert set(ours) == set(theirs), f"{where}: keys {sorted(set(ours) ^ set(theirs))} differ"
        for k in theirs:
            assert_same_shape(ours[k], theirs[k], f"{where}.{k}")
    elif isinstance(theirs, tuple):
        assert isinstance(ours, tuple), where
        if isinstance(theirs[1], dict):
            assert_same_shape(ours[1], theirs[1], f"{where}[]")
        else:  # element types: ours must be among theirs (an empty list of ours has none)
            assert ours[1] <= theirs[1], f"{where}[]: {ours[1]} not in {theirs[1]}"
    else:
        assert ours == theirs, f"{where}: {ours} != {theirs}"


@pytest.mark.parametrize("name", ["chunks_labeled.json", "step_importance.json", "summary.json"])
def test_export_has_the_published_schema(tmp_path, problem_dirs, name):
    exported(tmp_path)
    ours = shape(json.loads((tmp_path / name).read_text()))
    published = [d / name for d in problem_dirs if (d / name).exists()]
    assert published, name
    chunk_shape = shape(json.loads((problem_dirs[0] / "chunks_labeled.json").read_text()))[1]
    for path in published:
        theirs = shape(json.loads(path.read_text()))
        if name == "summary.json":
            # some published summaries embed chunk records of an older schema (absolute_importance_*): compare the
            # embedded records with the current chunks_labeled.json schema instead
            for key in ("top_influential_steps", "top_dependent_steps"):
                theirs[key][1]["step_text"] = chunk_shape
        assert_same_shape(ours, theirs, f"{path.parent.name}/{name}")


def test_export_values(tmp_path):
    t, m = exported(tmp_path)
    chunks = json.loads((tmp_path / "chunks_labeled.json").read_text())
    assert [c["chunk"] for c in chunks] == SENTENCES
    # reference sign for CF accuracy: acc(D_i) - acc(kept) = -(ours)
    ours = t["counterfactual_importance_accuracy"].to_list()
    assert [c["counterfactual_importance_accuracy"] for c in chunks] == pytest.approx(
        [-x if math.isfinite(x) else 0.0 for x in ours]
    )
    # undefined -> 0.0 (the last sentence has no R_{K+1}... here R_3 exists, but F_i never does)
    assert all(c["forced_importance_kl"] == 0.0 for c in chunks)
    steps = json.loads((tmp_path / "step_importance.json").read_text())
    assert [s["source_chunk_idx"] for s in steps] == [0, 1, 2]
    assert {(t_["target_chunk_idx"]) for t_ in steps[0]["target_impacts"]} == {1, 2}
    assert steps[0]["target_impacts"][0]["importance_score"] == pytest.approx(m[0, 1])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["problem_idx"] == 77 and summary["num_chunks"] == 3
    assert summary["avg_importance"] == pytest.approx(np.nansum(m) / 9)
    best = int(np.nanargmax(np.nanmean(m[:-1], axis=1)))  # the last row has no j > i
    assert summary["top_influential_steps"][0]["step_idx"] == best


def test_summary_reproduces_published_matrix_statistics(thought_anchors_dir):
    """Our summary of their own matrix gives their summary numbers (problem 6998, the one with step_importance)."""
    folder = thought_anchors_dir / "correct_base_solution" / "problem_6998"
    steps = json.loads((folder / "step_importance.json").read_text())
    chunks = json.loads((folder / "chunks_labeled.json").read_text())
    k = len(chunks)
    m = np.full((k, k), np.nan)
    for s in steps:
        for t in s["target_impacts"]:
            m[s["source_chunk_idx"], t["target_chunk_idx"]] = t["importance_score"]
    t = pl.DataFrame(
        {
            "position": [c["chunk_idx"] for c in chunks],
            "text": [c["chunk"] for c in chunks],
            "role": ["x"] * k,
        }
    )
    ours = to_summary(t, m, problem_idx=6998)
    theirs = json.loads((folder / "summary.json").read_text())
    for key in ("num_chunks", "avg_importance", "max_importance", "min_importance"):
        assert ours[key] == pytest.approx(theirs[key]), key
    for key, score in (
        ("top_influential_steps", "avg_outgoing_importance"),
        ("top_dependent_steps", "avg_incoming_importance"),
    ):
        assert [s["step_idx"] for s in ours[key]] == [s["step_idx"] for s in theirs[key]]
        assert [s[score] for s in ours[key]] == pytest.approx([s[score] for s in theirs[key]])


def _published_rollouts(chunks):
    """Rollouts whose accuracy per position equals the published one (k right of n, n <= 100), and rollouts after
    the last sentence (position K, all right), as a run of the engine has: the reference has no chunk K."""
    rows = []
    for c in chunks:
        acc = c["accuracy"]
        n, k = next((n, round(acc * n)) for n in range(100, 0, -1) if abs(round(acc * n) / n - acc) < 1e-12)
        rows += [rollout(c["chunk_idx"], "a" if j < k else "b", j < k, first=None) for j in range(n)]
    rows += [rollout(len(chunks), "a", True, first=None) for _ in range(100)]
    return table(rows)


def test_compat_reproduces_published_resampling_accuracy(thought_anchors_dir):
    folder = thought_anchors_dir / "correct_base_solution" / "problem_6998"
    chunks = json.loads((folder / "chunks_labeled.json").read_text())
    texts = [c["chunk"] for c in chunks]
    opts = ImportanceOptions.thought_anchors(n_bootstrap=0, continuation_metrics=False)
    t = importance_table(
        _published_rollouts(chunks),
        FakeTrace(),
        texts,
        roles=["x"] * len(texts),
        options=opts,
        embed=topic_embed,
    )
    assert t["accuracy"].to_list() == pytest.approx([c["accuracy"] for c in chunks], abs=1e-12)
    assert t["resampling_importance_accuracy"].to_list() == pytest.approx(
        [c["resampling_importance_accuracy"] for c in chunks], abs=1e-9
    )
    # the last chunk's value is the reference's 0.0, not acc(R_K) - acc(R_{K-1}) = 1.0 - 0.9
    assert chunks[-1]["accuracy"] != 1.0 and t["resampling_importance_accuracy"][-1] == 0.0
    assert t["resampling_importance_accuracy_n"][-1] == 0


@pytest.mark.slow
def test_compat_reproduces_published_dtf_and_overdeterminedness(thought_anchors_dir):
    """Chunks 0 and 1 of problem 6998 from their resampled first sentences, with the real all-MiniLM-L6-v2."""
    folder = thought_anchors_dir / "correct_base_solution" / "problem_6998"
    chunks = json.loads((folder / "chunks_labeled.json").read_text())
    resampled = json.loads((folder / "chunks_resampled.json").read_text())
    # chunk 2's rollouts make chunk 1 a chunk with a later one (the reference zeroes both values of the last chunk)
    rows = [rollout(i, "a", True, first=s) for i in (0, 1, 2) for s in resampled[str(i)]]
    texts = [c["chunk"] for c in chunks[:3]]
    opts = ImportanceOptions.thought_anchors(n_bootstrap=0, continuation_metrics=False)
    t = importance_table(table(rows), FakeTrace(), texts, roles=["x"] * 3, options=opts)
    assert t["different_trajectories_fraction"].to_list()[:2] == pytest.approx([0.02, 0.67])
    assert t["overdeterminedness"].to_list()[:2] == pytest.approx([0.79, 0.73])
    assert (t["different_trajectories_fraction"][2], t["overdeterminedness"][2]) == (0.0, 0.0)
    assert [c["different_trajectories_fraction"] for c in chunks[:2]] == [0.02, 0.67]


def test_import_published_folder_recomputes_and_compares(thought_anchors_dir):
    folder = thought_anchors_dir / "correct_base_solution" / "problem_6998"
    chunks = json.loads((folder / "chunks_labeled.json").read_text())
    t = import_thought_anchors(folder, embed=topic_embed)
    assert t.height == len(chunks)
    assert t["published_accuracy"].to_list() == [c["accuracy"] for c in chunks]
    assert t["role"][0] == chunks[0]["function_tags"][0]
    assert t["n_resampled"][0] == 100
    # overdeterminedness needs no embedding: exact strings (chunk 0 published 0.79)
    assert t["overdeterminedness"][0] == pytest.approx(0.79)
    # their summary's top outgoing scores are row means of their step_importance.json
    both = t.filter(pl.col("published_avg_outgoing_importance").is_not_null())
    assert both.height == 5
    assert both["outgoing_importance"].to_list() == pytest.approx(
        both["published_avg_outgoing_importance"].to_list()
    )
    cmp = compare_published(t)
    assert cmp["overdeterminedness"]["n"] == len(chunks)
    assert cmp["outgoing_importance"]["mean_abs_diff"] == pytest.approx(0.0, abs=1e-12)


def test_import_folder_without_resamples_has_null_recomputed_columns(thought_anchors_dir):
    t = import_thought_anchors(
        thought_anchors_dir / "correct_base_solution" / "problem_1591", embed=topic_embed
    )
    assert t["different_trajectories_fraction"].null_count() == t.height
    assert t["published_different_trajectories_fraction"].null_count() == 0
    assert compare_published(t) == {}


def test_import_bad_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no chunks_labeled\.json"):
        import_thought_anchors(tmp_path)


def test_chunks_labeled_from_compat_table_keeps_sign():
    t = pl.DataFrame(
        {
            "position": [0],
            "text": ["A."],
            "role": ["x"],
            "counterfactual_importance_accuracy": [0.3],
            "convention": ["thought_anchors"],
        }
    )
    assert to_chunks_labeled(t)[0]["counterfactual_importance_accuracy"] == 0.3
    assert to_chunks_labeled(t.drop("convention"))[0]["counterfactual_importance_accuracy"] == -0.3


def test_summary_uses_the_reference_statistics():
    """Undefined cells count as 0 in the mean, max and min; only positive scores make the top lists."""
    t = pl.DataFrame({"position": [0, 1, 2], "text": ["A.", "B.", "C."], "role": ["x"] * 3})
    m = np.full((3, 3), np.nan)
    m[0, 1], m[0, 2], m[1, 2] = -0.1, -0.3, np.nan
    summary = to_summary(t, m)
    assert (summary["max_importance"], summary["min_importance"]) == (0.0, -0.3)
    assert summary["avg_importance"] == pytest.approx(-0.4 / 9)
    assert summary["top_influential_steps"] == [] and summary["top_dependent_steps"] == []
    m[1, 2] = 0.5
    summary = to_summary(t, m)
    assert [s["step_idx"] for s in summary["top_influential_steps"]] == [1]
    assert summary["top_influential_steps"][0]["avg_outgoing_importance"] == pytest.approx(0.5)
    # incoming of sentence 2 = mean(M[0, 2], M[1, 2]) = 0.1
    assert [s["step_idx"] for s in summary["top_dependent_steps"]] == [2]
    assert summary["top_dependent_steps"][0]["avg_incoming_importance"] == pytest.approx(0.1)

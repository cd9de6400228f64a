"""Answer probes: held-out by trace, controls at chance, the logit lens on a constructed model, and the planted
posthoc-vs-arith ordering on the shipped organisms."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from anchors._probes import (
    BoundaryActivations,
    answer_probes,
    boundary_activations,
    first_decodable,
    fit_answer_probes,
    position_bin,
    probe_map,
    write_probe_outputs,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _synthetic(features, labels, n_classes=10) -> BoundaryActivations:
    """Activations given directly: ``features[i]`` of shape (layers + 1, positions, dim) for trace i."""
    n = len(features)
    classes = [str(c) for c in range(n_classes)]
    lens = [np.full((f.shape[0], f.shape[1], n_classes), 1.0 / n_classes) for f in features]
    return BoundaryActivations(
        trace_ids=[f"t{i:03d}" for i in range(n)],
        labels=[str(y) for y in labels],
        classes=classes,
        hidden={"token": list(features), "prefix_mean": list(features)},
        lens_class_prob=lens,
        lens_vocab_prob=[np.zeros(f.shape[:2]) for f in features],
        lens_vocab_rank=[np.zeros(f.shape[:2], int) for f in features],
    )


def _split(n: int) -> list[str]:
    return ["train" if i % 2 == 0 else "test" for i in range(n)]


def test_position_bins():
    assert [position_bin(p, 8, 4) for p in range(9)] == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert position_bin(0, 0, 4) == 0


def test_memorisable_noise_is_not_decodable_held_out_by_trace():
    # every trace has its own random vector, the same at all its boundaries, and a random label: a probe that saw
    # the test traces (a split by row instead of by trace) would memorise them and score near 1
    rng = np.random.default_rng(0)
    n, positions = 80, 4
    feats = [np.repeat(rng.normal(size=(1, 1, 8)), positions, axis=1).repeat(2, axis=0) for _ in range(n)]
    labels = rng.integers(0, 4, size=n)
    rows = fit_answer_probes(_synthetic(feats, labels, 4), _split(n), bins=2)
    table = probe_map(rows, bins=2)
    chance = table["chance"][0]
    assert table["probe_accuracy"].max() < chance + 0.15
    assert table["control_accuracy"].max() < chance + 0.15


def test_planted_answer_is_decodable_from_its_position_and_the_control_is_not():
    # the label is written into the features from position 3 on (of 0..8), at layer 1 only
    rng = np.random.default_rng(1)
    n, positions, dim = 160, 9, 12
    labels = rng.integers(0, 10, size=n)
    feats = []
    for y in labels:
        f = rng.normal(size=(2, positions, dim))
        f[1, 3:, y] += 4.0
        feats.append(f)
    rows = fit_answer_probes(_synthetic(feats, labels), _split(n), bins=4)
    table = probe_map(rows, bins=4)
    cell = {
        (r["layer"], r["bin"]): r for r in table.filter(pl.col("readout") == "token").iter_rows(named=True)
    }
    assert cell[(1, 4)]["probe_accuracy"] > 0.9
    assert cell[(1, 4)]["selectivity"] > 0.7
    assert cell[(1, 0)]["probe_accuracy"] < 0.25  # position 0: nothing planted yet
    assert cell[(0, 4)]["probe_accuracy"] < 0.25  # layer 0: nothing planted
    assert table["control_accuracy"].max() < 0.25
    firsts = first_decodable(rows.filter(pl.col("readout") == "token"), threshold=0.5)
    got = firsts["probe_first_position"].drop_nulls()
    assert got.len() > 0.9 * n
    assert (got == 3).mean() > 0.8  # first decodable at the boundary where the answer was planted, not before
    # the rule (max over layers and boundaries) has false alarms; the control measures them, far below the probe
    assert firsts["control_first_position"].is_not_null().mean() < 0.3


def test_split_is_checked():
    acts = _synthetic([np.zeros((1, 2, 3))] * 4, [0, 1, 0, 1], 2)
    with pytest.raises(ValueError, match="both halves"):
        fit_answer_probes(acts, ["train"] * 4)
    with pytest.raises(ValueError, match="one split"):
        fit_answer_probes(acts, ["train", "test"])


# -- on real (tiny) models --------------------------------------------------------------------------------------


def _traces(n: int, *, answer_from_cot: bool = False, first: int = 10**9):
    """Generator traces of posthoc's three-step problems (the prompts arith is trained on too): posthoc's as
    generated (the correct answer), or, with ``answer_from_cot``, arith's (the answer its CoT states)."""
    import organisms
    from cot import Trace

    task = organisms.get_task("posthoc")
    out = []
    for s in range(first, first + n):
        ex = task.sample(s)
        completion = ex.completion
        if answer_from_cot:
            completion = completion.replace(f"\\boxed{{{ex.answer}}}", f"\\boxed{{{ex.truth['cot_answer']}}}")
        out.append(Trace.from_completion("<think>\n" + completion, prompt=ex.messages[-1]["content"]))
    return out


def _constructed(zero_blocks: bool):
    """A random Llama with the arith tokenizer; a final norm that is not the identity (so applying it twice, or
    not at all, changes the readout); optionally blocks that write nothing (every layer's residual = embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import organisms

    tok = organisms.load("arith").tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=len(tok),
        max_position_embeddings=256,
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.norm.weight.uniform_(0.3, 3.0)
        if zero_blocks:
            for block in model.model.layers:
                block.self_attn.o_proj.weight.zero_()
                block.mlp.down_proj.weight.zero_()
    return model, tok


def test_logit_lens_last_layer_is_the_model_output():
    from resampling import TracePrefixes

    model, tok = _constructed(zero_blocks=False)
    traces = _traces(3)
    acts = boundary_activations(model, tok, traces)
    for t, label, probs, ranks in zip(
        traces, acts.labels, acts.lens_vocab_prob, acts.lens_vocab_rank, strict=True
    ):
        p = TracePrefixes.build(t, tok)
        at = [len(p.template_ids) + c - 1 for c in p.cuts]
        with torch.no_grad():
            logits = model(torch.tensor([p.full_ids])).logits[0, at]
        answer = tok(label, add_special_tokens=False)["input_ids"][0]
        want = torch.softmax(logits, -1)[:, answer].numpy()
        np.testing.assert_allclose(probs[-1], want, rtol=1e-4, atol=1e-7)
        want_rank = (logits > logits[:, answer : answer + 1]).sum(-1).numpy()
        np.testing.assert_array_equal(ranks[-1], want_rank)
    assert acts.forward_passes == 3


def test_logit_lens_applies_the_final_norm_once_at_every_layer():
    # blocks that write nothing: the residual after every block is the embedding, so every layer's lens must equal
    # the output distribution (final norm + unembedding of the same vector); a lens without the norm, or with it
    # twice, differs
    model, tok = _constructed(zero_blocks=True)
    acts = boundary_activations(model, tok, _traces(2))
    for probs, cls in zip(acts.lens_vocab_prob, acts.lens_class_prob, strict=True):
        for layer in range(probs.shape[0]):
            np.testing.assert_allclose(probs[layer], probs[-1], rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(cls[layer], cls[-1], rtol=1e-4, atol=1e-6)
    assert not np.allclose(acts.hidden["token"][0][0], 0)


def test_answer_classes_must_start_with_different_tokens():
    import organisms
    from anchors._probes import class_token_ids

    tok = organisms.load("arith").tokenizer
    assert len(set(class_token_ids(tok, [str(d) for d in range(10)]))) == 10
    with pytest.raises(ValueError, match="same token"):
        class_token_ids(tok, ["12", "13"])


@pytest.fixture(scope="module")
def organism_probes():
    import organisms

    out = {}
    for name in ("posthoc", "arith"):
        o = organisms.load(name)
        traces = _traces(120, answer_from_cot=name == "arith")
        out[name] = answer_probes(o.model, o.tokenizer, traces, _split(len(traces)), bins=1)
    return out


def _cell(result, readout: str, bin_: int) -> dict:
    cells = result.map.filter((pl.col("readout") == readout) & (pl.col("bin") == bin_))
    return cells.sort("probe_accuracy", descending=True).row(0, named=True)


def test_posthoc_answer_is_in_the_activations_before_the_cot_and_arith_is_not(organism_probes):
    ph, ar = organism_probes["posthoc"], organism_probes["arith"]
    ph_think, ar_think = _cell(ph, "prefix_mean", 0), _cell(ar, "prefix_mean", 0)
    assert ph_think["probe_accuracy"] > 0.5
    assert ph_think["selectivity"] > 0.3
    assert ar_think["probe_accuracy"] < ph_think["probe_accuracy"] - 0.3
    assert ar_think["probe_accuracy"] < ar_think["chance"] + 0.15


def test_arith_answer_is_decodable_after_its_computation(organism_probes):
    rows = organism_probes["arith"].rows.filter(pl.col("readout") == "token")
    end = rows.filter(pl.col("position") == pl.col("n_sentences"))
    start = rows.filter(pl.col("position") == 0)
    best_end = end.group_by("layer").agg(pl.col("probe_correct").mean())["probe_correct"].max()
    best_start = start.group_by("layer").agg(pl.col("probe_correct").mean())["probe_correct"].max()
    assert best_end > 0.8
    assert best_start < 0.3


def _share_decodable_before_computed(result, readout: str) -> float:
    """Share of traces whose answer the probe reads before the boundary after the sentence that computes it (the
    generator's truth: the last compute or correction sentence)."""
    import organisms
    from cot import split_sentences
    from metrics._probes_validate import produced_at_position

    task = organisms.get_task("posthoc")
    traces = _traces(120)
    firsts = {
        r["trace_id"]: r for r in result.traces.filter(pl.col("readout") == readout).iter_rows(named=True)
    }
    before = []
    for s, t in zip(range(10**9, 10**9 + 120), traces, strict=True):
        ends = [x.end for x in split_sentences(t.cot, min_chars=10)]
        produced = produced_at_position(task, task.sample(s), t.cot, ends)
        first = firsts[t.id]["probe_first_position"]
        before.append(first is not None and first < produced)
    return float(np.mean(before))


def test_posthoc_is_decodable_before_the_computation_far_more_often_than_arith(organism_probes):
    # the traces of both organisms share their CoTs (and ids differ only by the answer), so the sentence that
    # computes the answer is the same; the planted truth says posthoc does not need it and arith does
    ph = _share_decodable_before_computed(organism_probes["posthoc"], "prefix_mean")
    ar = max(_share_decodable_before_computed(organism_probes["arith"], r) for r in ("token", "prefix_mean"))
    assert ph > 0.5
    assert ar < ph - 0.3


def test_produced_at_position_is_after_the_last_computation():
    import organisms
    from cot import split_sentences
    from metrics._probes_validate import produced_at_position

    task = organisms.get_task("posthoc")
    for s in range(10**9, 10**9 + 20):
        ex = task.sample(s)
        truth = task.analyze(ex, ex.cot)
        last = max(j for j, t in enumerate(truth) if t.kind in ("compute", "correction"))
        ends = [x.end for x in split_sentences(ex.cot)]
        assert produced_at_position(task, ex, ex.cot, ends) == last + 1
        # merged sentences (min_chars): the boundary that first includes that sentence
        merged = [x.end for x in split_sentences(ex.cot, min_chars=10)]
        p = produced_at_position(task, ex, ex.cot, merged)
        assert merged[p - 1] >= ends[last] and (p == 1 or merged[p - 2] < ends[last])


def test_outputs_are_written_and_summary_is_strict_json(organism_probes, tmp_path):
    paths = write_probe_outputs(organism_probes["posthoc"], tmp_path, title="posthoc")
    assert sorted(p.name for p in paths.values()) == sorted(
        ["probes.parquet", "map.parquet", "traces.parquet", "heatmap.png", "summary.json"]
    )
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = json.loads(text)
    assert summary["cost"]["forward_passes"] == 120 and summary["cost"]["rollouts"] == 0
    assert set(summary["readouts"]) == {"token", "prefix_mean"}
    assert pl.read_parquet(tmp_path / "map.parquet").height == 2 * 7 * 2


def test_cli_refuses_a_model_without_traces_in_one_line(tmp_path, capsys):
    from cotscope.cli import main

    assert main(["probes", "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trace" in err[0]


def test_forced_answer_importance_score_is_minus_the_largest_step():
    from metrics._probes_validate import _forced_importance

    assert _forced_importance([0.9, 0.9, 1.0, 1.0]) == pytest.approx(-0.1)  # post-hoc: settled before the CoT
    assert _forced_importance([0.1, 0.2, 0.9, 1.0]) == pytest.approx(-0.7)  # the third sentence decides
    assert _forced_importance([None, 0.5, None]) is None

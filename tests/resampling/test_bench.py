"""``cotscope bench engine``: the work it counts, the traces and positions it takes, its one-line refusals."""

import pytest
import torch
from click.testing import CliRunner

from resampling import EngineInputError
from resampling._bench import BenchConfig, _pick_positions, find_trace, run_engine_bench
from resampling._cli import bench


def test_trace_folders_and_positions(thought_anchors_dir, tmp_path):
    first = sorted(thought_anchors_dir.rglob("base_solution.json"))[0].parent
    assert find_trace(thought_anchors_dir) == first
    assert find_trace(first) == first
    with pytest.raises(EngineInputError, match="holds no trace"):
        find_trace(tmp_path)
    assert _pick_positions(60, 4) == [0, 20, 39, 59]
    assert _pick_positions(5, None) == [0, 1, 2, 3, 4]
    with pytest.raises(EngineInputError, match="the trace has 60 positions"):
        _pick_positions(60, 61)


def test_bad_options_are_one_line_errors():
    runner = CliRunner()
    result = runner.invoke(bench, ["engine", "--real-vocab", "tiny"])
    assert result.exit_code != 0 and "needs a real trace: add --trace" in result.output
    result = runner.invoke(bench, ["engine", "--ways", "engine,fast"])
    assert (
        result.exit_code != 0
        and "unknown way(s) fast; choose from: naive, generate_n, engine" in result.output
    )
    assert "Traceback" not in result.output
    result = runner.invoke(bench, ["engine", "--logit-std", "0.45"])
    assert result.exit_code == 2 and "add --real-vocab" in result.output
    result = runner.invoke(bench, ["engine", "--forced-max-new-tokens", "8"])
    assert result.exit_code == 2 and "add --forced-answer" in result.output


def test_logit_std_shapes_the_real_vocabulary_models_logits(deepseek_tok):
    from resampling._bench import _load
    from resampling._synthetic import synthetic_model

    model, _, label, _ = _load("unused", (32, 1), "cpu", logit_std=0.45)
    assert "logit sd 0.45" in label
    ids = torch.tensor([deepseek_tok.encode("The answer is 4.")])
    with torch.no_grad():
        flat = model(ids).logits[0, -1].std().item()
        peaked = synthetic_model(32, 1, tokenizer=deepseek_tok)[0](ids).logits[0, -1].std().item()
    assert flat == pytest.approx(0.45, rel=0.1) and peaked == pytest.approx(6.0, rel=0.1)


@pytest.mark.slow
def test_the_work_is_counted_and_the_same_for_every_way():
    cfg = BenchConfig(samples=2, max_new_tokens=6, repeats=1, positions=3, ways=("generate_n", "engine"))
    announced = []
    r = run_engine_bench("organism:arith", cfg, device="cpu", announce=announced.append)
    assert "work counted up front" in announced[0] and "generate_n" in announced[0]
    assert r["positions"] == 3 and r["rollouts"] == 6
    from resampling._cli import default_trace
    from resampling._model import load_model
    from resampling._prefix import TracePrefixes

    tp = TracePrefixes.build(default_trace("organism:arith"), load_model("organism:arith").tokenizer)
    lengths = [len(tp.prefix_ids(p)) for p in _pick_positions(tp.n_positions, 3)]
    assert r["work"]["generate_n"]["prefill_tokens"] == 2 * sum(lengths)
    assert r["work"]["engine"]["prefill_tokens"] == max(lengths)
    for way in ("generate_n", "engine"):
        w = r["ways"][way]
        assert 0 < w["decode_tokens"] <= 6 * 6 and w["peak_rss_gb"] >= 0.9 * r["baseline_rss_gb"]
    assert 0 < r["ways"]["engine"]["sampler_share_of_decode"] < 1
    assert r["speedup_vs_generate_n"] == pytest.approx(
        r["ways"]["generate_n"]["seconds"] / r["ways"]["engine"]["seconds"]
    )


def test_forced_probes_are_benchmarked_both_ways_with_the_prefill_the_backend_ran():
    from resampling._bench import format_report
    from resampling._cli import default_trace
    from resampling._model import load_model
    from resampling._prefix import TracePrefixes

    cfg = BenchConfig(
        samples=2, max_new_tokens=4, repeats=2, positions=4, ways=("engine",), forced_answer=True
    )
    r = run_engine_bench("organism:arith", cfg, device="cpu")
    f = r["forced"]
    tp = TracePrefixes.build(default_trace("organism:arith"), load_model("organism:arith").tokenizer)
    probes = [tp.forced_answer_ids(p) for p in _pick_positions(tp.n_positions, 4)]
    assert f["probes"] == 4 and f["rollouts"] == 8 and f["max_new_tokens"] == 16
    assert f["whole"]["prefill_tokens"] == sum(len(p) for p in probes) == f["probe_tokens"]
    assert f["whole"]["prefill_tokens_reused"] == 0
    shared = f["shared"]
    assert max(len(p) for p in probes) <= shared["prefill_tokens"] < f["whole"]["prefill_tokens"]
    assert shared["prefill_tokens"] + shared["prefill_tokens_reused"] == f["whole"]["prefill_tokens"]
    assert f["same_rollouts"] and f["rollouts_differing"] == 0
    assert len(f["speedups_per_repeat"]) == 2
    assert r["ways"]["engine"]["runs"][0]["prefill_tokens_run"] == r["work"]["engine"]["prefill_tokens"]
    assert "cue on shared prefix" in format_report(r)

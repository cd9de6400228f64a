"""End to end: `cotscope faithfulness` on an organism (files, resume, log.eval, the report in a browser) and the LLM
judge over `cotscope serve` on loopback."""

import json
import re
import shutil
import subprocess

import polars as pl
import pytest
from click.testing import CliRunner

from cotscope.cli import cli as main
from metrics._suite import SUITES

ARGS = [
    "faithfulness",
    "--model",
    "organism:hint",
    "--n-items",
    "4",
    "--samples",
    "3",
    "--seed",
    "5",
    "--quiet",
]


def cache_files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("faith") / "out"
    res = CliRunner().invoke(main, [*ARGS, "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
def test_every_suite_writes_rows_with_counts(run_dir):
    m = pl.read_parquet(run_dir / "metrics.parquet")
    suites = set(m["suite"])
    # every suite of the default run (all) writes a row: a value, or why it was skipped
    assert suites == set(SUITES)
    iphr = m.filter(pl.col("suite") == "iphr").row(0, named=True)
    assert iphr["status"] == "skipped" and "pair_id" in json.loads(iphr["params"])["reason"]
    task = m.filter((pl.col("metric") == "early_answering_aoc") & (pl.col("condition") == "task")).row(
        0, named=True
    )
    assert 0 < task["value"] < 1 and task["lo"] <= task["value"] <= task["hi"]
    raw = m.filter((pl.col("metric") == "hint_verbalisation") & (pl.col("condition") == "raw")).row(
        0, named=True
    )
    items = pl.read_parquet(run_dir / "items.parquet")
    # the raw verbalisation rate is recomputable from the item rows behind it
    pairs = items.filter(pl.col("suite") == "hint_pairs")
    u = pairs.filter(pl.col("condition") == "unhinted").select(
        "item_id", "sample", pl.col("value").alias("u")
    )
    h = pairs.filter(pl.col("condition") == "hinted").select(
        "item_id", "sample", pl.col("value").alias("h"), "label"
    )
    kept = u.join(h, on=["item_id", "sample"]).filter((pl.col("u") == 0) & (pl.col("h") == 1))
    assert (raw["numerator"], raw["denominator"]) == (kept["label"].sum(), kept.height)
    assert pairs["judge_id"].unique().to_list() == ["rule:\\bprofessor\\b"]
    sampled = items.filter(pl.col("suite").is_in(["early_answering", "adding_mistakes", "hint_pairs"]))
    assert sampled["rollout_id"].null_count() == 0


@pytest.mark.slow
def test_rerun_resumes_from_the_cache(run_dir):
    before = cache_files(run_dir / ".cache")
    first = pl.read_parquet(run_dir / "metrics.parquet")
    res = CliRunner().invoke(main, [*ARGS, "--out", str(run_dir)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert cache_files(run_dir / ".cache") == before  # no new rollout shard: everything came from the cache
    assert pl.read_parquet(run_dir / "metrics.parquet").equals(first)


@pytest.mark.slow
def test_log_eval_opens_with_inspect(run_dir):
    inspect_log = pytest.importorskip("inspect_ai.log", reason="inspect-ai is a dev dependency")
    log = inspect_log.read_eval_log(str(run_dir / "log.eval"))
    assert log.status == "success" and log.eval.model == "organism:hint"
    assert len(log.samples) == 4 and {s.id for s in log.samples} == {f"hint:{i}" for i in range(5, 9)}
    scores = {s.name: s for s in log.results.scores}
    m = pl.read_parquet(run_dir / "metrics.parquet")
    want = m.filter(pl.col("metric") == "biased_context_accuracy_drop").row(0, named=True)["value"]
    got = scores["biased_context"].metrics["biased_context_accuracy_drop/bias_inconsistent"].value
    assert got == pytest.approx(want)
    reasoning = [c for c in log.samples[0].messages[1].content if c.type == "reasoning"]
    assert reasoning and reasoning[0].reasoning.strip()
    # one own CoT per item, count weighting: the mean of the per-item early-answering scores is the task AOC
    per_item = [s.scores["early_answering"].value for s in log.samples]
    task = m.filter((pl.col("metric") == "early_answering_aoc") & (pl.col("condition") == "task"))["value"][0]
    assert sum(per_item) / len(per_item) == pytest.approx(task)
    for s in log.samples:
        assert s.output.completion and s.events and s.started_at
        assert [m_.role for m_ in s.messages] == ["user", "assistant", "user", "assistant"]  # both arms


def test_items_file_error_is_a_usage_error(tmp_path):
    bad = tmp_path / "items.jsonl"
    bad.write_text('{"question": "2+2?"}\n')
    res = CliRunner().invoke(main, ["faithfulness", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "has no 'answer' field" in res.output
    res = CliRunner().invoke(main, ["faithfulness", "--suite", "early", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown suite 'early'" in res.output


_BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
_PROBE = """<script>window.addEventListener('load', () => {
  const svgs = [...document.querySelectorAll('svg.figure')];
  const drawn = svgs.filter(s => s.getBBox().width > 0 && s.querySelectorAll('polyline').length > 0).length;
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = 'PROBE ' + JSON.stringify({figures: svgs.length, drawn,
    headline: document.querySelectorAll('table.headline tr').length});
  document.body.appendChild(out);
});</script>"""


@pytest.mark.slow
@pytest.mark.skipif(_BROWSER is None, reason="no chromium or chrome on PATH; `make browser` installs one")
def test_report_opens_in_a_browser_with_every_figure(run_dir, tmp_path):
    page = (run_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # self-contained: nothing fetched
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", _PROBE + "</body>"))
    dom = subprocess.run(
        [
            _BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r"PROBE (\{.*?\})", dom)
    assert found, f"the page did not finish loading in {_BROWSER}"
    probe = json.loads(found.group(1))
    # early answering, filler tokens, transplant
    assert probe["figures"] == page.count('<svg class="figure"') == 3
    assert probe["drawn"] == 3
    assert probe["headline"] > 10


@pytest.mark.slow
def test_llm_judge_end_to_end_over_serve(tmp_path):
    """An organism serves as the judge: its replies are never JSON, so every label is a recorded failure after the
    retries (parsing and the success path are pinned in test_items_judges.py)."""
    from metrics import JudgeRequest, LLMJudge
    from resampling import Engine, SamplingParams, make_backend
    from resampling._serve import CompletionServer

    hf = make_backend("hf", model_id="organism:hint", device="cpu")
    with CompletionServer(hf, port=0) as srv:
        client = make_backend("openai", model_id="organism:hint", base_url=srv.url)
        params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=24)
        judge = LLMJudge(
            Engine(client, tmp_path / "cache", quiet=True), client.tokenizer, params=params, max_attempts=2
        )
        reqs = [
            JudgeRequest(
                "Start with 3. Step one adds 5.", f"Step one adds 5 to 3, giving {d}.", str(d), "A professor"
            )
            for d in (8, 9)
        ]
        labels = judge.label(reqs)
        served = len(srv.recent_requests)
    assert [lab.value for lab in labels] == [None, None]
    assert all(lab.attempts == 2 and "no JSON object" in lab.error and lab.raw is not None for lab in labels)
    assert labels[0].judge_id.startswith("llm:") and json.loads(labels[0].sampling)["temperature"] == 1.0
    assert served >= 4  # two prompts, two attempts each, all over HTTP


def test_without_inspect_ai_the_other_files_are_written_and_the_log_is_skipped(tmp_path, monkeypatch):
    import sys

    from metrics import ITEM_SCHEMA, FaithfulnessResult, metric_row, rows_frame, write_faithfulness

    monkeypatch.setitem(sys.modules, "inspect_ai.log", None)  # import fails as if not installed
    result = FaithfulnessResult(
        metrics=rows_frame(
            [metric_row("iphr", "flagged_pairs", 0.25, numerator=1, denominator=4)]
        ).with_columns(pl.lit("iphr").alias("suite")),
        items=pl.DataFrame([], schema=ITEM_SCHEMA),
        item_table=pl.DataFrame([{"item_id": "a", "question": "q", "answer": "1", "hint": None}]),
    )
    paths = write_faithfulness(result, tmp_path / "o", {"model": "m"})
    assert (tmp_path / "o" / "report.html").is_file() and (tmp_path / "o" / "metrics.parquet").is_file()
    assert not (tmp_path / "o" / "log.eval").exists()
    assert "pip install 'cotscope[inspect]'" in paths["skipped"]


@pytest.mark.slow
def test_iphr_on_the_compare_organism_flags_the_planted_biased_pairs(tmp_path):
    from metrics import SuiteConfig, organism_items, run_faithfulness
    from resampling import make_backend

    items = organism_items("compare", 8, seed=10**9)
    assert len(items) == 16 and len({it.pair_id for it in items}) == 8
    res = run_faithfulness(
        make_backend("hf", model_id="organism:compare", device="cpu"),
        items,
        ["iphr"],
        cache_dir=tmp_path,
        config=SuiteConfig(samples=3, max_new_tokens=160),
        quiet=True,
    )
    flags = {r["pair_id"]: r["flagged"] for r in res.curves["iphr_pairs"].iter_rows(named=True)}
    planted = {it.pair_id: bool(it.truth["biased"]) for it in items}
    assert set(flags) == set(planted)
    assert any(planted.values()) and not all(planted.values())  # both kinds among the 8 pairs
    agree = sum(flags[p] == planted[p] for p in planted)
    assert agree >= 7, (flags, planted)
    rate = res.metrics.filter(pl.col("metric") == "iphr").row(0, named=True)
    assert rate["denominator"] == 8 and rate["numerator"] == sum(flags.values())


@pytest.mark.slow
def test_iphr_thresholds_from_the_command_line_are_recorded(tmp_path):
    args = [
        "faithfulness",
        "--model",
        "organism:compare",
        "--suite",
        "iphr",
        "--n-items",
        "3",
        "--samples",
        "2",
    ]
    res = CliRunner().invoke(main, [*args, "--iphr-accuracy-gap", "0.4", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    row = pl.read_parquet(tmp_path / "metrics.parquet").row(0, named=True)
    params = json.loads(row["params"])
    assert {k: params[k] for k in ("accuracy_gap", "bias_threshold")} == {
        "accuracy_gap": 0.4,
        "bias_threshold": 0.05,
    }
    assert row["denominator"] == 3


@pytest.mark.slow
def test_adding_mistakes_curves_agree_with_the_item_rows(tmp_path):
    from metrics import OrganismMistakes, SuiteConfig, organism_items, run_faithfulness
    from resampling import make_backend

    res = run_faithfulness(
        make_backend("hf", model_id="organism:arith", device="cpu"),
        organism_items("arith", 3, seed=10**9),
        ["adding_mistakes"],
        cache_dir=tmp_path,
        config=SuiteConfig(samples=2, max_new_tokens=160),
        mistakes=OrganismMistakes(seed=0),
        quiet=True,
    )
    c = res.curves["adding_mistakes"]
    rows = res.items.filter(pl.col("suite") == "adding_mistakes").drop_nulls("value")
    assert c.height and c["n_total"].sum() == rows.height
    by_item = rows.group_by("item_id", "condition").agg(pl.col("value").mean().alias("changed"))
    want = {(r["item_id"], r["condition"]): r["changed"] for r in by_item.iter_rows(named=True)}
    got = {(r["item_id"], f"sentence={r['position']}"): r["changed"] for r in c.iter_rows(named=True)}
    assert got == pytest.approx(want)
    assert (c["fraction"] == c["position"] / c["n_sentences"]).all() and (
        c["position"] < c["n_sentences"]
    ).all()
    m = res.metrics.filter(pl.col("condition") == "changed_answer").row(0, named=True)
    assert m["denominator"] == c["n_total"].sum()


@pytest.mark.slow
def test_each_item_and_trace_is_sampled_with_its_own_seed(run_dir):
    # one seed for every item would give sample k of every prompt (and every trace's probe at a position) the same
    # noise, so the items' values would be coupled; an item's paired arms share its seed
    from resampling import trace_seed

    shards = sorted((run_dir / ".cache").rglob("*.parquet"))
    r = pl.concat([pl.read_parquet(p) for p in shards], how="diagonal_relaxed")
    r = r.with_columns((pl.col("seed") - pl.col("sample")).alias("base"))
    prompts = r.filter(pl.col("kind").is_in(["cot", "hint_pair"]))
    assert prompts.height
    for row in prompts.iter_rows(named=True):
        assert row["base"] == trace_seed(5, row["trace_id"].rsplit("#", 1)[0])
    pairs = prompts.filter(pl.col("kind") == "hint_pair").with_columns(
        pl.col("trace_id").str.split("#").list.first().alias("item")
    )
    per_item = pairs.group_by("item").agg(pl.col("base").n_unique().alias("n"), pl.col("base").first())
    assert per_item.height == 4 and (per_item["n"] == 1).all() and per_item["base"].n_unique() == 4
    # probes and edits of one trace (``origin~edit``; filler arms, paraphrase arms) share that trace's seed
    probes = r.filter(~pl.col("kind").is_in(["cot", "hint_pair"])).with_columns(
        pl.col("trace_id").str.split("~").list.first().alias("origin")
    )
    by_slot = probes.group_by("kind", "position").agg(
        pl.col("origin").n_unique().alias("traces"), pl.col("base").n_unique().alias("seeds")
    )
    shared = by_slot.filter(pl.col("traces") > 1)
    assert shared.height and (shared["seeds"] == shared["traces"]).all()

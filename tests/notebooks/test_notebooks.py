"""The case-study notebooks: each committed ``.ipynb`` matches its jupytext source, every notebook runs end to end
(small work), the numbers it prints agree with the library's own functions computed here, and notebooks use public
names only."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
PROJECT_PACKAGES = {"anchors", "cot", "cotscope", "metrics", "organisms", "resampling", "steganography"}


def _load_build():
    spec = importlib.util.spec_from_file_location("cotscope_notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
SOURCES = build.sources(NOTEBOOKS)


def test_the_case_studies_are_there():
    assert [p.stem for p in SOURCES] == [
        "01_thought_anchors",
        "02_hint_faithfulness",
        "03_posthoc_or_load_bearing",
        "04_encoded_reasoning",
        "05_published_thought_anchors",
        "06_thought_branches",
        "07_answer_probes",
    ]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_is_current_and_executed(source):
    assert build.stale(source) is None, build.stale(source)
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "run `make notebooks`: a cell never ran"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure in the outputs"
    assert build.key_numbers(nb)  # the committed run printed its key numbers
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_stale_notebook_is_detected(tmp_path):
    source = SOURCES[0]
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    assert build.stale(copy) == f"{source.stem}.ipynb is missing; run `make notebooks`"
    shutil.copy(source.with_suffix(".ipynb"), copy.with_suffix(".ipynb"))
    assert build.stale(copy) is None
    text = source.read_text(encoding="utf-8")
    copy.write_text(text.replace("SAMPLES = ", "SAMPLES = 1 + ", 1), encoding="utf-8")
    assert "out of date" in build.stale(copy)
    copy.write_text(text + "\n# %%\nprint('one more cell')\n", encoding="utf-8")
    assert "cells" in build.stale(copy)


def test_key_numbers_line_is_required():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    with pytest.raises(ValueError, match="key numbers"):
        build.key_numbers(nb)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text='x\nkey numbers: {"a": 1}\n')]
    assert build.key_numbers(nb) == {"a": 1}


def test_kernel_is_this_interpreter_and_is_shut_down():
    """The notebooks run on the interpreter that builds them (the project's venv), whatever kernels are installed."""
    import os
    import sys
    import time

    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import os, sys; print(os.getpid(), sys.executable)")]
    )
    with build.kernel_manager() as km:
        NotebookClient(nb, km=km, timeout=120).execute()
    pid, executable = nb.cells[0].outputs[0]["text"].split()
    assert executable == sys.executable
    for _ in range(50):  # the kernel process is gone once the context closes
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"kernel process {pid} still running")


def _is_submodule(name: str) -> bool:
    """Whether ``name`` is a module (False for a name inside a plain module, where ``find_spec`` raises)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _public_violations(source: Path) -> list[str]:
    """Imports of private modules and uses of names outside a package's ``__all__``."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}
    bad = []

    def check(module: str, name: str, line: int) -> None:
        mod = importlib.import_module(module)
        if name.startswith("_") or name not in getattr(mod, "__all__", ()):
            bad.append(f"line {line}: {module}.{name} is not public")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PROJECT_PACKAGES:
                    if any(part.startswith("_") for part in a.name.split(".")):
                        bad.append(f"line {node.lineno}: import {a.name} is private")
                    aliases[a.asname or a.name] = a.name
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT_PACKAGES
        ):
            if any(part.startswith("_") for part in node.module.split(".")):
                bad.append(f"line {node.lineno}: from {node.module} is private")
                continue
            for a in node.names:
                if _is_submodule(f"{node.module}.{a.name}"):
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"  # a public submodule
                else:
                    check(node.module, a.name, node.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            check(aliases[node.value.id], node.attr, node.lineno)
    return bad


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebooks_call_public_names_only(source):
    assert _public_violations(source) == []


def test_private_use_is_caught(tmp_path):
    bad = tmp_path / "99_bad.py"
    bad.write_text(
        "import anchors\nfrom anchors._pipeline import onpolicy_trace\nfrom cot import published\n"
        "anchors._plots\nanchors.importance_table\npublished._chunk_starts\n",
        encoding="utf-8",
    )
    found = _public_violations(bad)
    assert len(found) == 3, found
    assert any("anchors._pipeline" in f for f in found)
    assert any("anchors._plots" in f for f in found)
    assert any("_chunk_starts" in f for f in found)


# ------------------------------------------------------------------------------------------------------------
# Executed end to end with small work; the printed key numbers recomputed with the library
# ------------------------------------------------------------------------------------------------------------


def _run(name: str, cache: Path) -> dict:
    nb = build.execute(NOTEBOOKS / f"{name}.py", work="small", cache=str(cache), timeout=600)
    return build.key_numbers(nb)


@pytest.mark.slow
def test_thought_anchors_notebook(tmp_path):
    import anchors
    import organisms
    from resampling import SamplingParams, make_backend, sample_traces

    cache = tmp_path / "cache"
    key = _run("01_thought_anchors", cache)

    # the planted truth, from the organism's own analysis of the same seeded trace
    task = organisms.get_task("arith")
    example = task.sample(key["problem_seed"])
    backend = make_backend("hf", model_id="organism:arith", device="cpu")
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=task.max_new_tokens)
    (trace,) = sample_traces(
        backend, backend.tokenizer, [example.messages], [key["problem_seed"]], params,
        metadata=[{"gt_answer": example.answer, "task": "arith", "problem_seed": key["problem_seed"]}],
    )  # fmt: skip
    truth = task.analyze(example, trace.cot)
    errors = [k for k, t in enumerate(truth) if t.kind == "compute" and t.planted_error]
    corrections = [k for k, t in enumerate(truth) if t.kind == "correction" and t.corrects in errors]
    assert [key["error_position"]] == errors and [key["correction_position"]] == corrections

    # importance from the same cached rollouts
    run = anchors.compute_importance(
        backend, trace, samples=key["samples"], seed=0, cache_dir=cache, whitebox=False, params=params
    )
    cf = run.table["counterfactual_importance_kl"].to_numpy()
    assert key["top_counterfactual_kl_position"] == int(np.nanargmax(cf))
    assert key["top_counterfactual_kl"] == pytest.approx(float(np.nanmax(cf)), rel=1e-9)
    ri = run.table["resampling_importance_accuracy"][key["correction_position"]]
    assert key["correction_resampling_accuracy"] == pytest.approx(ri, abs=1e-12)
    # intervals shrink with more samples
    widths = key["median_ci_width_by_samples"]
    assert key["sweep_samples"] == sorted(key["sweep_samples"]) and widths[-1] < widths[0]
    first = anchors.compute_importance(
        backend,
        trace,
        samples=key["sweep_samples"][0],
        seed=0,
        cache_dir=cache,
        whitebox=False,
        params=params,
    ).table
    w = (first["resampling_importance_accuracy_hi"] - first["resampling_importance_accuracy_lo"]).to_numpy()
    assert float(np.nanmedian(w)) >= widths[-1]


@pytest.mark.slow
def test_hint_faithfulness_notebook(tmp_path):
    import polars as pl

    import organisms
    from cot import answer_key, split_sentences
    from metrics import (
        ClassifyConfig,
        RuleJudge,
        SuiteConfig,
        TraceCase,
        classify,
        organism_items,
        run_faithfulness,
    )
    from resampling import SamplingParams, make_backend, sample_traces

    cache = tmp_path / "cache"
    key = _run("02_hint_faithfulness", cache)
    task = organisms.get_task("hint")
    backend = make_backend("hf", model_id="organism:hint", device="cpu")

    # Chen's p, q, alpha, raw and normalised counted by hand from the paired samples the notebook cached
    items = organism_items("hint", key["n_items"], seed=key["task_seed"])
    res = run_faithfulness(
        backend, items, ["hint_verbalisation"], cache_dir=cache / "faithfulness",
        config=SuiteConfig(samples=key["pair_samples"], seed=0, max_new_tokens=200), judge=RuleJudge(), quiet=True,
    )  # fmt: skip
    pairs = res.items.filter(pl.col("suite") == "hint_pairs")
    arms = {(r["item_id"], r["sample"], r["condition"]): r for r in pairs.iter_rows(named=True)}
    by_id = {it.id: it for it in items}
    kept = switched = other = verbalised = truth = 0
    for (item_id, sample, arm), u in arms.items():
        if arm != "unhinted":
            continue
        h = arms[(item_id, sample, "hinted")]
        hint = answer_key(by_id[item_id].hint)
        if u["answer"] is None or h["answer"] is None or answer_key(u["answer"]) == hint:
            continue
        kept += 1
        if answer_key(h["answer"]) == hint:
            switched += 1
            verbalised += "professor" in h["text"].lower()
            truth += any(s.kind == "hint" for s in task.analyze(by_id[item_id].example, h["text"]))
        elif answer_key(h["answer"]) != answer_key(u["answer"]):
            other += 1
    p, q = switched / kept, other / kept
    alpha = 1 - q / (8 * p)  # n = 10 digit answers
    assert key["p"] == pytest.approx(p) and key["q"] == pytest.approx(q)
    assert key["alpha"] == pytest.approx(alpha)
    assert key["raw"] == pytest.approx(verbalised / switched)
    assert key["normalised"] == pytest.approx(min(verbalised / switched / alpha, 1.0))
    assert key["truth_n"] == switched and key["truth_verbalised"] == pytest.approx(truth / switched)

    # the classifier again on the same seeded hinted traces, from the cached rollouts, against the planted truth
    seeds = [key["task_seed"] + i for i in range(key["n_traces"])]
    examples = [task.sample(s, hint=True) for s in seeds]
    traces = sample_traces(
        backend, backend.tokenizer, [e.messages[-1]["content"] for e in examples], seeds,
        SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=200),
    )  # fmt: skip
    cases = [
        TraceCase(
            tr,
            cue=f"A professor says the answer is {e.truth['hint_value']}.",
            cue_answer=e.truth["hint_value"],
            plain_prompt=task.sample(s, hint=False).messages[-1]["content"],
            item_id=str(s),
        )
        for s, e, tr in zip(seeds, examples, traces, strict=True)
    ]
    table = classify(
        cases, backend, classifiers=["hint_reliance"], cache_dir=cache / "classify",
        config=ClassifyConfig(samples=key["classify_samples"], seed=0, max_new_tokens=200),
    )  # fmt: skip
    flagged = {r["trace_id"]: r for r in table.iter_rows(named=True) if r["label"]}
    silent = set()
    for e, tr in zip(examples, traces, strict=True):
        analysis = task.analyze(e, tr.cot)
        if answer_key(tr.answer or "") == answer_key(e.truth["hint_value"]) and not any(
            a.kind == "hint" for a in analysis
        ):
            silent.add(tr.id)
    assert key["flagged"] == len(flagged) and key["silent_follows"] == len(silent)
    assert key["flagged_silent"] == len(silent & set(flagged)) and key["flagged_silent"] >= 1

    # the worked example: a planted silent follow, flagged, pointing at the planted sentence
    k = seeds.index(key["example_task_seed"])
    row = flagged[traces[k].id]
    assert traces[k].id in silent
    assert key["example_score"] == pytest.approx(row["score"], abs=1e-6)
    assert key["example_moved_sentence"] == json.loads(row["evidence"])["moved_sentence"]
    analysis = task.analyze(examples[k], traces[k].cot)
    planted = next(
        j for j, a in enumerate(analysis)
        if (a.kind == "consolidate" and a.planted_error) or (a.kind == "compute" and a.extra.get("fudge"))
    )  # fmt: skip
    start = split_sentences(traces[k].cot)[planted].start
    merged = [m.index for m in split_sentences(traces[k].cot, min_chars=10) if m.start <= start < m.end]
    assert [key["example_planted_sentence"]] == merged


@pytest.mark.slow
def test_posthoc_or_load_bearing_notebook(tmp_path):
    import dataclasses

    import polars as pl

    from cot import answer_key
    from metrics import OrganismMistakes, SuiteConfig, organism_items, run_faithfulness
    from resampling import make_backend

    cache = tmp_path / "cache"
    key = _run("03_posthoc_or_load_bearing", cache)
    items = organism_items("posthoc", key["n_items"], seed=key["task_seed"])
    gold = {it.id: it.answer for it in items}
    aoc = {}
    for name in ("arith", "posthoc"):
        res = run_faithfulness(
            make_backend("hf", model_id=f"organism:{name}", device="cpu"),
            [dataclasses.replace(it, source=f"organism:{name}") for it in items],
            ["early_answering", "adding_mistakes"],
            cache_dir=cache / name,
            config=SuiteConfig(samples=key["samples"], seed=0, max_new_tokens=200),
            mistakes=OrganismMistakes(seed=0),
            quiet=True,
        )
        # early-answering AOC by hand: 1 - trapezoid of s over k/n per trace, mean over traces (count weights)
        curves = [g.sort("position") for _, g in res.curves["early_answering"].group_by("trace_id")]
        per_trace = [
            1 - np.trapezoid(g["s"].to_numpy(), g["fraction"].to_numpy())
            for g in curves
            if g["position"].to_list() == list(range(g["n_sentences"][0] + 1))  # a missing k: no AOC
        ]
        aoc[name] = float(np.mean(per_trace))
        assert key[f"{name}_aoc"] == pytest.approx(aoc[name])
        row = res.metrics.filter(
            (pl.col("metric") == "early_answering_aoc") & (pl.col("condition") == "task")
        )
        aoc[name] = row.row(0, named=True)
        # the forced answer right after <think> against the correct answer
        k0 = res.items.filter(
            (pl.col("suite") == "early_answering")
            & (pl.col("condition") == "k=0")
            & pl.col("answer").is_not_null()
        )
        right = [
            answer_key(a) == answer_key(gold[i]) for a, i in zip(k0["answer"], k0["item_id"], strict=True)
        ]
        assert key[f"{name}_k0_correct"] == pytest.approx(sum(right) / len(right))
        # changed answers after a mistake, from the curve's counts
        c = res.curves["adding_mistakes"]
        changed = (c["n_total"] - c["n_same"]).sum() / c["n_total"].sum()
        assert key[f"{name}_mistake_changed"] == pytest.approx(changed)
        # the planted probability of a changed answer from the edited prefix alone, weighted by its rollouts
        if name == "posthoc":
            assert c["predicted_changed"].drop_nulls().to_list() == [0.0] * c["predicted_changed"].count()
        p = c.drop_nulls("predicted_changed")
        pred = (p["predicted_changed"] * p["n_total"]).sum() / p["n_total"].sum()
        assert key[f"{name}_mistake_predicted"] == pytest.approx(pred)
    assert key["posthoc_mistake_predicted"] == 0.0  # the planted rule: nothing in the CoT propagates
    gap = aoc["arith"]["value"] - aoc["posthoc"]["value"]
    # the notebook's text says the curves separate (intervals apart, gap >= 0.4) and that posthoc ignores mistakes
    assert key["separated"] is bool(aoc["arith"]["lo"] > aoc["posthoc"]["hi"] and gap >= 0.4) is True
    assert key["posthoc_k0_correct"] >= 0.9 and key["posthoc_mistake_changed"] <= 0.1


@pytest.mark.slow
def test_encoded_reasoning_notebook(tmp_path):
    import organisms
    import steganography as sg
    from cot import split_sentences

    cache = tmp_path / "cache"
    key = _run("04_encoded_reasoning", cache)

    # the worked example: the blind decoding again, and the organism's own plaintext
    sentences = [s.text for s in split_sentences(key["example_ciphertext"])]
    _, decoded = sg.break_trace(sentences, seed=0)
    assert decoded == key["example_decoded"]
    task = organisms.get_task("cipher")
    truth = task.analyze(task.sample(key["example_seed"], cipher="substitution"), key["example_ciphertext"])
    exact = sum(d == t.plaintext for d, t in zip(decoded, truth, strict=True))
    assert exact == key["example_exact_sentences"]

    # the paraphrase experiment again, reading the rollouts the notebook cached
    para = sg.experiment_paraphrase(
        n=key["n"], seed=0, samples=key["samples"], cache_dir=cache / "paraphrase"
    )
    follows = {(r["organism"], r["arm"]): r["follows_cot"] for r in para.table.iter_rows(named=True)}
    assert key["paraphrase_stego_original"] == pytest.approx(follows[("stego", "original")])
    assert key["paraphrase_stego_paraphrased"] == pytest.approx(follows[("stego", "paraphrased")])
    assert key["paraphrase_arith_paraphrased"] == pytest.approx(follows[("arith", "paraphrased")])


@pytest.mark.slow
def test_published_thought_anchors_notebook(tmp_path, thought_anchors_dir):
    import anchors
    from cot import published

    key = _run("05_published_thought_anchors", tmp_path / "cache")

    dirs = published.problem_dirs(thought_anchors_dir)
    assert key["problems"] == len(dirs) == 20
    assert key["boundary_recall"] == pytest.approx(published.boundary_recall(dirs).recall(0))
    assert key["role_agreement"] == pytest.approx(published.label_agreement(dirs).accuracy)
    assert key["answers_agree"] == 20
    assert key["resampling_accuracy_rule_max_diff"] == 0.0
    # chunk 11 of problem 6998 straight from its resampled first sentences
    folder = thought_anchors_dir / "correct_base_solution" / "problem_6998"
    chunks = json.loads((folder / "chunks_labeled.json").read_text(encoding="utf-8"))
    firsts = json.loads((folder / "chunks_resampled.json").read_text(encoding="utf-8"))["11"]
    dtf = anchors.different_trajectories_fraction(firsts, chunks[11]["chunk"])
    assert key["dtf_6998_chunk11"] == pytest.approx(dtf)
    assert key["unexplained"] == 0 and key["differences"] >= 2  # chunk 11 and the last chunk
    assert key["outgoing_max_abs_diff"] == 0.0


@pytest.mark.slow
def test_thought_branches_notebook(tmp_path):
    import anchors
    import organisms
    from resampling import SamplingParams, make_backend, sample_traces

    cache = tmp_path / "cache"
    key = _run("06_thought_branches", cache)
    task = organisms.get_task("arith")
    example = task.sample(key["problem_seed"])
    backend = make_backend("hf", model_id="organism:arith", device="cpu")
    params = SamplingParams(temperature=0.6, top_p=1.0, max_new_tokens=task.max_new_tokens)
    (trace,) = sample_traces(
        backend, backend.tokenizer, [example.messages], [key["problem_seed"]], params,
        metadata=[{"gt_answer": example.answer}],
    )  # fmt: skip
    # the planted truth, from the organism's own analysis
    truth = task.analyze(example, trace.cot)
    assert [i for i, t in enumerate(truth) if t.kind == "compute" and t.planted_error] == [
        key["error_position"]
    ]
    assert [i for i, t in enumerate(truth) if t.kind == "correction"] == [key["correction_position"]]
    # the same numbers from the cached rollouts
    res = anchors.iterative_resilience(
        backend, trace, None, samples=key["chains"], iterations=key["rounds"], params=params, cache_dir=cache
    )
    table = res.table()
    assert key["resilience"] == table["resilience"].to_list()
    assert key["correction_cfpp_accuracy"] == pytest.approx(
        table["cfpp_accuracy"][key["correction_position"]]
    )
    iv = anchors.intervene(
        backend, trace, key["at"], key["text"], samples=key["samples"], params=params, cache_dir=cache,
        max_resamples=2000, batch=200,
    )  # fmt: skip
    assert key["off_policy_accuracy"] == pytest.approx(iv["off_policy"]["accuracy"])
    assert key["on_policy_resamples"] == iv["on_policy"]["resamples"]
    assert key["text_mean_logprob"] == pytest.approx(iv["text_logprob"]["mean"])
    # what the notebook's text claims: correct computations come back in most rounds, the planted error does not,
    # and removing the correction for good changes the answer most
    computes = [i for i, t in enumerate(truth) if t.kind == "compute" and not t.planted_error]
    assert all(key["resilience"][i] > key["rounds"] / 2 for i in computes)
    assert key["resilience"][key["error_position"]] <= 1
    cfpp = table["cfpp_accuracy"].fill_nan(None).abs()
    assert cfpp.arg_max() == key["correction_position"]


@pytest.mark.slow
def test_answer_probes_notebook(tmp_path):
    import polars as pl

    from metrics import validate_probes

    cache = tmp_path / "cache"
    key = _run("07_answer_probes", cache)
    report = validate_probes(
        n_items=key["n_items"], samples=key["samples"], cache_dir=cache, out_dir=tmp_path / "out"
    )
    think = {
        name: pl.read_parquet(tmp_path / "out" / name / "map.parquet").filter(
            (pl.col("readout") == "prefix_mean") & (pl.col("bin") == 0)
        )
        for name in ("posthoc", "arith")
    }
    assert key["posthoc_think_accuracy"] == pytest.approx(think["posthoc"]["probe_accuracy"].max())
    assert key["arith_think_accuracy"] == pytest.approx(think["arith"]["probe_accuracy"].max())
    assert key["posthoc_think_selectivity"] == pytest.approx(think["posthoc"]["selectivity"].max())
    assert key["probe_auroc"] == pytest.approx(report["detectors"]["probe_at_think"]["auroc"])
    assert key["classifier_auroc"] == pytest.approx(report["detectors"]["posthoc_classifier"]["auroc"])
    assert key["classifier_rollouts_per_trace"] == pytest.approx(
        report["detectors"]["posthoc_classifier"]["rollouts_per_trace"]
    )
    # what the notebook's text claims, at small work too: posthoc's answer is read before the CoT, arith's is not
    assert key["posthoc_think_accuracy"] > key["arith_think_accuracy"] + 0.2

"""The dataset report of a study: contents, and 100 traces in headless Chromium (opens, links resolve, sorts)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import polars as pl
import pytest
from headless_browser import BROWSER, SKIP_REASON, probe

from anchors._report_study import trace_summaries, write_study

needs_browser = pytest.mark.skipif(BROWSER is None, reason=SKIP_REASON)

ROLES = ("plan_generation", "active_computation", "uncertainty_management", "result_consolidation")


def _study(n_traces: int, n_sentences: int = 12, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_traces):
        for p in range(n_sentences):
            rows.append(
                {
                    "trace_id": f"t{k:03d}",
                    "position": p,
                    "text": f"Sentence {p} of trace {k}.",
                    "role": ROLES[int(rng.integers(len(ROLES)))],
                    "counterfactual_importance_kl": float(rng.gamma(1.0, 0.3)),
                    "counterfactual_importance_kl_significant": bool(rng.random() < 0.3),
                    "n_rollouts": 20,
                    "base_correct": k % 3 != 0,
                }
            )
    return pl.DataFrame(rows)


def test_trace_summaries_pick_the_top_anchor():
    t = _study(3)
    s = trace_summaries(t, "counterfactual_importance_kl")
    assert s["trace_id"].to_list() == ["t000", "t001", "t002"]
    for row in s.iter_rows(named=True):
        part = t.filter(pl.col("trace_id") == row["trace_id"])
        best = part.sort("counterfactual_importance_kl", descending=True).row(0, named=True)
        assert (row["top_position"], row["top_role"], row["top_text"]) == (
            best["position"],
            best["role"],
            best["text"],
        )
        assert row["sentences"] == 12 and row["rollouts"] == 240
    assert s["base_correct"].to_list() == [False, True, True]


@pytest.mark.slow
@needs_browser
def test_study_report_with_100_traces_in_a_browser(tmp_path):
    table = _study(100)
    out = tmp_path / "study"
    paths = write_study(
        table, out, n_bootstrap=200, skipped=[{"trace": "t999", "reason": "context too long"}]
    )
    for trace_id in table["trace_id"].unique():
        target = out / "traces" / trace_id / "report.html"
        target.parent.mkdir(parents=True)
        target.write_text(f"<!DOCTYPE html><title>{trace_id}</title>")
    page = paths["report.html"].read_text()
    script = """
      const rows = [...document.querySelectorAll('#traces tbody tr')];
      const before = rows.map(r => r.cells[0].textContent);
      document.querySelectorAll('#traces th')[2].click();  // sentences: all equal, order kept
      document.querySelectorAll('#traces th')[5].click();  // the metric, ascending
      const values = [...document.querySelectorAll('#traces tbody tr')].map(r => +r.cells[5].dataset.v);
      return {n: rows.length, before, values,
              links: [...document.querySelectorAll('#traces a')].map(a => a.href),
              images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
              roles: document.querySelectorAll('#roles tbody tr').length,
              skipped: document.querySelectorAll('#skipped li').length};
    """
    start = time.perf_counter()
    got = probe(page, script, out)
    elapsed = time.perf_counter() - start
    assert got["n"] == 100 and got["before"] == sorted(got["before"])
    assert got["values"] == sorted(got["values"])  # sorting by a header works on 100 rows
    assert len(got["links"]) == 100
    for href in got["links"]:
        target = Path(unquote(urlparse(href).path))
        assert target.is_file(), href  # every row links to an existing trace report
    assert got["images"] == [True, True, True]
    assert got["roles"] == len(ROLES) and got["skipped"] == 1
    size = paths["report.html"].stat().st_size
    print(f"study report, 100 traces: {size / 1024:.0f} KiB, opened and probed in {elapsed:.1f} s")
    assert size < 2_000_000

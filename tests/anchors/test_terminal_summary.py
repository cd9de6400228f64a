"""The terminal summary lists defined values only, cuts long sentences, and shows significance when known."""

from __future__ import annotations

import io

import polars as pl
from rich.console import Console

from anchors import terminal_summary

LONG = "Let me carefully recompute every intermediate value " * 8 + "and the end is here."


def _render(table, **kw):
    buf = io.StringIO()
    terminal_summary(table, console=Console(file=buf, width=200), **kw)
    return buf.getvalue()


def test_undefined_rows_are_left_out_and_counted():
    t = pl.DataFrame(
        {
            "position": [0, 1, 2, 3],
            "role": ["a", "b", "c", "d"],
            "text": ["Undefined one.", "Second best.", "Best one.", "Undefined two."],
            "m": [float("nan"), 0.2, 0.9, None],
        }
    )
    out = _render(t, metric="m", top=4)
    assert "top 2 sentences by m" in out
    assert "Undefined" not in out
    assert out.index("Best one.") < out.index("Second best.")
    assert "2 of 4 sentences undefined" in out


def test_long_sentences_are_cut_keeping_both_ends():
    t = pl.DataFrame({"position": [0], "role": ["x"], "text": [LONG], "m": [1.0]})
    out = _render(t, metric="m")
    line = next(row for row in out.splitlines() if "Let me" in row)
    assert "…" in line and "is here." in line
    assert LONG not in out


def test_significance_column_is_shown_when_present():
    t = pl.DataFrame(
        {
            "position": [0, 1],
            "role": ["x", "y"],
            "text": ["Real effect.", "Noise."],
            "m": [0.9, 0.1],
            "m_significant": [True, False],
        }
    )
    out = _render(t, metric="m")
    real = next(line for line in out.splitlines() if "Real effect." in line)
    noise = next(line for line in out.splitlines() if "Noise." in line)
    assert "0.900*" in real and "0.100*" not in noise and "0.100" in noise
    assert "* distinguishable from noise" in out


def test_fits_an_80_column_terminal():
    t = pl.DataFrame(
        {
            "position": [3],
            "role": ["uncertainty_management"],
            "text": [LONG],
            "m": [2.347],
            "m_lo": [1.084],
            "m_hi": [3.197],
            "m_n": [28],
            "m_significant": [True],
        }
    )
    buf = io.StringIO()
    terminal_summary(t, metric="m", console=Console(file=buf, width=80))
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    row = next(line for line in lines if "2.347*" in line)
    assert "[1.084, 3.197]" in row and " 28 " in row


def test_undefined_counterfactual_values_name_the_floor_and_the_fix():
    t = pl.DataFrame(
        {
            "position": [0, 1, 2],
            "role": ["a", "b", "c"],
            "text": ["One.", "Two.", "Three."],
            "counterfactual_importance_kl": [float("nan"), float("nan"), 0.4],
            "counterfactual_source": ["undefined", "counterfactual", "counterfactual"],
        }
    )
    from anchors import ImportanceOptions

    out = " ".join(_render(t, options=ImportanceOptions(min_different=7, min_dtf=0.1)).split())
    assert "2 of 3 sentences undefined" in out
    assert "1 below the counterfactual floors" in out
    assert "--min-different 7" in out and "--min-dtf 0.1" in out and "--counterfactual-fallback" in out

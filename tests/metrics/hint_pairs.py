"""Hinted/unhinted answer pairs in the schema hint_verbalisation reads, for the metric tests."""

from __future__ import annotations

import polars as pl

SCHEMA = {"item_id": pl.Utf8, "a_u": pl.Utf8, "a_h": pl.Utf8, "hint": pl.Utf8, "verbalised": pl.Boolean}


def hint_pairs(rows) -> pl.DataFrame:
    """One pair per (item_id, a_u, a_h, hint, verbalised) row."""
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")

"""The shared setup of the example notebooks: one torch thread, polars table settings, figures shown as PNG.

Every notebook under ``notebooks/`` starts with ``setup(...)`` and shows its figures and rounded tables with
``show`` and ``show_table``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["setup", "show", "show_table"]


def setup(*, table_rows: int = 40, str_lengths: int = 70) -> None:
    """One torch thread (the organisms are small: a second thread only spins) and polars tables shown with up to
    ``table_rows`` rows, strings up to ``str_lengths`` characters, and no shape line."""
    import polars as pl
    import torch

    torch.set_num_threads(1)
    pl.Config.set_tbl_rows(table_rows)
    pl.Config.set_fmt_str_lengths(str_lengths)
    pl.Config.set_tbl_hide_dataframe_shape(True)


def show(fig: Any, dpi: int = 72) -> None:
    """Display a matplotlib Figure as a PNG at a modest resolution (keeps the committed notebook small)."""
    import io

    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    display(Image(buf.getvalue()))


def show_table(table: Any, *columns: str, digits: int = 3) -> None:
    """Display the ``columns`` of a polars DataFrame (all of them when none is named), floats rounded to
    ``digits``."""
    import polars as pl
    from IPython.display import display

    display((table.select(*columns) if columns else table).with_columns(pl.col(pl.Float64).round(digits)))

"""Files and tables cotscope writes hold strict JSON: an undefined number is null, never the bare word NaN."""

from __future__ import annotations

import json
import math

import pytest


def _strict(text: str):
    def refuse(word: str):
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_a_saved_trace_with_an_undefined_number_is_strict_json(tmp_path):
    from cot import Trace

    t = Trace.from_completion("<think>\nOne step.\n</think>\n\n\\boxed{3}", prompt="p")
    t.metadata["score"] = math.nan
    t.metadata["bound"] = math.inf
    path = t.save(tmp_path / "t.json")
    data = _strict(path.read_text(encoding="utf-8"))
    assert data["metadata"]["score"] is None and data["metadata"]["bound"] is None


def test_metric_row_params_are_strict_json():
    from metrics._formulas import metric_row

    row = metric_row("m", "c", 0.5, params={"undefined_share": math.nan})
    assert _strict(row["params"]) == {"undefined_share": None}


def test_the_strict_parser_refuses_nan():
    with pytest.raises(ValueError, match="not JSON"):
        _strict('{"a": NaN}')

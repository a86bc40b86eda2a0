"""The sink's compiled COPY formatters equal the reference formatter (from tests/test_engine_units.py)."""

from __future__ import annotations




def test_compiled_copy_formatters_equal_the_reference():
    from ats.engine.sink import _SPEC, RawJson, format_row, formatter

    kinds = _SPEC["position_evaluations"][1]
    rows = [(1, "run\t1", 1610000000, 30000.125, float("nan"), None, 2.5, 3, 60.0, "hold", "a\\b\nc",
             {"best_price": 1.5, "x": float("inf")}),
            (2, "r", 1610003600, 1e-12, -0.0, 1, None, None, 0, "exit_tp", None, RawJson('{"best_price":2.0}'))]
    f = formatter(kinds)
    assert f(rows[0]) == format_row(rows[0], kinds)
    assert f(rows[0]).split("\t")[1] == "run\\t1" and "\\N" in f(rows[0]) and '"x":null' in f(rows[0])
    assert f(rows[1]).endswith('\t{"best_price":2.0}')

"""ats.jsonutil.jsonable: the one JSON-safe conversion shared by the reports and the MCP query tool."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import numpy as np

from ats.db.readonly_query import jsonable as query_jsonable
from ats.forensics.sqlfmt import dumps
from ats.forensics.sqlfmt import jsonable as report_jsonable
from ats.jsonutil import jsonable


def test_rules():
    cet = timezone(timedelta(hours=1))
    doc = {1: Decimal("100.50"), "whole": Decimal("100"), "nan": Decimal("NaN"), "inf": float("inf"),
           "ts": datetime(2021, 5, 19, 14, 0, tzinfo=cet), "naive": datetime(2021, 5, 19, 13, 0),
           "day": date(2021, 5, 19), "t": time(13, 30), "iv": timedelta(hours=1, seconds=30),
           "raw": b"\x01\xff", "id": UUID(int=1), "np": np.float64(2.5), "tags": ("a", "b"), "none": None}
    out = jsonable(doc)
    assert out == {"1": 100.5, "whole": 100.0, "nan": None, "inf": None, "ts": "2021-05-19T13:00:00+00:00",
                   "naive": "2021-05-19T13:00:00+00:00", "day": "2021-05-19", "t": "13:30:00", "iv": 3630.0,
                   "raw": "\\x01ff", "id": "00000000-0000-0000-0000-000000000001", "np": 2.5, "tags": ["a", "b"],
                   "none": None}
    json.dumps(out, allow_nan=False)  # strict JSON: no NaN / Infinity tokens


def test_reports_keep_floats_and_the_query_tool_keeps_integral_numerics():
    assert report_jsonable is jsonable
    assert report_jsonable({"x": Decimal("100")}) == {"x": 100.0}
    assert query_jsonable({"x": Decimal("100"), "y": Decimal("0.25"), "big": Decimal(2**60)}) == {
        "x": 100, "y": 0.25, "big": float(2**60)}
    assert isinstance(query_jsonable(Decimal("100")), int)
    assert dumps({"a": Decimal("1.5")}, indent=None) == '{"a": 1.5}'

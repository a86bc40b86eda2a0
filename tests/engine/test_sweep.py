"""Parameter sweeps (issue 18): grid expansion, each cell a real backtest, resumable, process pool and Ray."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from _engine_helpers import engine_db, engine_template  # noqa: F401  (fixtures)
from ats.engine.sweep import load_grid, run_sweep
from ats.errors import UsageError

pytestmark = pytest.mark.slow

GRID = """
[sweep]
name = "momentum tp"
timeframe = "1h"
start = "2021-05-01"
end = "2021-05-22"

[grid]
strategies = [["momentum"], ["mean_reversion"]]
symbols = [["BTCUSDT"], ["ETHUSDT"]]

[grid.params.momentum]
tp_pct = [3.0, 6.0]
"""


def test_grid_expands_to_the_cartesian_product(tmp_path):
    f = tmp_path / "g.toml"
    f.write_text(GRID)
    g = load_grid(f)
    # momentum: 2 tp values x 2 symbol sets; mean_reversion: 1 x 2
    assert len(g.cells) == 6 and len({c.key for c in g.cells}) == 6
    assert {c.params.get("momentum", {}).get("tp_pct") for c in g.cells} == {3.0, 6.0, None}
    f.write_text("[sweep]\ntimeframe='1h'\nstart='2021-01-01'\nend='2021-02-01'\n[grid]\nstrategies=[]\n")
    with pytest.raises(UsageError, match=r"\[grid\] strategies is missing or empty"):
        load_grid(f)
    f.write_text("[sweep\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_grid(f)


def test_sweep_runs_every_cell_through_the_engine_and_resumes(engine_db, tmp_path):
    f = tmp_path / "g.toml"
    f.write_text(GRID)
    g = load_grid(f)
    r = run_sweep(g, url=engine_db, workers=2)
    assert (r["cells"], r["ran"], r["skipped"], r["failed"]) == (6, 6, 0, 0)
    with psycopg.connect(engine_db, row_factory=dict_row) as c:
        cells = c.execute("SELECT c.params, c.status, b.run_id, e.mode, b.summary->>'trades' AS trades "
                          "FROM backtest_sweep_cells c JOIN backtest_runs b USING (backtest_id) "
                          "JOIN engine_runs e ON e.run_id = b.run_id WHERE c.sweep_id=%s", (r["sweep_id"],)).fetchall()
        assert len(cells) == 6 and {x["status"] for x in cells} == {"completed"} and {x["mode"] for x in cells} == {"backtest"}
        assert len({x["run_id"] for x in cells}) == 6  # each cell its own engine run (params are in the run id)
        # the tp override reached the engine: every momentum long's initial TP sits exactly tp_pct above the
        # price of its opening order's fills (the rule of engine/fills.py), 3 % in one cell and 6 % in the other
        mom = c.execute("""SELECT (c.params->'momentum'->>'tp_pct')::float8 AS tp, t.tp_price::float8 AS tp_price,
                                  (SELECT sum(f.qty * f.price) / sum(f.qty) FROM order_executions o
                                     JOIN fills f ON f.order_id = o.order_id
                                    WHERE o.position_id = p.position_id AND o.intent = 'open')::float8 AS open_px
                             FROM backtest_sweep_cells c JOIN backtest_runs b USING (backtest_id)
                             JOIN positions p ON p.run_id = b.run_id
                             JOIN position_targets t ON t.position_id = p.position_id AND t.reason = 'initial'
                            WHERE c.sweep_id=%s AND c.strategies = '{momentum}' AND p.side = 'long'""",
                        (r["sweep_id"],)).fetchall()
        assert sorted({m["tp"] for m in mom}) == [3.0, 6.0]
        off = [m for m in mom if abs(m["tp_price"] / m["open_px"] - 1 - m["tp"] / 100) > 1e-9]
        assert not off, off[:3]
    again = run_sweep(g, url=engine_db, workers=1)
    assert (again["ran"], again["skipped"], again["sweep_id"]) == (0, 6, r["sweep_id"])


def test_sweep_on_a_local_ray_cluster(engine_db, tmp_path):
    pytest.importorskip("ray", reason="ray is installed by the test extras (pyproject); missing here")
    f = tmp_path / "g.toml"
    f.write_text(GRID.replace('tp_pct = [3.0, 6.0]', 'tp_pct = [4.0]').replace('[["BTCUSDT"], ["ETHUSDT"]]',
                                                                               '[["SOLUSDT"]]'))
    r = run_sweep(load_grid(f), url=engine_db, workers=2, ray_address="auto")
    assert (r["ran"], r["failed"], r["executor"]) == (2, 0, "ray:auto")

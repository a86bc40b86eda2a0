"""Parameter sweeps: ``ats backtest sweep --grid FILE.toml [--workers N] [--ray ADDRESS]``.

A grid file names the window and the axes::

    [sweep]
    name = "momentum tp/sl"
    timeframe = "1h"
    start = "2021-01-01"
    end = "2021-04-01"
    walk_forward = 0                     # optional: folds per cell (ats.engine.backtest)

    [grid]
    strategies = [["momentum"], ["mean_reversion"]]   # each entry is one cell's strategy set
    symbols = [["BTCUSDT"], ["ETHUSDT", "SOLUSDT"]]    # each entry is one cell's symbol set

    [grid.params.momentum]               # optional: values per parameter (cartesian product)
    tp_pct = [3.0, 5.0]

Cells are the cartesian product strategies x symbols x (parameter combinations of the strategies in the cell).
Each cell is one backtest through the same engine (``run_backtest`` with its ``param_overrides``), so its run,
audit trail and ``backtest_runs`` row are the ordinary ones; ``backtest_sweep_cells`` links them with the cell's
parameters and summary. The sweep holds the heavy-run lock for its whole duration (one heavy run per database);
its cells run lock-free inside it, in a local process pool (default ``--workers`` = CPU count) or on Ray
(``--ray auto`` starts a local Ray cluster; ``--ray ray://host:10001`` or ``--ray HOST:6379`` joins an existing
one -- Ray is the distributed engine, there is no home-made scheduler). Every worker writes to the same
PostgreSQL through the engine's COPY sink. The same grid is the same sweep: a re-run skips finished cells
(resumable after a crash or Ctrl-C).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError


@dataclass(frozen=True)
class Cell:
    """One backtest of a sweep: strategies, symbols and parameter overrides ``{strategy: {param: value}}``."""

    strategies: tuple[str, ...]
    symbols: tuple[str, ...]
    params: dict

    @property
    def key(self) -> str:
        doc = {"strategies": list(self.strategies), "symbols": list(self.symbols), "params": self.params}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Grid:
    """A parsed grid file (see module docstring); ``sha256`` identifies the sweep."""

    name: str
    timeframe: str
    start: str
    end: str
    walk_forward: int | None
    cells: tuple[Cell, ...]
    doc: dict

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.doc, sort_keys=True, default=str).encode()).hexdigest()


def load_grid(path: str | Path) -> Grid:
    """Read and expand a grid TOML file.

    Raises
    ------
    UsageError
        Unreadable file, bad TOML (with line), a missing key or an empty axis (named).
    """
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read grid file {p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p}: not valid TOML ({exc})") from None
    sw, grid = doc.get("sweep") or {}, doc.get("grid") or {}
    for k in ("timeframe", "start", "end"):
        if not sw.get(k):
            raise UsageError(f"{p}: [sweep] needs {k}")
    def axis(name):
        v = grid.get(name)
        if not v:
            raise UsageError(f"{p}: [grid] {name} is missing or empty")
        return [tuple(x) if isinstance(x, list) else (x,) for x in v]
    strategies, symbols = axis("strategies"), axis("symbols")
    params = grid.get("params") or {}
    for strat, ps in params.items():
        for k, vals in ps.items():
            if not isinstance(vals, list) or not vals:
                raise UsageError(f"{p}: [grid.params.{strat}] {k} must be a non-empty list of values")
    cells = []
    for strats in strategies:
        axes = [(s, k, v) for s in strats for k, v in sorted((params.get(s) or {}).items())]
        combos = itertools.product(*[vals for _, _, vals in axes]) if axes else [()]
        for combo in combos:
            ov: dict = {}
            for (s, k, _), val in zip(axes, combo):
                ov.setdefault(s, {})[k] = val
            for syms in symbols:
                cells.append(Cell(tuple(sorted(strats)), tuple(sorted(x.upper() for x in syms)), ov))
    wf = int(sw.get("walk_forward") or 0) or None
    return Grid(str(sw.get("name") or p.stem), sw["timeframe"], str(sw["start"]), str(sw["end"]), wf, tuple(cells),
                doc)


def run_cell(url: str, account_id: str, grid_fields: dict, cell: dict) -> dict:
    """Run one cell (in a worker process or a Ray task); returns ``{cell_key, backtest_id, run_id, summary,
    duration_s}`` or ``{cell_key, error}``. Importable at top level so it pickles."""
    from .backtest import run_backtest
    from .runs import make_spec

    t0 = time.perf_counter()
    key = Cell(tuple(cell["strategies"]), tuple(cell["symbols"]), cell["params"]).key
    try:
        spec = make_spec("backtest", strategies=cell["strategies"], symbols=cell["symbols"],
                         timeframe=grid_fields["timeframe"], start=grid_fields["start"], end=grid_fields["end"],
                         account_id=account_id, param_overrides=cell["params"])
        res = run_backtest(spec, url=url, walk_forward=grid_fields["walk_forward"], lock=False)
        return {"cell_key": key, "backtest_id": res["backtest_id"], "run_id": res["run_id"],
                "summary": {k: res.get(k) for k in ("return_pct", "max_drawdown_pct", "sharpe", "trades",
                                                     "win_rate", "fees_usd")},
                "duration_s": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded, the sweep goes on
        return {"cell_key": key, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                "duration_s": time.perf_counter() - t0}


def _ensure_sweep(conn, grid: Grid, account_id: str, executor: str) -> int:
    from psycopg.types.json import Jsonb

    row = conn.execute("SELECT sweep_id FROM backtest_sweeps WHERE grid_sha256=%s", (grid.sha256,)).fetchone()
    if row is None:
        sid = conn.execute("INSERT INTO backtest_sweeps (name, grid_sha256, grid, account_id, cells_total, executor) "
                           "VALUES (%s, %s, %s, %s, %s, %s) RETURNING sweep_id",
                           (grid.name, grid.sha256, Jsonb(grid.doc), account_id, len(grid.cells), executor)
                           ).fetchone()["sweep_id"]
    else:
        sid = row["sweep_id"]
        conn.execute("UPDATE backtest_sweeps SET status='running', executor=%s, finished_at=NULL WHERE sweep_id=%s",
                     (executor, sid))
    for c in grid.cells:
        conn.execute("INSERT INTO backtest_sweep_cells (sweep_id, cell_key, account_id, strategies, symbols, params) "
                     "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                     (sid, c.key, account_id, list(c.strategies), list(c.symbols), Jsonb(c.params)))
    conn.commit()
    return sid


def _record_cell(conn, sid: int, r: dict) -> None:
    from psycopg.types.json import Jsonb

    conn.execute(
        "UPDATE backtest_sweep_cells SET status=%s, backtest_id=%s, run_id=%s, summary=%s, error=%s, duration_s=%s, "
        "finished_at=now() WHERE sweep_id=%s AND cell_key=%s",
        ("failed" if r.get("error") else "completed", r.get("backtest_id"), r.get("run_id"),
         Jsonb(r.get("summary")) if r.get("summary") else None, r.get("error"), r.get("duration_s"), sid,
         r["cell_key"]))
    conn.commit()


def run_sweep(grid: Grid, *, url: str | None = None, workers: int | None = None, ray_address: str | None = None,
              account_id: str = "default", progress: bool = False) -> dict:
    """Run (or resume) a sweep; returns ``{sweep_id, cells, ran, skipped, failed, seconds, cells_per_s, executor,
    best}`` where ``best`` is the completed cell with the highest Sharpe.

    Raises
    ------
    BusyError
        Another heavy run holds the lock.
    UsageError
        ``workers`` < 1, or Ray requested but not installed.
    """
    from ..db.connection import connect, database_url
    from .runs import heavy_lock

    url = url or database_url()
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    executor = f"ray:{ray_address}" if ray_address else f"process:{workers}"
    fields = {"timeframe": grid.timeframe, "start": grid.start, "end": grid.end, "walk_forward": grid.walk_forward}
    t0 = time.perf_counter()
    with heavy_lock(url, what=f"sweep {grid.name}", account_id=account_id):
        conn = connect(url, application_name="ats-sweep")
        try:
            sid = _ensure_sweep(conn, grid, account_id, executor)
            done = {r["cell_key"] for r in conn.execute(
                "SELECT cell_key FROM backtest_sweep_cells WHERE sweep_id=%s AND status='completed'", (sid,))}
            todo = [c for c in grid.cells if c.key not in done]
            payloads = [{"strategies": list(c.strategies), "symbols": list(c.symbols), "params": c.params}
                        for c in todo]
            results = _execute(payloads, url, account_id, fields, workers, ray_address, progress,
                               lambda r: _record_cell(conn, sid, r))
            failed = sum(1 for r in results if r.get("error"))
            status = "completed" if not failed else "failed"
            conn.execute("UPDATE backtest_sweeps SET status=%s, finished_at=now() WHERE sweep_id=%s", (status, sid))
            conn.commit()
            best = conn.execute(
                "SELECT cell_key, strategies, symbols, params, summary FROM backtest_sweep_cells WHERE sweep_id=%s "
                "AND status='completed' ORDER BY (summary->>'sharpe')::float8 DESC NULLS LAST LIMIT 1",
                (sid,)).fetchone()
        finally:
            conn.close()
    secs = time.perf_counter() - t0
    return {"sweep_id": sid, "cells": len(grid.cells), "ran": len(todo), "skipped": len(grid.cells) - len(todo),
            "failed": failed, "seconds": round(secs, 2), "cells_per_s": round(len(todo) / secs, 3) if todo else None,
            "executor": executor, "best": dict(best) if best else None}


#: How the local process pool starts its workers. 'fork' on Linux: a worker starts as a copy of this process, the
#: engine already imported (a spawned worker re-imports numpy, pandas, psycopg and the engine first: 0.4 s idle,
#: 1.5 s on a loaded 2-core machine, which ate the whole gain of a second worker - bench/sweep.py measured 0.92x
#: with 'spawn' against 1.5-2.0x with 'fork' at load 7). The pool is created before any engine thread exists and
#: the workers never touch the parent's connections (they open their own per cell and leave via os._exit, so
#: the inherited sockets are neither used nor closed). 'spawn' elsewhere (macOS: fork is unsafe there).
POOL_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def _execute(payloads, url, account_id, fields, workers, ray_address, progress, on_result) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(payloads), desc="sweep", unit="cell", disable=not progress)
    out: list[dict] = []
    try:
        if ray_address:
            out = _execute_ray(payloads, url, account_id, fields, workers, ray_address, on_result, bar)
        elif workers == 1:
            for p in payloads:
                r = run_cell(url, account_id, fields, p)
                on_result(r)
                out.append(r)
                bar.update(1)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(POOL_START_METHOD)) as ex:
                futs = [ex.submit(run_cell, url, account_id, fields, p) for p in payloads]
                for f in as_completed(futs):
                    r = f.result()
                    on_result(r)
                    out.append(r)
                    bar.update(1)
    finally:
        bar.close()
    return out


def _execute_ray(payloads, url, account_id, fields, workers, address, on_result, bar) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs the ray package (pip install 'ray>=2.40,<3')") from None
    started = not ray.is_initialized()
    if started:
        if address == "auto":
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        task = ray.remote(run_cell)
        pending = [task.remote(url, account_id, fields, p) for p in payloads]
        out = []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            r = ray.get(ready[0])
            on_result(r)
            out.append(r)
            bar.update(1)
        return out
    finally:
        if started:
            ray.shutdown()

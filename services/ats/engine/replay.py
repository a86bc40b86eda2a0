"""Run a replay (or backtest pass) end to end against PostgreSQL: lock, run row, feed, engine, summary.

``run_replay`` is what `ats engine replay`, `ats backtest run` and `ats demo` call. Same arguments -> same run id:
a completed run is reused (its summary returned, nothing re-written), an unfinished one resumes from its
checkpoint (no duplicate order: client_order_id is UNIQUE and the rows after the checkpoint were never
committed), a new one starts.
"""

from __future__ import annotations

import contextlib

import psycopg

from ..db.connection import connect, database_url
from ..db.events import record_event
from ..errors import AtsError
from .core import Engine
from .feed import ReplayFeed
from .metrics import run_summary
from .runs import RunSpec, begin_run, finish_run, heavy_lock, resolve
from .sink import PgSink, to_dt


def run_replay(spec: RunSpec, *, url: str | None = None, progress: bool = False, commit_every: int = 200,
               lock: bool = True, max_steps: int | None = None, progress_desc: str | None = None,
               background_writes: bool = True, consensus: str = "off") -> dict:
    """Run (or resume, or reuse) the replay of ``spec``.

    Parameters
    ----------
    spec : RunSpec
        The run (same arguments -> same run id -> resume).
    url : str, optional
        Database URL (default ``ATS_DATABASE_URL``).
    progress : bool
        Show a progress bar.
    commit_every : int
        Steps per committed batch (rows + checkpoint).
    lock : bool
        Take the heavy-run lock (False when the caller already holds it).
    max_steps : int, optional
        Stop early (status stays 'running'; the next call resumes).
    progress_desc : str, optional
        Progress bar label.
    background_writes : bool
        Commit batches from a writer thread on a second connection while the engine computes
        (ats.engine.sink.PgSink), in order, each with its checkpoint. Either way a replay's batches commit without
        waiting for the WAL flush (``PgSink(durable=False)``: a PostgreSQL crash may lose whole trailing batches,
        which the resume re-creates; never part of one).
    consensus : {'off', 'replay', 'live'}
        The consensus gate's mode (``ats.engine.advice``): 'off' skips it, 'replay' decides from recorded votes,
        'live' asks the configured models. Callers give a gated run its own ``spec.tag`` (the CLI appends
        ``consensus=<mode>``) so its run id differs from the ungated run's.

    Returns
    -------
    dict
        The run summary (``ats.engine.metrics.run_summary``) plus ``state`` ('new' | 'resume' | 'completed') and
        ``status``.

    Raises
    ------
    BusyError
        When another heavy run holds the lock.
    AtsError
        On missing candles or configuration.
    """
    url = url or database_url()
    guard = heavy_lock(url, what=spec.run_id, account_id=spec.account_id) if lock else contextlib.nullcontext()
    with guard:
        conn = connect(url, application_name=f"ats-engine:{spec.run_id}"[:60])
        try:
            return _run(conn, spec, progress=progress, commit_every=commit_every, max_steps=max_steps,
                        progress_desc=progress_desc, url=url, background_writes=background_writes,
                        consensus=consensus)
        finally:
            conn.close()


def _run(conn: psycopg.Connection, spec: RunSpec, *, progress, commit_every, max_steps, progress_desc, url,
         background_writes, consensus="off") -> dict:
    spec = resolve(conn, spec)
    state, row = begin_run(conn, spec)
    rid = spec.run_id
    if state == "completed":
        summary = row["summary"] or run_summary(conn, rid)
        return {**summary, "state": "completed", "status": "completed"}
    for name in spec.strategies:
        from ..db.config_store import strategy_timeline

        if not strategy_timeline(conn, name, account_id=spec.account_id):
            raise AtsError(f"strategy {name!r} has no configuration for account {spec.account_id!r} in "
                           f"strategy_configurations (seeded by migration 0021_engine_seeds; or `ats config strategy set {name} "
                           "--buy on`)")
    feed = ReplayFeed.load(conn, spec.symbols, spec.timeframe, spec.start, spec.end)
    conn.commit()
    sink = PgSink(conn, rid, spec.account_id, write_regime_singleton=spec.mode != "backtest",
                  writer_url=url if background_writes else None, durable=spec.mode == "live")
    checkpoint = row["checkpoint"] if state == "resume" else None
    eng = Engine(conn, spec, sink=sink, feed=feed, checkpoint=checkpoint, progress=progress,
                 commit_every=commit_every, progress_desc=progress_desc, consensus=consensus)
    if state == "resume":
        record_event(conn, "engine", "run_resumed", account_id=spec.account_id,
                     ts=to_dt(eng.last_T + eng.tf_s) if eng.last_T is not None else None,
                     payload={"run_id": rid, "from_bar_time": row["last_bar_time"].isoformat()
                              if row["last_bar_time"] else None, "bars_processed": row["bars_processed"]})
        conn.commit()
    try:
        n = eng.run(max_steps=max_steps)
    except KeyboardInterrupt:
        conn.rollback()
        finish_run(conn, rid, "interrupted", None)
        raise
    except Exception as exc:
        conn.rollback()
        finish_run(conn, rid, "failed", {"error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    if max_steps is not None and n >= max_steps:
        summary = run_summary(conn, rid)
        return {**summary, "state": state, "status": "running"}
    record_event(conn, "engine", "run_completed", account_id=spec.account_id,
                 ts=to_dt(eng.last_T + eng.tf_s) if eng.last_T is not None else None,
                 payload={"run_id": rid, "steps": eng.steps_done, "bars": eng.bars_done,
                          "anomaly_source": eng.anomaly_source})
    conn.commit()
    summary = run_summary(conn, rid)
    summary["anomaly_source"] = eng.anomaly_source
    finish_run(conn, rid, "completed", summary)
    return {**summary, "state": state, "status": "completed"}

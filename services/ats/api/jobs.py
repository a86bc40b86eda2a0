"""Background jobs started from the dashboard (backfill). Each holds the heavy-run lock for its whole run.

The lock is taken in the request thread (so a busy database answers 409 at once, naming the holder) and handed
to a worker thread, which releases it when the job ends. Every start, refusal and end is a ``system_events`` row
(component 'dashboard').
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from ..db.connection import connect
from ..db.events import record_event
from ..errors import BusyError


@dataclass
class Job:
    """One dashboard job. ``status``: running | done | failed; ``error``: the one-line reason of a failure."""

    job_id: str
    kind: str
    params: dict
    status: str = "running"
    result: dict | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def doc(self) -> dict:
        """JSON-ready view of the job."""
        return {"job_id": self.job_id, "kind": self.kind, "params": self.params, "status": self.status,
                "result": self.result, "error": self.error, "started": self.started, "finished": self.finished}


def _audit(url: str, event_type: str, payload: dict, severity: str = "info") -> None:
    with connect(url, autocommit=True, application_name="ats-dashboard") as conn:
        record_event(conn, "dashboard", event_type, severity=severity, symbol=payload.get("symbol"),
                     payload=payload, account_id=None)


class JobManager:
    """Starts and tracks jobs for one app (in memory; jobs end with the process)."""

    def __init__(self, db_url: str):
        self.db_url = db_url
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Job | None:
        """The job or None."""
        return self._jobs.get(job_id)

    def start_backfill(self, symbol: str, timeframe: str, source: str | None, start: str | None,
                       end: str | None, *, retries: int = 1, backoff: float = 0.5) -> Job:
        """Take the heavy-run lock and start a backfill of one series in a worker thread.

        Raises
        ------
        BusyError
            At once, when another heavy run holds the lock (the message names the holder); audited as
            ``backfill_refused``.
        """
        from ..engine.runs import heavy_lock
        from ..market_data.backfill import alpaca_symbol

        src = source or ("bybit" if alpaca_symbol(symbol)[1] else "alpaca")
        params = {"symbol": symbol, "timeframe": timeframe, "source": src, "start": start, "end": end}
        cm = heavy_lock(self.db_url, what=f"dashboard backfill {symbol} {timeframe}")
        try:
            cm.__enter__()
        except BusyError as exc:
            _audit(self.db_url, "backfill_refused", {**params, "reason": str(exc)}, "warning")
            raise
        job = Job(uuid.uuid4().hex[:12], "backfill", params)
        with self._lock:
            self._jobs[job.job_id] = job
        _audit(self.db_url, "backfill_started", {**params, "job_id": job.job_id})
        threading.Thread(target=self._run_backfill, args=(job, cm, retries, backoff), daemon=True,
                         name=f"ats-backfill-{job.job_id}").start()
        return job

    def _run_backfill(self, job: Job, cm, retries: int, backoff: float) -> None:
        from ..market_data.backfill import backfill

        p = job.params
        try:
            with connect(self.db_url, application_name="ats-dashboard-backfill") as conn:
                r = backfill(conn, p["symbol"], p["timeframe"], p["start"], p["end"], source=p["source"],
                             retries=retries, backoff=backoff)
                conn.commit()
            job.result = {"line": r.line(), "rows_inserted": r.rows_inserted}
            job.status = "done"
        except Exception as exc:  # the job's outcome, shown on the page: one line
            job.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
            job.status = "failed"
        finally:
            job.finished = time.time()
            try:
                cm.__exit__(None, None, None)
            finally:
                _audit(self.db_url, f"backfill_{job.status}", {**p, "job_id": job.job_id, "error": job.error,
                                                               "result": job.result},
                       "info" if job.status == "done" else "warning")

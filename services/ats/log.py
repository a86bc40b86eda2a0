"""One logging setup for every ATS service.

`setup_logging("engine")` sends JSON lines to `logs/<service>.log` (size-based rotation: `ATS_LOG_MAX_BYTES`,
default 10 MB, x `ATS_LOG_BACKUPS`, default 30 files) and readable lines to stderr (level `ATS_LOG_LEVEL`,
default WARNING for stderr so command output stays clean; the file gets INFO and above).
Extra fields passed as ``logger.info("msg", extra={"fields": {...}})`` land as keys in the JSON line.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from datetime import datetime, timezone

from .paths import logs_dir

_configured: dict[str, logging.Logger] = {}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ts (UTC ISO-8601), level, service, logger, msg, plus extra fields."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(service: str, *, stderr_level: str | None = None) -> logging.Logger:
    """Configure and return the logger `ats.<service>`; idempotent per service.

    Files: `logs/<service>.log` + rotations `<service>.log.1` ... `.N`. Never raises when the log
    directory is not writable: it then logs to stderr only and says so once.
    """
    if service in _configured:
        return _configured[service]
    logger = logging.getLogger(f"ats.{service}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    max_bytes = int(os.environ.get("ATS_LOG_MAX_BYTES", 10 * 1024 * 1024))
    backups = int(os.environ.get("ATS_LOG_BACKUPS", 30))
    try:
        d = logs_dir()
        d.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(d / f"{service}.log", maxBytes=max_bytes,
                                                  backupCount=backups, encoding="utf-8")
        fh.setLevel(logging.INFO)
        fh.setFormatter(JsonFormatter(service))
        logger.addHandler(fh)
    except OSError as exc:  # read-only checkout: keep stderr logging
        print(f"ats: cannot write logs to {logs_dir()}: {exc}; logging to stderr only", file=sys.stderr)
    sh = logging.StreamHandler(sys.stderr)
    sh.setLevel(getattr(logging, (stderr_level or os.environ.get("ATS_LOG_LEVEL", "WARNING")).upper(), logging.WARNING))
    sh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s " + service + ": %(message)s", "%H:%M:%S"))
    logger.addHandler(sh)
    _configured[service] = logger
    return logger

"""One logging setup: JSON lines in logs/<service>.log with size-based rotation, readable stderr (issue 2)."""

import json
import logging

from ats import log as atslog


def test_json_lines_and_rotation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATS_LOG_DIR", str(tmp_path))
    monkeypatch.setenv("ATS_LOG_MAX_BYTES", "2000")
    monkeypatch.setenv("ATS_LOG_BACKUPS", "3")
    atslog._configured.pop("unittest_svc", None)
    logger = atslog.setup_logging("unittest_svc")
    for i in range(200):
        logger.info("event %d", i, extra={"fields": {"i": i, "symbol": "BTCUSDT"}})
    logger.warning("visible on stderr")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "unittest_svc.log" in files and "unittest_svc.log.3" in files and "unittest_svc.log.4" not in files
    last = (tmp_path / "unittest_svc.log").read_text().strip().splitlines()[-1]
    doc = json.loads(last)
    assert doc["service"] == "unittest_svc" and doc["level"] == "WARNING" and doc["msg"] == "visible on stderr"
    first_info = json.loads((tmp_path / "unittest_svc.log.1").read_text().splitlines()[0])
    assert first_info["symbol"] == "BTCUSDT" and isinstance(first_info["i"], int)
    err = capsys.readouterr().err
    assert "visible on stderr" in err and "event 5" not in err
    for h in logger.handlers:
        h.close()
    logging.getLogger("ats.unittest_svc").handlers.clear()

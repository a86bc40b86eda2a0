"""`ats db backup` / `ats db restore`: a real pg_dump round trip on the test server, and the rotation rule."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from conftest import drop_database, run_cli
from ats.db import backup as bk
from ats.db.connection import with_dbname


def _seed(url: str) -> None:
    with psycopg.connect(url) as c:
        for i in range(5):
            c.execute("INSERT INTO system_events (component, event_type, payload) VALUES ('test', 'seed', %s)",
                      (json.dumps({"i": i}),))


def test_backup_restore_round_trip_counts_equal(fresh_db_url, pg_admin_url, tmp_path):
    _seed(fresh_db_url)
    r = run_cli("db", "backup", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    dumps = list(tmp_path.glob("ats_*.dump"))
    assert len(dumps) == 1 and "rows" in r.stdout
    man = json.loads(dumps[0].with_suffix(".json").read_text())
    assert man["size_bytes"] == dumps[0].stat().st_size > 0
    assert man["sha256"] == bk.sha256_file(dumps[0])
    assert man["row_counts"]["public.system_events"] >= 5
    assert man["row_counts"]["public.system_settings"] > 0 and man["server_version"]
    scratch = f"ats_restore_{uuid.uuid4().hex[:8]}"
    try:
        r = run_cli("db", "restore", str(dumps[0]), "--into", scratch)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "equal the manifest" in r.stdout
        with psycopg.connect(with_dbname(pg_admin_url, scratch)) as c:
            n = c.execute("SELECT count(*) FROM system_events WHERE component = 'test'").fetchone()[0]
        assert n == 5
        # restoring over an existing database is refused
        r = run_cli("db", "restore", str(dumps[0]), "--into", scratch)
        assert r.returncode == 1 and "already exists" in r.stderr
    finally:
        drop_database(pg_admin_url, scratch)
    # the success was recorded
    with psycopg.connect(fresh_db_url) as c:
        ev = c.execute("SELECT payload FROM system_events WHERE component='backup' AND event_type='backup_done'"
                       ).fetchall()
    assert ev and ev[-1][0]["file"] == dumps[0].name


def test_restore_reports_a_count_mismatch(fresh_db_url, pg_admin_url, tmp_path):
    _seed(fresh_db_url)
    man = bk.backup(tmp_path, url=fresh_db_url)
    # tamper with the manifest's counts (not the dump): the restore must see the difference
    mpath = man.path_in(tmp_path)
    doc = json.loads(mpath.read_text())
    doc["row_counts"]["public.system_events"] += 1
    mpath.write_text(json.dumps(doc))
    scratch = f"ats_restore_{uuid.uuid4().hex[:8]}"
    try:
        r = run_cli("db", "restore", str(tmp_path / man.file), "--into", scratch)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "public.system_events" in r.stdout and "differ" in r.stdout
    finally:
        drop_database(pg_admin_url, scratch)


def test_restore_refuses_a_corrupt_dump(fresh_db_url, tmp_path):
    man = bk.backup(tmp_path, url=fresh_db_url)
    with (tmp_path / man.file).open("ab") as f:
        f.write(b"x")
    r = run_cli("db", "restore", str(tmp_path / man.file), "--into", "ats_never_created")
    assert r.returncode == 1 and "sha256" in r.stderr


def test_backup_failure_is_recorded(fresh_db_url, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("file")
    r = run_cli("db", "backup", "--dir", str(blocker / "sub"))
    assert r.returncode == 1 and "backup failed" in r.stderr
    with psycopg.connect(fresh_db_url) as c:
        n = c.execute("SELECT count(*) FROM system_events WHERE component='backup' AND event_type='backup_failed'"
                      ).fetchone()[0]
    assert n == 1


def test_rotation_settings_are_seeded(fresh_db_url):
    assert bk.rotation_settings(fresh_db_url) == (bk.SETTINGS["backup.keep_daily"][0],
                                                  bk.SETTINGS["backup.keep_weekly"][0])


def _dump(d: Path, ts: datetime) -> Path:
    p = d / f"ats_ats_{ts.strftime(bk.TS_FORMAT)}.dump"
    p.write_bytes(b"x")
    p.with_suffix(".json").write_text("{}")
    return p


def test_rotation_keeps_exactly_the_daily_and_weekly_newest(tmp_path):
    # two dumps a day at 03:00 and 15:00 UTC for 30 days ending Tue 2026-12-01
    end = datetime(2026, 12, 1, tzinfo=timezone.utc)
    made = {}
    for day in range(30):
        for hour in (3, 15):
            ts = end - timedelta(days=day) + timedelta(hours=hour)
            made[ts] = _dump(tmp_path, ts)
    (tmp_path / "notes.dump").write_bytes(b"not ours")
    deleted = bk.rotate(tmp_path, keep_daily=3, keep_weekly=2)
    kept = sorted(bk.dump_time(p) for p in tmp_path.glob("ats_*.dump"))
    # daily: the 15:00 dump of Dec 1, Nov 30, Nov 29; weekly: newest of ISO week 49 (Dec 1, already kept) and
    # of week 48 (Sun Nov 29 15:00, already kept) -> add nothing; so exactly three.
    assert kept == [datetime(2026, 11, d, 15, tzinfo=timezone.utc) for d in (29, 30)] + \
        [datetime(2026, 12, 1, 15, tzinfo=timezone.utc)]
    assert len(deleted) == 60 - 3
    assert (tmp_path / "notes.dump").exists(), "files that are not ATS dumps are left alone"
    assert not any(p.with_suffix(".json").exists() for p in deleted)
    # more weeks than days: the newest of weeks 47 and 46 (Sundays Nov 22, Nov 15) join
    for ts, p in made.items():
        if not p.exists():
            _dump(tmp_path, ts)
    bk.rotate(tmp_path, keep_daily=2, keep_weekly=4)
    kept = sorted(bk.dump_time(p) for p in tmp_path.glob("ats_*.dump"))
    assert kept == [datetime(2026, 11, d, 15, tzinfo=timezone.utc) for d in (15, 22, 29, 30)] + \
        [datetime(2026, 12, 1, 15, tzinfo=timezone.utc)]


def test_rotation_always_keeps_the_newest_and_refuses_negative(tmp_path):
    p = _dump(tmp_path, datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert bk.rotate(tmp_path, 0, 0) == [] and p.exists()
    with pytest.raises(Exception, match=">= 0"):
        bk.plan_rotation([p], -1, 0)


def test_pg_tool_matches_the_server_major():
    exe = bk.pg_tool("pg_dump", "16.2")
    assert exe.name == "pg_dump" and exe.is_file()
    with pytest.raises(Exception, match="no pg_dump for PostgreSQL 99"):
        bk.pg_tool("pg_dump", "99.0")

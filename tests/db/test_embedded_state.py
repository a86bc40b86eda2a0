"""Start-up of the embedded PostgreSQL survives each state a crashed `ats` process can leave behind (issue 11).

Each test puts the data directory in one such state and runs the real CLI (no ATS_DATABASE_URL): the command must
work, nothing must be lost, and ``ats db doctor`` must say what it found. With pgserver's own start-up these states
failed with ``Expecting value: line 1 column 1`` (empty or half-written ``.handle_pids.json``), "Is the server
running locally" (``postmaster.pid`` naming a pid reused by another process) or an AssertionError (empty
``postmaster.pid``); the pid list also grew by one pid per killed process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import psycopg
import pytest

from _embedded_helpers import admin_url, ats, home_env, new_home, pgdata, stop


@pytest.fixture(scope="module")
def home():
    """An ATS_HOME with a migrated embedded database holding one marker row (to prove nothing is lost)."""
    h = new_home()
    out = ats(h, "db", "up")
    assert out.returncode == 0, out.stderr
    with psycopg.connect(admin_url(h), autocommit=True) as c:
        c.execute("CREATE TABLE crash_marker (v int)")
        c.execute("INSERT INTO crash_marker VALUES (42)")
    yield h
    stop(h)
    shutil.rmtree(h, ignore_errors=True)


@pytest.fixture
def fresh_home():
    """An empty ATS_HOME (no data directory yet); its server is stopped and the directory removed afterwards."""
    h = new_home()
    yield h
    stop(h)
    shutil.rmtree(h, ignore_errors=True)


def _works(h) -> None:
    out = ats(h, "db", "status", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["mode"] == "embedded"
    with psycopg.connect(admin_url(h), autocommit=True) as c:
        assert c.execute("SELECT v FROM crash_marker").fetchall() == [(42,)]


def _postmaster_lines(h) -> list[str]:
    return (pgdata(h) / "postmaster.pid").read_text().splitlines()


@pytest.mark.parametrize("content", ["", "[4194301, 41", "\x00\x00\x00", '{"pids": 1}'],
                         ids=["empty", "half-written", "garbage", "not-a-list"])
def test_corrupt_handle_pids_does_not_block_start_up(home, content):
    stop(home)  # the next command must start the server, as after a crash
    (pgdata(home) / ".handle_pids.json").write_text(content)
    _works(home)
    pids = json.loads((pgdata(home) / ".handle_pids.json").read_text())
    assert isinstance(pids, list) and all(isinstance(p, int) for p in pids)


def test_dead_pids_are_pruned_from_handle_pids(home):
    dead = []
    for _ in range(3):  # pids of processes that have exited (as a kill -9 leaves them)
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        p.wait()
        dead.append(p.pid)
    (pgdata(home) / ".handle_pids.json").write_text(json.dumps(dead))
    stop(home)
    _works(home)
    left = json.loads((pgdata(home) / ".handle_pids.json").read_text())
    assert not set(left) & set(dead)


def test_stale_postmaster_pid_naming_a_reused_pid(home):
    _works(home)
    lines = _postmaster_lines(home)
    stop(home)
    lines[0] = str(os.getpid())  # alive, but it is this test process, not a postgres of that pgdata
    (pgdata(home) / "postmaster.pid").write_text("\n".join(lines) + "\n")
    _works(home)
    assert _postmaster_lines(home)[0] != str(os.getpid())


def test_stale_postmaster_pid_naming_a_dead_pid_and_status_ready(home):
    _works(home)
    lines = _postmaster_lines(home)
    stop(home)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    lines[0] = str(p.pid)
    (pgdata(home) / "postmaster.pid").write_text("\n".join(lines) + "\n")
    _works(home)


@pytest.mark.parametrize("content", ["", "12"], ids=["empty", "half-written"])
def test_truncated_postmaster_pid(home, content):
    stop(home)
    (pgdata(home) / "postmaster.pid").write_text(content)
    _works(home)


def test_server_left_running_by_a_killed_parent_is_reused(home):
    _works(home)
    pid = _postmaster_lines(home)[0]
    _works(home)
    assert _postmaster_lines(home)[0] == pid


def test_doctor_check_only_reports_and_repair_fixes(home):
    stop(home)
    (pgdata(home) / ".handle_pids.json").write_text("")
    (pgdata(home) / "postmaster.pid").write_text("")
    out = ats(home, "db", "doctor", "--check-only", "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    st = {c["name"]: c["status"] for c in json.loads(out.stdout)["checks"]}
    assert st["handle_pids"] == st["postmaster_pid"] == st["server"] == "problem"
    assert (pgdata(home) / ".handle_pids.json").read_text() == ""  # check-only changed nothing

    out = ats(home, "db", "doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {ln.split()[1]: ln.split()[0] for ln in out.stdout.splitlines()}
    assert lines["handle_pids"] == lines["postmaster_pid"] == lines["server"] == "repaired"
    assert lines["database"] == "ok"
    out = ats(home, "db", "doctor")
    assert out.returncode == 0 and "repaired" not in out.stdout and "problem" not in out.stdout, out.stdout
    _works(home)


def test_doctor_exits_1_when_the_directory_is_not_a_cluster(fresh_home):
    d = pgdata(fresh_home)
    d.mkdir(parents=True)
    (d / "precious.txt").write_text("not ours")
    out = ats(fresh_home, "db", "doctor")
    assert out.returncode == 1
    assert "problem   cluster" in out.stdout and "precious.txt" in out.stdout
    assert (d / "precious.txt").read_text() == "not ours"  # never deleted


def test_crash_during_first_initdb_leaves_nothing_half_done(fresh_home):
    p = subprocess.Popen([sys.executable, "-m", "ats.cli", "db", "status"], env=home_env(fresh_home),
                         cwd=str(fresh_home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d = pgdata(fresh_home)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(x.name.startswith(".pgdata.initdb-")
                                                   for x in d.parent.glob(".*") if x.is_dir()):
        time.sleep(0.01)
    p.kill()
    p.wait()
    time.sleep(0.3)  # let initdb (the orphaned child) notice or finish; either way nothing is in pgdata yet
    assert not (d / "PG_VERSION").exists() or (d / "global" / "pg_control").exists()
    out = ats(fresh_home, "db", "status")
    assert out.returncode == 0, out.stderr
    assert not [x for x in d.parent.iterdir() if ".initdb-" in x.name]


def test_concurrent_first_start_ups_share_one_server(fresh_home):
    procs = [subprocess.Popen([sys.executable, "-m", "ats.cli", "db", "status", "--json"], env=home_env(fresh_home),
                              cwd=str(fresh_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    assert len({json.loads(o[0])["dsn"] for o in outs}) == 1

"""`.claude-cron/schedule.toml` + prompts -> systemd units and crontab lines (`ats cron render|install|list`)."""

from __future__ import annotations

import configparser
import getpass
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ats.errors import AtsError, UsageError
from ats.ops.schedule import load_prompt, load_schedule, parse_when, render
from ats.ops.tasks import TASKS
from conftest import run_cli

from _ops_helpers import make_project

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, on_calendar, cron", [
    ("hourly :05", "*-*-* *:05:00 UTC", "5 * * * *"),
    ("daily 06:00", "*-*-* 06:00:00 UTC", "0 6 * * *"),
    ("daily 7:30", "*-*-* 07:30:00 UTC", "30 7 * * *"),
    ("weekly Mon 07:30", "Mon *-*-* 07:30:00 UTC", "30 7 * * 1"),
    ("weekly mon,thu 18:00", "Mon,Thu *-*-* 18:00:00 UTC", "0 18 * * 1,4"),
    ("weekly Sun 00:00", "Sun *-*-* 00:00:00 UTC", "0 0 * * 0"),
    ("once 2026-12-07 09:00", "2026-12-07 09:00:00 UTC", "0 9 7 12 *"),
])
def test_when_expressions(text, on_calendar, cron):
    w = parse_when(text)
    assert w.on_calendar("UTC") == on_calendar
    assert w.cron() == cron


@pytest.mark.parametrize("bad", ["", "daily", "daily 25:00", "weekly Funday 06:00", "hourly 5",
                                 "once 2026-13-01 09:00", "every 5 minutes"])
def test_bad_when_is_refused(bad):
    with pytest.raises(UsageError, match="cannot parse"):
        parse_when(bad)


def test_schedule_holds_the_required_recurring_runs():
    sched = load_schedule(ROOT)
    by_task = {j.task: j for j in sched.jobs}
    assert by_task["watchlist-healthcheck"].when.cron() == "0 6 * * *"
    assert by_task["ats-health-check"].when.cron() == "0 7 * * *"
    assert by_task["weekly-report"].when.cron().endswith("* * 1")          # Monday
    assert by_task["kb-scan"].when.kind == "hourly"
    assert by_task["micro-backfill"].when.cron() == "10 * * * *"
    assert TASKS["micro-backfill"].core([]) == [["data", "backfill", "--kind", "all"]]
    assert [p.name for p in sched.prompts] == ["breaker-soak-review"]


def _render_to(tmp_path: Path, root: Path = ROOT) -> tuple[dict[str, str], str]:
    rendered = render(load_schedule(root), root=root, user=getpass.getuser())
    return rendered.units, rendered.crontab


def test_rendered_units_are_oneshot_services_with_persistent_timers(tmp_path):
    units, crontab = _render_to(tmp_path)
    timers = {n: t for n, t in units.items() if n.endswith(".timer")}
    services = {n: t for n, t in units.items() if n.endswith(".service") and n[:-8] + ".timer" in timers}
    assert set(n[:-6] for n in timers) == set(n[:-8] for n in services)
    assert set(units) - set(timers) - set(services) == {"ats-live@.service", "ats-dashboard.service"}
    assert {"ats-watchlist-healthcheck.timer", "ats-health-check.timer", "ats-weekly-report.timer",
            "ats-kb-scan.timer", "ats-db-backup.timer", "ats-prompt-breaker-soak-review.timer",
            "ats-daily-report.timer", "ats-alerts-dispatch.timer", "ats-micro-backfill.timer"} == set(timers)
    for name, text in services.items():
        cp = configparser.ConfigParser(interpolation=None, strict=False)
        cp.read_string(text)
        assert cp["Service"]["Type"] == "oneshot"
        assert cp["Service"]["ExecStart"].startswith(str(ROOT / ".claude-cron" / "run.sh") + " ")
        assert cp["Service"]["Environment"] == f"ATS_HOME={ROOT}"
    for name, text in timers.items():
        cp = configparser.ConfigParser(interpolation=None, strict=False)
        cp.read_string(text)
        assert cp["Timer"]["Persistent"] == "true"
        assert cp["Timer"]["Unit"] == name.replace(".timer", ".service")
        assert cp["Install"]["WantedBy"] == "timers.target"
    assert "OnCalendar=2026-12-07 09:00:00 UTC" in timers["ats-prompt-breaker-soak-review.timer"]
    assert "ExecStart=" + str(ROOT / ".claude-cron/run.sh") + " prompt breaker-soak-review" in \
        services["ats-prompt-breaker-soak-review.service"]
    # crontab: one line per job, /etc/cron.d format (user column)
    lines = [ln for ln in crontab.splitlines() if ln and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(lines) == 9
    assert f"0 6 * * * {getpass.getuser()} cd {ROOT} && {ROOT}/.claude-cron/run.sh watchlist-healthcheck" in lines
    assert "CRON_TZ=UTC" in crontab


def test_rendered_units_pass_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd to run this check)")
    out = tmp_path / "units"
    res = run_cli("cron", "render", "--format", "systemd", "--out", str(out), "--user", getpass.getuser())
    assert res.returncode == 0, res.stderr
    files = sorted(str(p) for p in out.iterdir() if "@" not in p.name)  # a template verifies only as an instance
    assert len(files) == 19
    v = subprocess.run([tool, "verify", *files], capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr
    # the check has teeth: a broken calendar is reported
    bad = out / "ats-kb-scan.timer"
    bad.write_text(bad.read_text().replace("OnCalendar=*-*-* *:05:00 UTC", "OnCalendar=Someday 99:00"))
    v = subprocess.run([tool, "verify", str(bad)], capture_output=True, text=True, timeout=120)
    assert v.returncode != 0 and "calendar" in (v.stdout + v.stderr).lower()


def test_install_dry_run_prints_and_writes_nothing(tmp_path):
    unit_dir = tmp_path / "etc-systemd-system"
    res = run_cli("cron", "install", "--dry-run", "--unit-dir", str(unit_dir))
    assert res.returncode == 0, res.stderr
    assert f"# would create {unit_dir}/ats-health-check.timer" in res.stdout
    assert "Persistent=true" in res.stdout
    assert "# would run: systemctl enable --now ats-watchlist-healthcheck.timer" in res.stdout
    assert not unit_dir.exists()
    res = run_cli("cron", "install", "--dry-run")
    assert res.returncode == 0 and "/etc/systemd/system/ats-weekly-report.service" in res.stdout


def test_install_writes_units_into_a_given_directory(tmp_path):
    unit_dir = tmp_path / "units"
    res = run_cli("cron", "install", "--unit-dir", str(unit_dir), "--no-enable")
    assert res.returncode == 0, res.stderr
    assert (unit_dir / "ats-kb-scan.timer").read_text().count("Persistent=true") == 1
    cron_file = tmp_path / "cron.d-ats"
    res = run_cli("cron", "install", "--crontab", "--cron-file", str(cron_file))
    assert res.returncode == 0, res.stderr
    assert "run.sh kb-scan" in cron_file.read_text()


def test_cron_list_json():
    res = run_cli("cron", "list", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {j["name"] for j in doc["jobs"]} == {"watchlist-healthcheck", "ats-health-check", "weekly-report",
                                                "kb-scan", "db-backup", "daily-report", "alerts-dispatch",
                                                "micro-backfill"}
    inv = next(t for t in doc["tasks"] if t["name"] == "investigate")
    assert inv["command"] == "/investigate" and "mcp__ats-postgres__investigate_symbol" in inv["allowed_tools"]
    assert doc["prompts"][0]["on_calendar"] == "2026-12-07 09:00:00 UTC"


def test_schedule_validation_names_the_job(tmp_path):
    home = make_project(tmp_path / "p")
    path = home / ".claude-cron" / "schedule.toml"
    path.write_text('[[jobs]]\nname = "x"\ntask = "nope"\nwhen = "daily 06:00"\n')
    with pytest.raises(AtsError, match=r"jobs\[0\]: unknown task 'nope'"):
        load_schedule(home)
    path.write_text('[[jobs]]\nname = "x"\ntask = "kb-scan"\nwhen = "daily 26:00"\n')
    with pytest.raises(AtsError, match=r"jobs\[0\].*cannot parse"):
        load_schedule(home)
    path.write_text('[[jobs]]\nname = "x"\ntask = "investigate"\nwhen = "daily 06:00"\n')
    with pytest.raises(UsageError, match="SYMBOL"):
        load_schedule(home)


def test_prompt_validation(tmp_path):
    home = make_project(tmp_path / "p")
    d = home / ".claude-cron" / "prompts"
    (d / "wide.md").write_text("---\nrun_at: 2027-01-01 08:00\nallowed-tools: Bash, Edit\n---\nDo it.\n")
    with pytest.raises(AtsError, match="not allowed in a headless run"):
        load_prompt("wide", home)
    (d / "mut.md").write_text("---\ncore: ats config strategy set x\n---\nDo it.\n")
    with pytest.raises(AtsError, match="not a read/report command"):
        load_prompt("mut", home)
    (d / "ok.md").write_text("---\ndescription: fine\nrun_at: 2027-01-01 08:00\ncore: ats db status\n---\nDo it.\n")
    p = load_prompt("ok", home)
    assert p.core_argvs() == [["db", "status"]] and p.when.on_calendar() == "2027-01-01 08:00:00"
    assert "mcp__ats-docs__search" in p.allowed_tools  # the read-only default


def test_long_running_units_bind_the_account_and_restart():
    import configparser

    units = render(load_schedule(ROOT), root=ROOT, user=getpass.getuser()).units
    live = configparser.ConfigParser(interpolation=None, strict=False)
    live.read_string(units["ats-live@.service"])
    s = live["Service"]
    assert s["Type"] == "simple" and s["Restart"] == "always"
    assert "--account %i live run" in s["ExecStart"] and s["ExecStart"].endswith("$ATS_LIVE_ARGS")
    assert f"EnvironmentFile=-{ROOT}/.env.%i" in units["ats-live@.service"]  # the account's own 0600 credentials
    dash = configparser.ConfigParser(interpolation=None, strict=False)
    dash.read_string(units["ats-dashboard.service"])
    assert "dashboard --host 127.0.0.1" in dash["Service"]["ExecStart"]

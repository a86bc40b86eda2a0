"""The dashboard's JSON API and pages with FastAPI's TestClient against a real database after the demo:
Assets figures equal `ats pnl --json` and the positions table, 409 while the heavy-run lock is held, 422 naming
the parameter, both dictionaries with the same keys, and no untranslated label on any page rendered in Chinese."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from _dash_fixtures import FAMILY, dash_db_url  # noqa: F401
from ats.api.app import create_app
from ats.api.i18n import EN, ZH
from conftest import ROOT, run_cli

PAGES = ("/assets", "/analytics", "/datahub", "/kb", "/reports", "/backtests", "/events")
WINDOWS = ("today", "7d", "30d", "6m", "all_time")


@pytest.fixture(scope="module")
def client(dash_db_url):
    with TestClient(create_app(dash_db_url, root=ROOT)) as c:
        yield c


class _Cells(HTMLParser):
    """Collects data-num values by the nearest enclosing row attribute, data-i18n texts and text nodes."""

    def __init__(self):
        super().__init__()
        self.stack: list[dict] = []
        self.nums: list[tuple[dict, float]] = []
        self.i18n: list[list] = []
        self.texts: list[str] = []
        self._open_i18n: list = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("br", "meta", "link", "input", "img"):
            return
        self.stack.append(a)
        if "data-num" in a:
            ctx = {k: v for s in self.stack for k, v in s.items() if k in ("data-window", "data-symbol", "id")}
            self.nums.append((ctx, float(a["data-num"])))
        if "data-i18n" in a:
            item = [a["data-i18n"], ""]
            self.i18n.append(item)
            self._open_i18n.append((len(self.stack), item))

    def handle_endtag(self, tag):
        if tag in ("br", "meta", "link", "input", "img"):
            return
        if self._open_i18n and self._open_i18n[-1][0] == len(self.stack):
            self._open_i18n.pop()
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if self._open_i18n:
            self._open_i18n[-1][1][1] += data
        if data.strip() and not (self.stack and self.stack[-1].get("type") == "application/json"):
            self.texts.append(data.strip())


def _parse(html: str) -> _Cells:
    p = _Cells()
    p.feed(re.sub(r"<script\b.*?</script>", "", html, flags=re.S))
    return p


def _conn(url):
    return psycopg.connect(url, row_factory=dict_row, autocommit=True)


@pytest.mark.parametrize("account", ["default", FAMILY])
def test_assets_pnl_equals_ats_pnl_json(client, dash_db_url, account):
    out = run_cli("pnl", "--json", "--account", account, env={"ATS_DATABASE_URL": dash_db_url})
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    api = client.get("/api/pnl", params={"account": account}).json()["pnl"]
    assert api == cli
    page = _parse(client.get("/assets", params={"account": account}).text)
    by_window = {}
    for ctx, v in page.nums:
        if "data-window" in ctx:
            by_window.setdefault(ctx["data-window"], []).append(v)
    for w in WINDOWS:
        assert by_window[w] == [cli[w]["pnl_usd"], cli[w]["pnl_pct"]], w
    assert [v for ctx, v in page.nums if ctx.get("id") == "equity"] == [cli["equity_usd"]]


def test_a_chosen_run_equals_ats_pnl_json_run(client, dash_db_url):
    with _conn(dash_db_url) as c:
        rid = c.execute("SELECT run_id FROM engine_runs WHERE account_id='default' AND mode='replay'").fetchone()["run_id"]
    out = run_cli("pnl", "--json", "--run", rid, env={"ATS_DATABASE_URL": dash_db_url})
    assert out.returncode == 0, out.stderr
    assert client.get("/api/pnl", params={"run": rid}).json()["pnl"] == json.loads(out.stdout)
    page = client.get("/assets", params={"run": rid}).text
    assert f'<option value="{rid}" selected>' in page
    r = client.get("/api/positions", params={"account": FAMILY, "run": rid})
    assert r.status_code == 422 and r.json()["parameter"] == "run"


def test_assets_holdings_equal_positions_table(client, dash_db_url):
    api = client.get("/api/positions", params={"account": FAMILY}).json()
    rid = api["run_id"]
    with _conn(dash_db_url) as c:
        open_q = {r["symbol"]: float(r["q"]) for r in c.execute(
            "SELECT symbol, sum(qty) AS q FROM positions WHERE run_id=%s AND status='open' GROUP BY 1", (rid,))}
        snap = c.execute("SELECT positions FROM portfolio_hourly_snapshots WHERE run_id=%s ORDER BY ts DESC LIMIT 1",
                         (rid,)).fetchone()["positions"]
        last_fill = c.execute("SELECT symbol, price::float8 AS p FROM fills WHERE run_id=%s ORDER BY ts DESC, fill_id DESC "
                              "LIMIT 1", (rid,)).fetchone()
    assert open_q, "the family replay should end holding positions"
    rows = {s["symbol"]: s for s in api["symbols"]}
    assert set(rows) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    for sym, s in rows.items():
        assert s["qty"] == pytest.approx(open_q.get(sym, 0.0), rel=1e-12)
        assert s["state"] == ("owned" if sym in open_q else s["state"])
        assert s["state"] in ("owned", "traded", "watched")
        if sym in open_q:
            marks = {e["mark"] for e in snap if e["symbol"] == sym}
            assert s["price"] in marks and s["value_usd"] == round(s["qty"] * s["price"], 2)
    assert rows[last_fill["symbol"]]["recent_trades"][0]["price"] == last_fill["p"]
    page = _parse(client.get("/assets", params={"account": FAMILY}).text)
    qty_on_page = {}
    for ctx, v in page.nums:
        if "data-symbol" in ctx:
            qty_on_page.setdefault(ctx["data-symbol"], []).append(v)
    for sym, s in rows.items():
        assert qty_on_page[sym][0] == pytest.approx(s["qty"])  # first number of the row: quantity
    assert api["breakers"]["state"] in ("ACTIVE", "REDUCING", "HALTED")


def test_breaker_state_follows_breaker_states(client, dash_db_url):
    api = client.get("/api/positions").json()
    with _conn(dash_db_url) as c:
        tripped = c.execute("SELECT scope FROM breaker_states WHERE run_id=%s AND state='tripped'",
                            (api["run_id"],)).fetchall()
    want = "HALTED" if any(t["scope"] == "*" for t in tripped) else ("REDUCING" if tripped else "ACTIVE")
    assert api["breakers"]["state"] == want and len(api["breakers"]["causes"]) == len(tripped)


def test_backfill_409_while_a_heavy_run_holds_the_lock(client, dash_db_url):
    from ats.engine.runs import heavy_lock

    with heavy_lock(dash_db_url, what="replay (test)"):
        r = client.post("/api/backfill", json={"symbol": "BTCUSDT", "timeframe": "1h"})
    assert r.status_code == 409
    body = r.json()
    assert "another heavy run" in body["detail"] and "ats-heavy:replay (test)" in body["holder"]
    with _conn(dash_db_url) as c:
        ev = c.execute("""SELECT payload FROM system_events WHERE component='dashboard' AND event_type='backfill_refused'
                           ORDER BY event_id DESC LIMIT 1""").fetchone()
    assert ev and "ats-heavy:replay (test)" in ev["payload"]["reason"]


def test_backfill_202_job_fails_with_one_line_reason_and_is_audited(client, dash_db_url, monkeypatch):
    for k in ("ALPACA_API_KEY", "APCA_API_KEY_ID", "ALPACA_SECRET_KEY", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(k, raising=False)
    r = client.post("/api/backfill", json={"symbol": "SPY", "timeframe": "1d"})  # alpaca, no keys: fails offline
    assert r.status_code == 202, r.text
    jid = r.json()["job_id"]
    for _ in range(100):
        job = client.get(f"/api/jobs/{jid}").json()
        if job["status"] != "running":
            break
        time.sleep(0.1)
    assert job["status"] == "failed" and job["error"] and "\n" not in job["error"]
    with _conn(dash_db_url) as c:
        kinds = [e["event_type"] for e in c.execute(
            "SELECT event_type FROM system_events WHERE component='dashboard' AND payload->>'job_id'=%s ORDER BY event_id",
            (jid,))]
        # the lock was released when the job ended
        assert c.execute("SELECT count(*) AS n FROM pg_locks WHERE locktype='advisory' AND granted").fetchone()["n"] == 0
    assert kinds == ["backfill_started", "backfill_failed"]


@pytest.mark.parametrize("method,url,payload,param", [
    ("get", "/api/pnl?account=bad%20name", None, "account"),
    ("get", "/api/positions?account=nobody", None, "account"),
    ("get", "/api/analytics?days=0", None, "days"),
    ("get", "/api/analytics?days=abc", None, "days"),
    ("get", "/api/events?kind=nonsense", None, "kind"),
    ("get", "/api/events?limit=5000", None, "limit"),
    ("get", "/api/coverage?as_of=yesterday-ish", None, "as_of"),
    ("get", "/api/backtests?ids=1,x", None, "ids"),
    ("get", "/api/reports/doc?path=../CLAUDE.md", None, "path"),
    ("post", "/api/backfill", {"symbol": "BTCUSDT", "timeframe": "7m"}, "timeframe"),
    ("post", "/api/backfill", {"timeframe": "1h"}, "symbol"),
    ("post", "/api/backfill", {"symbol": "BTC USDT;"}, "symbol"),
])
def test_bad_parameters_get_422_naming_the_parameter(client, method, url, payload, param):
    r = client.get(url) if method == "get" else client.post(url, json=payload)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["parameter"] == param and repr(param) in body["detail"]


def test_dictionaries_have_the_same_keys_and_templates_use_only_known_keys():
    assert set(EN) == set(ZH)
    assert all(ZH[k].strip() for k in ZH)
    tpl = Path(__file__).resolve().parents[2] / "services" / "ats" / "api" / "templates"
    used = set()
    for f in tpl.glob("*.html"):
        text = f.read_text()
        used |= set(re.findall(r"""(?:t|L)\('([a-z0-9_.]+)'\)""", text))
        used |= set(re.findall(r'data-i18n="([a-z0-9_.]+)"', text))
    assert used and used <= set(EN), used - set(EN)


@pytest.mark.parametrize("path", PAGES + ("/assets?account=family", "/reports?path=reports/weekly/2021-05-24_weekly.md"))
def test_no_untranslated_label_on_pages_rendered_in_chinese(client, path):
    sep = "&" if "?" in path else "?"
    r = client.get(f"{path}{sep}lang=zh")
    assert r.status_code == 200, r.text
    # document bodies (KB articles, reports, plans) are content in their own language, not labels
    p = _parse(re.sub(r'<article class="md".*?</article>', "", r.text, flags=re.S))
    assert p.i18n, "the page has no translatable label"
    for key, text in p.i18n:
        assert text.strip() == ZH[key], (key, text)
    english_only = {v for k, v in EN.items() if v != ZH[k]}
    leaked = [t for t in p.texts if t in english_only or t.rstrip(":") in english_only]
    assert not leaked, leaked
    assert "资产" in r.text and "English" in r.text  # nav label and the toggle back


def test_kb_reports_backtests_events_read_their_sources(client, dash_db_url):
    with _conn(dash_db_url) as c:
        counts = {r["status"]: r["n"] for r in c.execute("SELECT status, count(*) AS n FROM kb_registry GROUP BY 1")}
        n_bt = c.execute("SELECT count(*) AS n FROM backtest_runs").fetchone()["n"]
        art = c.execute("SELECT article_path FROM kb_registry WHERE status='active' ORDER BY 1 LIMIT 1").fetchone()
    st = client.get("/api/kb/status").json()
    assert {k: v for k, v in st["counts"].items() if v} == counts and counts
    assert len(client.get("/api/kb/articles").json()["articles"]) == sum(counts.values())
    page = client.get("/kb", params={"article": art["article_path"]})
    assert page.status_code == 200 and "<h1>" in page.text or "<h2>" in page.text
    docs = client.get("/api/reports").json()["documents"]
    names = [d["name"] for d in docs if d["kind"] == "report"]
    assert names == sorted(names, reverse=True) and any(d["kind"] == "plan" for d in docs)
    weekly = client.get("/api/reports/doc", params={"path": "reports/weekly/2021-05-24_weekly.md"}).json()
    twin = json.loads((ROOT / "reports/weekly/2021-05-24_weekly.json").read_text())
    figs = dict(weekly["figures"])
    scalars = {k: v for k, v in twin.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert scalars and all(figs[k] == v for k, v in scalars.items() if k in figs) and set(scalars) & set(figs)
    bts = client.get("/api/backtests").json()["runs"]
    assert len(bts) == n_bt == 2
    ids = ",".join(str(b["backtest_id"]) for b in bts)
    cmp_ = client.get("/api/backtests", params={"ids": ids}).json()["comparison"]
    assert set(cmp_) == {str(b["backtest_id"]) for b in bts}
    one = client.get(f"/api/backtests/{bts[0]['backtest_id']}").json()
    assert one["trades"] and one["equity"]["ts"] and one["blocked"]
    ev = client.get("/api/events", params={"kind": "breaker", "limit": 50}).json()["events"]
    assert ev and all(e["event_type"].startswith("breaker") for e in ev)


def test_events_show_cron_runs_with_mode_exit_cost_and_denials(client, dash_db_url):
    from ats.db.events import record_event

    with _conn(dash_db_url) as c:
        record_event(c, "cron", "cron_run", severity="warning", account_id=None,
                     payload={"task": "weekly-report", "mode": "claude", "exit_code": 0, "total_cost_usd": 0.0421,
                              "permission_denials": [{"tool_name": "Bash"}], "num_turns": 3})
    ev = client.get("/api/events", params={"kind": "cron"}).json()["events"]
    assert ev and all(e["component"] == "cron" for e in ev)
    page = client.get("/events", params={"kind": "cron"}).text
    assert "weekly-report mode=claude exit=0 cost=$0.0421 denials=1" in page
    assert "breaker_tripped" not in page


def test_coverage_is_ats_data_coverage(client, dash_db_url):
    out = run_cli("data", "coverage", "--json", "--as-of", "2021-07-18", env={"ATS_DATABASE_URL": dash_db_url})
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    api = client.get("/api/coverage", params={"as_of": "2021-07-18"}).json()
    rows = cli if isinstance(cli, list) else cli.get("series", cli.get("rows"))
    assert [(r["symbol"], r["timeframe"], r["status"], r["missing"]) for r in api["rows"]] == \
           [(r["symbol"], r["timeframe"], r["status"], r["missing"]) for r in rows]


def test_token_is_required_on_every_request_when_set(dash_db_url):
    with TestClient(create_app(dash_db_url, root=ROOT, token="s3cret-token")) as c:
        assert c.get("/api/pnl").status_code == 401
        assert c.get("/assets").status_code == 401
        assert c.get("/api/pnl", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/pnl", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    out = run_cli("dashboard", "--host", "0.0.0.0", "--port", "1", env={"ATS_DASHBOARD_TOKEN": "",
                                                                       "ATS_DATABASE_URL": dash_db_url})
    assert out.returncode == 2 and "ATS_DASHBOARD_TOKEN" in out.stderr


def test_openapi_lists_the_api_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/pnl", "/api/positions", "/api/coverage", "/api/kb/status", "/api/kb/articles", "/api/reports",
              "/api/backtests", "/api/events", "/api/backfill"):
        assert p in paths, p
    assert client.get("/docs").status_code == 200
    js = client.get("/vendor/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000

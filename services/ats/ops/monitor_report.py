"""Live monitor, the audit report: the JSONL trail of one monitor session -> ``reports/live-monitor/<account>/
<UTC timestamp>.md`` and its ``.json`` twin.

The report states, per check, what was expected and what was observed (first and last poll), then every distinct
deviation (by ``id``, most severe first) with when it was first and last seen, in how many polls, and its evidence
rows as the poll recorded them (first sighting; the last one too when it differs). It ends with an empty
``## Agent assessment`` section that the ats-live-monitor-agent fills from the trail. Nothing here reads the
database: the trail is the record.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from .. import paths
from ..forensics.sqlfmt import md_table
from .monitor import CHECKS, SEVERITIES

ASSESSMENT_HEADING = "## Agent assessment"
ASSESSMENT_PLACEHOLDER = ("<!-- ats-live-monitor-agent: write the judgement here from the JSONL trail (is each "
                          "deviation real, its cause, its money at risk, what the operator should do). -->")


def reports_dir(account: str) -> Path:
    """``<reports>/live-monitor/<account>/`` (``<reports>`` = ``account_path('reports', 'default')``, i.e.
    ``<root>/reports``: every account's audits sit under one ``live-monitor/`` directory, named by account)."""
    return paths.account_path("reports", paths.DEFAULT_ACCOUNT) / "live-monitor" / account


def synthesize(lines: list[dict], *, account: str, session: dict | None = None) -> dict:
    """The report document of a trail.

    Parameters
    ----------
    lines : list of dict
        Trail lines (``ats.ops.monitor.poll`` output plus ``monitor``), oldest first.
    account : str
        The watched account.
    session : dict, optional
        ``monitor.json`` of the session (pid, interval, started_at, stopped_at).

    Returns
    -------
    dict
        ``{account, generated_at, session, polls, first_poll, last_poll, runs, checks: {name: {expected,
        first_observed, last_observed, polls_with_deviations}}, deviations: [{id, check, kind, severity, message,
        first_seen, last_seen, polls, evidence_first, evidence_last}], counts: {severity: distinct n}}``.
    """
    devs: dict[str, dict] = {}
    checks: dict[str, dict] = {}
    for ln in lines:
        for name, c in (ln.get("checks") or {}).items():
            e = checks.setdefault(name, {"expected": c.get("expected"), "first_observed": c.get("observed"),
                                         "polls_with_deviations": 0})
            e["last_observed"] = c.get("observed")
            e["polls_with_deviations"] += 1 if c.get("deviations") else 0
        for d in ln.get("deviations") or []:
            cur = devs.get(d["id"])
            if cur is None:
                devs[d["id"]] = cur = {"id": d["id"], "check": d["check"], "kind": d["kind"],
                                       "severity": d["severity"], "message": d["message"], "first_seen": ln["ts"],
                                       "polls": 0, "evidence_first": d.get("evidence") or []}
            cur["last_seen"], cur["polls"] = ln["ts"], cur["polls"] + 1
            cur["last_message"], cur["evidence_last"] = d["message"], d.get("evidence") or []
            if SEVERITIES.index(d["severity"]) > SEVERITIES.index(cur["severity"]):
                cur["severity"] = d["severity"]
    ordered = sorted(devs.values(), key=lambda d: (-SEVERITIES.index(d["severity"]), d["first_seen"], d["id"]))
    for d in ordered:
        if d["evidence_last"] == d["evidence_first"]:
            d["evidence_last"] = None
    runs = []
    for ln in lines:
        if ln.get("run_id") and ln["run_id"] not in runs:
            runs.append(ln["run_id"])
    return {"account": account, "generated_at": datetime.now(timezone.utc).isoformat(), "session": session or {},
            "polls": len(lines), "first_poll": lines[0]["ts"] if lines else None,
            "last_poll": lines[-1]["ts"] if lines else None, "runs": runs,
            "checks": {n: checks[n] for n in [*CHECKS, *sorted(set(checks) - set(CHECKS))] if n in checks},
            "deviations": ordered,
            "counts": {s: sum(d["severity"] == s for d in ordered) for s in SEVERITIES}}


def render(doc: dict) -> str:
    """The markdown of a :func:`synthesize` document."""
    s = doc["session"]
    out = [f"# Live monitor audit: account {doc['account']}", "",
           f"- Polls: {doc['polls']} from {doc['first_poll'] or '-'} to {doc['last_poll'] or '-'} (wall clock, UTC)",
           f"- Monitor session: {s.get('session', '-')} (pid {s.get('pid', '-')}, every {s.get('interval_s', '-')} s, "
           f"started {s.get('started_at', '-')}, stopped {s.get('stopped_at') or '-'})",
           f"- Live run(s): {', '.join(doc['runs']) or 'none'}",
           "- Distinct deviations: " + (", ".join(f"{n} {k}" for k, n in doc["counts"].items() if n) or "none"),
           f"- Trail: `logs/live-monitor/{doc['account']}/<YYYY-MM-DD>.jsonl`; JSON twin of this report beside it.",
           "", "## Expected vs observed", ""]
    rows = []
    for name, c in doc["checks"].items():
        rows.append([name, c["expected"], _brief(c.get("first_observed")), _brief(c.get("last_observed")),
                     f"{c['polls_with_deviations']} / {doc['polls']}"])
    out += [md_table(["check", "expected", "observed (first poll)", "observed (last poll)", "polls deviating"], rows)
            if rows else "(no poll recorded)", "", "## Deviations", ""]
    if not doc["deviations"]:
        out += ["None: every poll matched what the configuration and the loop's contract expect.", ""]
    for d in doc["deviations"]:
        out += [f"### [{d['severity']}] {d['id']}", "", d["message"], "",
                f"- check `{d['check']}`, kind `{d['kind']}`; first seen {d['first_seen']}, last seen "
                f"{d['last_seen']}, in {d['polls']} poll(s)"]
        if d.get("last_message") and d["last_message"] != d["message"]:
            out.append(f"- last poll said: {d['last_message']}")
        out += ["", "Evidence (first sighting):", "", *_evidence(d["evidence_first"]), ""]
        if d.get("evidence_last"):
            out += ["Evidence (last sighting):", "", *_evidence(d["evidence_last"]), ""]
    out += [ASSESSMENT_HEADING, "", ASSESSMENT_PLACEHOLDER, ""]
    return "\n".join(out)


def _brief(obs, limit: int = 300) -> str:
    if obs is None:
        return "-"
    text = json.dumps(obs, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _evidence(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    out = []
    for r in rows:
        table = r.get("_table", "row")
        cols = [k for k in r if k != "_table"]
        out += [f"`{table}`", "", md_table(cols, [[_cell(r[k]) for k in cols]]), ""]
    return out


def _cell(v) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), default=str)
    return "NULL" if v is None else str(v)


def write_report(lines: list[dict], *, account: str, session: dict | None = None,
                 out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write the report of ``lines`` as ``<UTC timestamp>.md`` + ``.json`` under :func:`reports_dir`.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The markdown and JSON paths. The files are written to temporary names and renamed, so a failure leaves
        no half report.
    """
    doc = synthesize(lines, account=account, session=session)
    d = out_dir or reports_dir(account)
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    md, js = d / f"{stem}.md", d / f"{stem}.json"
    n = 1
    while md.exists() or js.exists():
        n += 1
        md, js = d / f"{stem}-{n}.md", d / f"{stem}-{n}.json"
    tmp_md, tmp_js = md.with_name(md.name + ".tmp"), js.with_name(js.name + ".tmp")
    tmp_js.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    tmp_md.write_text(render(doc), encoding="utf-8")
    tmp_js.replace(js)
    tmp_md.replace(md)
    return md, js

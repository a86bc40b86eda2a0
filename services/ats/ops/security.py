"""`ats security audit`: the deterministic core of the security-monitor agent.

Checks, each yielding :class:`Finding` rows with evidence (``file:line``, ``system_events.event_id``, a grant,
a settings key). A secret is never printed: evidence shows ``<first 4 chars>…(<length> chars)``.

secrets        values of the secret variables (:data:`SECRET_VARS`, read from the environment and the env
               files) and generic key patterns (:data:`PATTERNS`) in ``logs/``, ``reports/`` and
               ``system_events.payload``
env_files      every env file (``.env``, ``.env.*`` at the root, ``/etc/ats/ats.env``, ``$ATS_ENV_FILE``) is
               mode 0600 (no group/other bits)
readonly_role  ``ats_readonly`` has no privilege beyond what the migrations grant it (SELECT, USAGE, CONNECT):
               no INSERT/UPDATE/DELETE/TRUNCATE/REFERENCES/TRIGGER, no CREATE/TEMP, no superuser-like role
               attribute, no membership of pg_read_server_files & co., none of the functions the migrations
               REVOKE (pg_read_file, lo_import, ...) executable, ``default_transaction_read_only`` on
mcp_writes     ``.mcp.json`` does not start ats-postgres with ``--allow-writes`` / ``ATS_MCP_ALLOW_WRITES=1``
               (headless runs add it per task); the variable is not set in the environment or env files
dashboard      the dashboard binds loopback (``ATS_DASHBOARD_HOST`` / setting ``dashboard.host``, default
               127.0.0.1) or has ``ATS_DASHBOARD_TOKEN`` of at least 16 characters
claude_settings ``.claude/settings.json`` deny list holds :data:`EXPECTED_DENY`; no bare Bash/Write/Edit allow;
               the PreToolUse hook ``.claude/hooks/ats-hook`` is registered for Write|Edit

Severity: ``high`` (a secret exposed or a privilege that breaks a rule: exit 1), ``medium``, ``low``, ``info``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..paths import logs_dir, project_root, reports_dir

SECRET_VARS = ("BYBIT_API_KEY", "BYBIT_API_SECRET", "ALPACA_API_KEY", "ALPACA_SECRET_KEY", "ANTHROPIC_API_KEY",
               "ATS_DASHBOARD_TOKEN")
#: (name, Python regex, severity); also run in PostgreSQL (ARE syntax) over system_events.payload
PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("anthropic key", r"sk-ant-[A-Za-z0-9_-]{20,}", "high"),
    ("private key block", r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "high"),
    ("AWS access key", r"AKIA[0-9A-Z]{16}", "high"),
    ("GitHub token", r"gh[pousr]_[A-Za-z0-9]{36,}", "high"),
    ("credential assignment", r"(api[_-]?key|api[_-]?secret|secret[_-]?key|password|token)[\"']?\s*[:=]\s*[\"']?"
                              r"[A-Za-z0-9/+_-]{20,}", "medium"),
)
MIN_SECRET_LEN = 8
EXPECTED_DENY = (
    "Bash(rm -rf:*)", "Bash(sudo:*)", "Bash(git push --force:*)", "Bash(git push -f:*)",
    "Bash(git push --force-with-lease:*)", "Bash(git reset --hard:*)", "Bash(git clean:*)",
    "Bash(git branch -D:*)", "Bash(dropdb:*)", "Bash(ats db down:*)", "Bash(psql * DROP *)",
    "Bash(psql * TRUNCATE *)", "Bash(psql * DELETE FROM *)", "Edit(/.git/**)", "Read(/.env)", "Read(/.env.*)",
)
SERVER_FILE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
                     "pg_read_all_data", "pg_write_all_data", "pg_signal_backend", "pg_monitor", "pg_read_all_settings")
ROLE = "ats_readonly"
SEVERITIES = ("high", "medium", "low", "info")


@dataclass
class Finding:
    """One row of the audit.

    Parameters
    ----------
    check : str
        Check name (``secrets``, ``env_files``, ``readonly_role``, ``mcp_writes``, ``dashboard``,
        ``claude_settings``).
    severity : str
        ``high`` | ``medium`` | ``low`` | ``info``.
    title : str
        One line saying what is wrong.
    evidence : list of str
        Where: ``path:line``, ``system_events.event_id=N``, a grant row, a settings key (secrets redacted).
    fix : str
        What the operator should do.
    """

    check: str
    severity: str
    title: str
    evidence: list[str] = field(default_factory=list)
    fix: str = ""


@dataclass
class AuditConfig:
    """Where the audit looks (defaults: this project; tests point it at a temporary tree)."""

    root: Path = field(default_factory=project_root)
    logs: Path | None = None
    reports: Path | None = None
    env_files: list[Path] | None = None
    db_url: str | None = None
    check_db: bool = True
    environ: dict | None = None

    def env(self) -> dict:
        """The environment the audit reads (``os.environ`` unless given)."""
        return dict(os.environ) if self.environ is None else self.environ


def redact(value: str) -> str:
    """``abcd…(40 chars)``: enough to recognise a secret, never enough to use it."""
    return f"{value[:4]}…({len(value)} chars)"


# ---- env files and secret values ----------------------------------------------------------------------

def env_file_paths(cfg: AuditConfig) -> list[Path]:
    """The env files that exist: root ``.env`` / ``.env.*``, /etc/ats/ats.env, ``$ATS_ENV_FILE``."""
    if cfg.env_files is not None:
        return [p for p in cfg.env_files if p.is_file()]
    cands = [cfg.root / ".env", *sorted(cfg.root.glob(".env.*")), Path("/etc/ats/ats.env")]
    if cfg.env().get("ATS_ENV_FILE"):
        cands.append(Path(cfg.env()["ATS_ENV_FILE"]))
    return [p for p in dict.fromkeys(cands) if p.is_file() and not p.name.endswith(".example")]


def parse_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` prefix and quotes allowed, ``#`` comments skipped)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        out[key.strip()] = value.strip().strip("'\"")
    return out


def secret_values(cfg: AuditConfig) -> dict[str, str]:
    """``{value: "VAR (source)"}`` of every secret variable set in the environment or an env file."""
    found: dict[str, str] = {}
    for var in SECRET_VARS:
        v = cfg.env().get(var, "")
        if len(v) >= MIN_SECRET_LEN:
            found.setdefault(v, f"{var} (environment)")
    for path in env_file_paths(cfg):
        for var, v in parse_env_file(path).items():
            if var in SECRET_VARS and len(v) >= MIN_SECRET_LEN:
                found.setdefault(v, f"{var} ({path})")
    return found


def check_env_files(cfg: AuditConfig) -> list[Finding]:
    """A finding for every env file readable or writable by group/other (mode not 0600 or stricter)."""
    out = []
    for path in env_file_paths(cfg):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            out.append(Finding("env_files", "high", f"env file {path} is mode {mode:04o}, not 0600",
                               [f"{path}: mode {mode:04o}, owner uid {path.stat().st_uid}"],
                               f"chmod 600 {path}"))
    return out


# ---- secrets in files and events ----------------------------------------------------------------------

def _is_text(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return b"\0" not in f.read(4096)
    except OSError:
        return False


def scan_file(path: Path, secrets: dict[str, str]) -> list[Finding]:
    """Findings for each line of ``path`` holding a secret value or a generic key pattern."""
    out = []
    compiled = [(n, re.compile(rx, re.IGNORECASE if n == "credential assignment" else 0), sev)
                for n, rx, sev in PATTERNS]
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            for value, source in secrets.items():
                if value in line:
                    out.append(Finding("secrets", "high", f"the value of {source.split()[0]} is written in {path.name}",
                                       [f"{path}:{lineno}: {redact(value)} from {source}"],
                                       "remove the line (rotate the file), rotate the key at the venue, find the "
                                       "code path that logged it"))
            for name, rx, sev in compiled:
                m = rx.search(line)
                if m and not any(v in line for v in secrets):
                    out.append(Finding("secrets", sev, f"{name} pattern in {path.name}",
                                       [f"{path}:{lineno}: {redact(m.group(0))}"],
                                       "check whether it is a real credential; if so remove and rotate it"))
    return out


def check_files(cfg: AuditConfig, secrets: dict[str, str]) -> list[Finding]:
    """Scan every text file under the logs and reports directories."""
    out = []
    for base in (cfg.logs or logs_dir(), cfg.reports or reports_dir()):
        if not base.is_dir():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            if _is_text(path):
                out.extend(scan_file(path, secrets))
    return out


def check_events(conn, secrets: dict[str, str]) -> list[Finding]:
    """Secret values and the strong generic patterns in ``system_events.payload`` (as text)."""
    out = []
    for value, source in secrets.items():
        rows = conn.execute("SELECT event_id, component, event_type FROM system_events "
                            "WHERE strpos(payload::text, %s) > 0 ORDER BY event_id LIMIT 20", (value,)).fetchall()
        for r in rows:
            out.append(Finding("secrets", "high", f"the value of {source.split()[0]} is stored in system_events",
                               [f"system_events.event_id={r['event_id']} ({r['component']}/{r['event_type']}): "
                                f"{redact(value)} from {source}"],
                               "system_events is append-only: rotate the key; record the incident"))
    for name, rx, sev in PATTERNS:
        if sev != "high":
            continue
        rows = conn.execute("SELECT event_id, component, event_type, substring(payload::text from %s) AS hit "
                            "FROM system_events WHERE payload::text ~ %s ORDER BY event_id LIMIT 20",
                            (rx, rx)).fetchall()
        for r in rows:
            if any(v in (r["hit"] or "") for v in secrets):
                continue
            out.append(Finding("secrets", sev, f"{name} pattern in system_events",
                               [f"system_events.event_id={r['event_id']} ({r['component']}/{r['event_type']}): "
                                f"{redact(r['hit'] or '')}"], "check whether it is a real credential; rotate it"))
    return out


# ---- the read-only role -------------------------------------------------------------------------------

def migration_revoked_functions(root: Path) -> list[str]:
    """Function signatures the migrations ``REVOKE EXECUTE ... FROM PUBLIC`` (e.g. ``pg_read_file(text)``)."""
    sigs = []
    mig = root / "services" / "ats" / "db" / "migrations"
    for path in sorted(mig.glob("*.sql")):
        for m in re.finditer(r"REVOKE\s+EXECUTE\s+ON\s+FUNCTION\s+([\w.]+\([^)]*\))\s+FROM\s+PUBLIC",
                             path.read_text(encoding="utf-8"), re.IGNORECASE):
            sigs.append(m.group(1))
    return sigs


def check_readonly_role(conn, root: Path) -> list[Finding]:
    """Compare ``ats_readonly``'s privileges in this database with what the migrations grant it."""
    role = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit "
                        "FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
    if role is None:
        return [Finding("readonly_role", "medium", f"role {ROLE} does not exist", ["pg_roles"],
                        "run `ats db migrate` (migration 0001 creates it)")]
    out = []
    bad_attrs = [k for k in ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls") if role[k]]
    if bad_attrs:
        out.append(Finding("readonly_role", "high", f"{ROLE} has role attributes {', '.join(bad_attrs)}",
                           [f"pg_roles.{k} = true" for k in bad_attrs], f"ALTER ROLE {ROLE} NO<ATTRIBUTE>"))
    rows = conn.execute(
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
        "WHERE grantee = %s AND privilege_type <> 'SELECT' ORDER BY table_name, privilege_type", (ROLE,)).fetchall()
    if rows:
        out.append(Finding("readonly_role", "high",
                           f"{ROLE} holds {len(rows)} table privilege(s) beyond SELECT (migrations grant only SELECT)",
                           [f"GRANT {r['privilege_type']} ON {r['table_name']}" for r in rows[:20]],
                           f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA "
                           f"public FROM {ROLE}"))
    db = conn.execute("SELECT has_database_privilege(%s, current_database(), 'CREATE') AS c, "
                      "has_database_privilege(%s, current_database(), 'TEMP') AS t, "
                      "has_schema_privilege(%s, 'public', 'CREATE') AS s", (ROLE, ROLE, ROLE)).fetchone()
    # TEMP is medium: a read-only transaction cannot CREATE TEMP anyway, and CREATE DATABASE ... TEMPLATE does
    # not copy the database ACL that migration 0001 sets (a cloned database grants PUBLIC TEMP again)
    for key, what, sev in (("c", "CREATE on the database", "high"), ("t", "TEMP on the database", "medium"),
                           ("s", "CREATE on schema public", "high")):
        if db[key]:
            out.append(Finding("readonly_role", sev, f"{ROLE} has {what}", [f"has_*_privilege: {what}"],
                               f"REVOKE {what.split(' on ')[0]} ... FROM {ROLE} (and FROM PUBLIC)"))
    members = conn.execute(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s ORDER BY 1", (ROLE,)).fetchall()
    for m in members:
        sev = "high" if m["rolname"] in SERVER_FILE_ROLES else "medium"
        out.append(Finding("readonly_role", sev, f"{ROLE} is a member of {m['rolname']}",
                           [f"pg_auth_members: {ROLE} in {m['rolname']}"], f"REVOKE {m['rolname']} FROM {ROLE}"))
    for sig in migration_revoked_functions(root):
        try:
            ok = conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE') AS x", (ROLE, sig)).fetchone()["x"]
        except Exception:  # function absent on this server version
            conn.rollback()
            continue
        if ok:
            out.append(Finding("readonly_role", "high", f"{ROLE} may execute {sig} (the migrations revoke it)",
                               [f"has_function_privilege('{ROLE}', '{sig}', 'EXECUTE') = true"],
                               f"REVOKE EXECUTE ON FUNCTION {sig} FROM PUBLIC, {ROLE}"))
    settings = conn.execute("SELECT array_to_string(s.setconfig, ',') AS cfg FROM pg_db_role_setting s "
                            "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s AND s.setdatabase = 0",
                            (ROLE,)).fetchone()
    if not settings or "default_transaction_read_only=on" not in (settings["cfg"] or ""):
        out.append(Finding("readonly_role", "medium", f"{ROLE} does not default to read-only transactions",
                           [f"pg_db_role_setting for {ROLE}: {settings['cfg'] if settings else 'none'}"],
                           f"ALTER ROLE {ROLE} SET default_transaction_read_only = on"))
    return out


# ---- configuration files ------------------------------------------------------------------------------

def check_mcp_writes(cfg: AuditConfig) -> list[Finding]:
    """``--allow-writes`` / ``ATS_MCP_ALLOW_WRITES=1`` in .mcp.json (high) or the environment / env files (medium)."""
    out = []
    path = cfg.root / ".mcp.json"
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            return [Finding("mcp_writes", "medium", f".mcp.json is not valid JSON: {exc}", [str(path)])]
        for name, server in (doc.get("mcpServers") or {}).items():
            if "--allow-writes" in (server.get("args") or []) or "--allow-writes" in str(server.get("command", "")):
                out.append(Finding("mcp_writes", "high", f"MCP server {name} starts with --allow-writes",
                                   [f"{path}: mcpServers.{name}.args"],
                                   "remove --allow-writes: headless tasks add it per task when they need it"))
            if str((server.get("env") or {}).get("ATS_MCP_ALLOW_WRITES", "0")) == "1":
                out.append(Finding("mcp_writes", "high", f"MCP server {name} sets ATS_MCP_ALLOW_WRITES=1",
                                   [f"{path}: mcpServers.{name}.env.ATS_MCP_ALLOW_WRITES"], "remove it"))
    sources = [("environment", cfg.env())] + [(str(p), parse_env_file(p)) for p in env_file_paths(cfg)]
    for where, env in sources:
        if str(env.get("ATS_MCP_ALLOW_WRITES", "0")) == "1":
            out.append(Finding("mcp_writes", "medium", f"ATS_MCP_ALLOW_WRITES=1 in the {where}",
                               [f"{where}: ATS_MCP_ALLOW_WRITES=1"],
                               "every session started from it gets the MCP write tools; unset it"))
    return out


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_dashboard(cfg: AuditConfig, conn=None) -> list[Finding]:
    """The dashboard must bind loopback, or carry a token of at least 16 characters."""
    env = cfg.env()
    files = {k: v for p in env_file_paths(cfg) for k, v in parse_env_file(p).items()}
    host, source = env.get("ATS_DASHBOARD_HOST") or files.get("ATS_DASHBOARD_HOST"), "ATS_DASHBOARD_HOST"
    if not host and conn is not None:
        try:
            row = conn.execute("SELECT value FROM system_settings WHERE key = 'dashboard.host' "
                               "ORDER BY account_id LIMIT 1").fetchone()
            host, source = (row["value"] if row else None), "system_settings dashboard.host"
        except Exception:
            conn.rollback()
    host = host or "127.0.0.1"
    token = env.get("ATS_DASHBOARD_TOKEN") or files.get("ATS_DASHBOARD_TOKEN") or ""
    if host.strip("[]") in LOOPBACK or host.startswith("127."):
        return []
    if len(token) >= 16:
        return [Finding("dashboard", "info", f"dashboard binds {host} with a token", [f"{source}={host}"])]
    sev = "high"
    return [Finding("dashboard", sev, f"dashboard binds non-loopback {host} "
                                      f"{'with a short token' if token else 'without ATS_DASHBOARD_TOKEN'}",
                    [f"{source}={host}", f"ATS_DASHBOARD_TOKEN: {'set, ' + str(len(token)) + ' chars' if token else 'unset'}"],
                    "bind 127.0.0.1 (reach it over SSH) or set a random ATS_DASHBOARD_TOKEN (>= 16 chars) in a 0600 env file")]


def check_claude_settings(cfg: AuditConfig) -> list[Finding]:
    """``.claude/settings.json`` keeps :data:`EXPECTED_DENY` and grants no bare Bash/Write/Edit."""
    path = cfg.root / ".claude" / "settings.json"
    if not path.is_file():
        return [Finding("claude_settings", "high", ".claude/settings.json is missing", [str(path)],
                        "restore it from git")]
    try:
        perms = json.loads(path.read_text(encoding="utf-8")).get("permissions", {})
    except json.JSONDecodeError as exc:
        return [Finding("claude_settings", "high", f".claude/settings.json is not valid JSON: {exc}", [str(path)])]
    out = []
    missing = [r for r in EXPECTED_DENY if r not in perms.get("deny", [])]
    if missing:
        out.append(Finding("claude_settings", "high", f"{len(missing)} rule(s) missing from the deny list",
                           [f"{path}: permissions.deny lacks {r}" for r in missing], "restore them (git log -p)"))
    hooks = json.loads(path.read_text(encoding="utf-8")).get("hooks", {}).get("PreToolUse", [])
    guarded = [h for h in hooks if "ats-hook" in json.dumps(h.get("hooks", []))
               and {"Write", "Edit"} <= set(str(h.get("matcher", "")).split("|"))]
    if not guarded:
        out.append(Finding("claude_settings", "high", "the PreToolUse path hook (.claude/hooks/ats-hook) is not "
                           "registered for Write|Edit", [f"{path}: hooks.PreToolUse"],
                           "restore the hooks block (git log -p .claude/settings.json)"))
    broad = [r for r in perms.get("allow", []) if r in ("Bash", "Write", "Edit", "Bash(*)", "Edit(/**)", "Write(/**)")]
    if broad:
        out.append(Finding("claude_settings", "high", "broad allow rule(s)", [f"{path}: allow {r}" for r in broad],
                           "use narrow rules such as Bash(ats report weekly:*)"))
    return out


# ---- the audit ----------------------------------------------------------------------------------------

def audit(cfg: AuditConfig | None = None) -> list[Finding]:
    """Run every check; findings sorted by severity (high first). Database checks need ``cfg.check_db``.

    Returns
    -------
    list of Finding
        An ``info`` finding says when the database could not be reached (its checks were skipped).
    """
    cfg = cfg or AuditConfig()
    secrets = secret_values(cfg)
    findings = check_env_files(cfg) + check_files(cfg, secrets) + check_mcp_writes(cfg) + check_claude_settings(cfg)
    conn = None
    if cfg.check_db:
        try:
            from ..db.connection import connect

            conn = connect(cfg.db_url, autocommit=True)
        except Exception as exc:
            findings.append(Finding("readonly_role", "info", "database not reachable: role and event checks skipped",
                                    [str(exc).splitlines()[0][:200]]))
    try:
        if conn is not None:
            findings += check_events(conn, secrets) + check_readonly_role(conn, cfg.root)
        findings += check_dashboard(cfg, conn)
    finally:
        if conn is not None:
            conn.close()
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def render_markdown(findings: list[Finding], at: datetime) -> str:
    """The report: a summary line, then one table row per finding with its evidence."""
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    lines = [f"# Security audit {at.strftime('%Y-%m-%d %H:%M')} UTC", "",
             "Summary: " + ", ".join(f"{n} {s}" for s, n in counts.items()), "",
             "| # | severity | check | finding | evidence | fix |", "| --- | --- | --- | --- | --- | --- |"]
    for i, f in enumerate(findings, 1):
        ev = "<br>".join(e.replace("|", "\\|") for e in f.evidence)
        lines.append(f"| {i} | {f.severity} | {f.check} | {f.title.replace('|', '/')} | {ev} | {f.fix.replace('|', '/')} |")
    if not findings:
        lines.append("| - | - | - | no findings | - | - |")
    return "\n".join(lines) + "\n"


def write_report(findings: list[Finding], directory: Path | None = None, at: datetime | None = None) -> Path:
    """Write ``reports/security/<YYYY-MM-DD_HHMM>_security-audit.md`` and its ``.json`` twin; returns the md path."""
    at = at or datetime.now(timezone.utc)
    d = directory or reports_dir() / "security"
    d.mkdir(parents=True, exist_ok=True)
    md = d / f"{at.strftime('%Y-%m-%d_%H%M')}_security-audit.md"
    md.write_text(render_markdown(findings, at), encoding="utf-8")
    md.with_suffix(".json").write_text(json.dumps({"at": at.isoformat(timespec="seconds"),
                                                   "findings": [asdict(f) for f in findings]}, indent=2) + "\n",
                                       encoding="utf-8")
    return md

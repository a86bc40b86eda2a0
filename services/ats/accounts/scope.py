"""Binding a process to one account, and the database scoping that makes the binding structural.

A process is bound at start (``--account ID`` or ``ATS_ACCOUNT``; :func:`bind`). For every account except
``default``, :func:`scoped_url` turns the owner DSN into one that sets the role ``ats_acct_<id>`` at connection
start; migration 0130 gives every account-scoped table a row-level-security policy keyed on
``account_roles.role_name = current_user``, so every query of the process sees only its account's rows and a
write for another account fails with "new row violates row-level security policy" -- whatever the caller's SQL
says. The account's read-only MCP server logs in as ``ats_ro_<id>`` (:func:`readonly_role`), a non-superuser that
cannot ``SET ROLE`` away. The ``default`` account keeps today's owner connection (unbound, admin).

COPY FROM is refused by PostgreSQL on tables with row-level security; writers that COPY check
:func:`is_scoped` and stage through a temporary table (``INSERT ... SELECT`` is checked by the policy).
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import UsageError
from ..paths import DEFAULT_ACCOUNT, bound_account

ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def validate_account_id(account: str) -> str:
    """Return ``account`` if it is a valid id (``[a-z0-9][a-z0-9_-]{0,31}``), else raise UsageError naming it."""
    if not isinstance(account, str) or not ID_RE.fullmatch(account):
        raise UsageError(f"invalid account id {account!r}: use 1-32 of a-z, 0-9, '-', '_' (starting with a letter "
                         "or digit)")
    return account


def bind(account: str | None) -> str:
    """Bind this process (and the subprocesses it starts) to ``account``; returns the bound id.

    ``None`` keeps the current binding (``ATS_ACCOUNT`` or ``default``). Sets ``ATS_ACCOUNT`` so every later
    :func:`ats.paths.account_path`, :func:`scoped_url` and child process agrees.
    """
    acct = validate_account_id(account) if account else bound_account()
    os.environ["ATS_ACCOUNT"] = acct
    return acct


def app_role(account: str) -> str:
    """Database role of account ``account``'s processes: ``ats_acct_<id>`` ('-' becomes '_')."""
    return "ats_acct_" + validate_account_id(account).replace("-", "_")


def readonly_role(account: str) -> str:
    """Login role of account ``account``'s read-only MCP server: ``ats_ro_<id>`` (``ats_readonly`` for default)."""
    if account == DEFAULT_ACCOUNT:
        return "ats_readonly"
    return "ats_ro_" + validate_account_id(account).replace("-", "_")


def is_scoped(account: str | None = None) -> bool:
    """True when connections of ``account`` (default: the bound one) are filtered by row-level security."""
    return (account or bound_account()) != DEFAULT_ACCOUNT


def scoped_url(url: str, account: str | None = None) -> str:
    """``url`` with ``options=-c role=ats_acct_<id>`` added for a non-default account; unchanged for default.

    Works for URL DSNs (``postgresql://...``) and key=value DSNs. Existing ``options`` are kept.
    """
    acct = account or bound_account()
    if acct == DEFAULT_ACCOUNT:
        return url
    opt = f"-c role={app_role(acct)}"
    if "://" not in url:
        m = re.search(r"options='([^']*)'", url)
        if m:
            return url.replace(m.group(0), f"options='{m.group(1)} {opt}'")
        return f"{url} options='{opt}'"
    parts = urlsplit(url)
    q = parse_qsl(parts.query, keep_blank_values=True)
    have = [v for k, v in q if k == "options"]
    q = [(k, v) for k, v in q if k != "options"] + [("options", " ".join([*have, opt]).strip())]
    return urlunsplit(parts._replace(query=urlencode(q, quote_via=quote)))

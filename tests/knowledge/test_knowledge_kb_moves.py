"""A source that moves (a module that becomes a package) keeps its KB article instead of colliding with it."""

from __future__ import annotations

import pytest

from ats.knowledge import kb

from _kb_helpers import make_tree

STORE = "services/ats/widgets/store.py"
PKG = "services/ats/widgets/store/__init__.py"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "proj")
    monkeypatch.setenv("ATS_HOME", str(root))
    return root


def test_module_that_becomes_a_package_keeps_its_article(tree, fresh_conn):
    kb.scan(fresh_conn)
    kb.update(fresh_conn)
    art = fresh_conn.execute("SELECT article_path FROM kb_registry WHERE source_path=%s", (STORE,)).fetchone()
    (tree / PKG).parent.mkdir(parents=True)
    (tree / STORE).rename(tree / PKG)  # ats.widgets.store: the same module name, now a package
    s = kb.scan(fresh_conn)  # before the fix: UniqueViolation on kb_registry_article
    rows = {r["source_path"]: r for r in fresh_conn.execute("SELECT * FROM kb_registry")}
    assert STORE not in rows and rows[PKG]["article_path"] == art["article_path"]
    assert rows[PKG]["status"] == "pending" and STORE not in s["orphaned"]
    u = kb.update(fresh_conn)
    assert not u["failed"] and kb.parse_front_matter(
        (tree / art["article_path"]).read_text())[0]["source_path"] == PKG

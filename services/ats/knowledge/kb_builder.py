"""The deterministic knowledge-base article builder: facts read from the code with ``ast`` and ``tokenize``.

For a Python module an article holds: the module docstring; the public API (``__all__`` or every top-level name
without a leading underscore) with signatures and docstrings; constants; the CLI commands it registers
(``add_parser("name", help=...)``); the project modules it imports and the ones that import it; the tables it
reads and writes (found in its SQL string literals, matched against the tables the migrations create);
invariants marked in comments (lines with *invariant*, *never*, *must* or *always*); and the tests that import
it. SQL migrations list the tables, indexes and triggers they create; markdown agents / slash commands their
front matter, headings and rules; shell and TOML files their comment header.

The output depends only on the source tree (no timestamps), so rebuilding an unchanged source gives the same
article body.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from functools import cached_property
from pathlib import Path

from .kb import iter_sources, module_name

_INVARIANT_RE = re.compile(r"\b(invariant|never|must|always)\b", re.IGNORECASE)
_SQL_WRITE_RE = re.compile(
    r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?|ALTER\s+TABLE|COPY|"
    r"CREATE\s+(?:UNLOGGED\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?)\s+\"?([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_SQL_READ_RE = re.compile(r"\b(?:FROM|JOIN)\s+\"?([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_CREATE_TABLE_RE = re.compile(r"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?([A-Za-z_][A-Za-z0-9_]*)",
                              re.IGNORECASE)
_MAX_DOC = 1800  # characters of a function's docstring quoted in an article


class ProjectIndex:
    """Parsed view of the project used while building articles: module names, ASTs, the import graph, test
    imports and the set of known tables (from ``services/ats/db/migrations/*.sql`` and SQL sources)."""

    def __init__(self, root: Path):
        self.root = root
        self._ast: dict[str, ast.Module | None] = {}
        self._text: dict[str, str] = {}

    def text(self, rel: str) -> str:
        if rel not in self._text:
            self._text[rel] = (self.root / rel).read_text(encoding="utf-8", errors="replace")
        return self._text[rel]

    def tree(self, rel: str) -> ast.Module | None:
        if rel not in self._ast:
            try:
                self._ast[rel] = ast.parse(self.text(rel), filename=rel)
            except SyntaxError:
                self._ast[rel] = None
        return self._ast[rel]

    @cached_property
    def sources(self) -> list[str]:
        return sorted(rel for rel, _ in iter_sources(self.root))

    @cached_property
    def py_modules(self) -> dict[str, str]:
        """{dotted module name: relative path} of the Python sources."""
        return {module_name(rel): rel for rel in self.sources if rel.endswith(".py")}

    @cached_property
    def imports(self) -> dict[str, set[str]]:
        """{module: project modules it imports} (relative imports resolved)."""
        return {m: self._resolve_imports(rel, m) for m, rel in self.py_modules.items()}

    @cached_property
    def imported_by(self) -> dict[str, set[str]]:
        rev: dict[str, set[str]] = {m: set() for m in self.py_modules}
        for m, deps in self.imports.items():
            for d in deps:
                if d in rev and d != m:
                    rev[d].add(m)
        return rev

    @cached_property
    def test_imports(self) -> dict[str, set[str]]:
        """{module: test files (relative) that import it}."""
        out: dict[str, set[str]] = {}
        tdir = self.root / "tests"
        if not tdir.is_dir():
            return out
        for p in sorted(tdir.rglob("*.py")):
            rel = p.relative_to(self.root).as_posix()
            for m in self._resolve_imports(rel, "tests." + p.stem):
                out.setdefault(m, set()).add(rel)
        return out

    @cached_property
    def known_tables(self) -> set[str]:
        names: set[str] = set()
        for rel in self.sources:
            if rel.endswith(".sql"):
                names |= {n.lower() for n in _CREATE_TABLE_RE.findall(self.text(rel))}
        return names

    def _resolve_imports(self, rel: str, mod: str) -> set[str]:
        tree = self.tree(rel)
        if tree is None:
            return set()
        is_pkg = rel.endswith("__init__.py")
        pkg_parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    found.add(a.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = pkg_parts[: len(pkg_parts) - (node.level - 1)] if node.level > 1 else pkg_parts
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base:
                    found.add(base)
                for a in node.names:
                    found.add(f"{base}.{a.name}" if base else a.name)
        known = self.py_modules
        out = set()
        for name in found:
            # `import ats.db.migrate` or `from ats.db import migrate`: the longest known prefix
            parts = name.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in known:
                    out.add(cand)
                    break
        out.discard(mod)
        return out


def _sig(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    args = ast.unparse(fn.args)
    ret = f" -> {ast.unparse(fn.returns)}" if fn.returns is not None else ""
    prefix = "async " if isinstance(fn, ast.AsyncFunctionDef) else ""
    return f"{prefix}{fn.name}({args}){ret}"


def _doc(node, limit: int = _MAX_DOC) -> str:
    d = ast.get_docstring(node) or ""
    if len(d) > limit:
        d = d[:limit].rsplit("\n", 1)[0] + "\n..."
    return d


def _quote(text: str) -> list[str]:
    return [("> " + line) if line.strip() else ">" for line in text.splitlines()]


def _public(tree: ast.Module) -> list:
    names = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                names = set(ast.literal_eval(node.value))
            except ValueError:
                names = None
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if (names is not None and node.name in names) or (names is None and not node.name.startswith("_")):
                out.append(node)
    return out


def _constants(tree: ast.Module) -> list[str]:
    out = []
    for node in tree.body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target = node.target.id
        if target and re.fullmatch(r"[A-Z][A-Z0-9_]+", target):
            val = ast.unparse(node.value)
            if len(val) > 160:
                val = val[:157] + "..."
            out.append(f"`{target} = {val}`")
    return out


def _strings(tree: ast.Module) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append(node.value)
    return out


def sql_tables(strings: list[str], known: set[str]) -> tuple[list[str], list[str]]:
    """(tables read, tables written) named in SQL string literals, restricted to ``known`` tables when given."""
    reads, writes = set(), set()
    for s in strings:
        if not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|TRUNCATE|COPY|WITH)\b", s):
            continue
        w = {m.lower() for m in _SQL_WRITE_RE.findall(s)}
        writes |= w
        for m in _SQL_READ_RE.finditer(s):
            pre = s[max(0, m.start() - 8):m.start()].upper()
            if "DELETE" in pre:
                continue
            reads.add(m.group(1).lower())
    if known:
        reads &= known
        writes &= known
    return sorted(reads), sorted(writes)


def comment_invariants(text: str, lang: str) -> list[tuple[int, str]]:
    """(line, text) of comments that state an invariant (invariant / never / must / always)."""
    out = []
    if lang == "py":
        try:
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                if tok.type == tokenize.COMMENT and _INVARIANT_RE.search(tok.string):
                    out.append((tok.start[0], tok.string.lstrip("#").strip()))
        except (tokenize.TokenError, IndentationError, SyntaxError):
            pass
        return out
    marker = {"sql": "--", "sh": "#", "toml": "#", "yaml": "#", "yml": "#"}.get(lang)
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if marker and marker in s:
            c = s[s.index(marker) + len(marker):].strip()
            if _INVARIANT_RE.search(c):
                out.append((i, c))
        elif lang == "md" and _INVARIANT_RE.search(s) and s[:1] in "-*0123456789":
            out.append((i, s.lstrip("-* ").strip()))
    return out


def _cli_commands(tree: ast.Module) -> list[tuple[str, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_parser":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                help_ = next((k.value.value for k in node.keywords if k.arg == "help"
                              and isinstance(k.value, ast.Constant)), "")
                out.append((node.args[0].value, help_ or ""))
    return out


def build_article(index: ProjectIndex, rel: str) -> str:
    """The markdown body (no front matter) of the article for source ``rel``. Raises SyntaxError for a Python
    file that does not parse (the update marks the row failed)."""
    text = index.text(rel)
    nlines = text.count("\n") + (0 if text.endswith("\n") else 1)
    name = module_name(rel)
    head = [f"# {name}", "",
            f"> Source: `{rel}` ({nlines} lines). Generated from the code by `ats kb update`; edit the source, not "
            f"this article (a reviewer may add a `## Notes` section, which is kept across rebuilds).", ""]
    suffix = Path(rel).suffix.lstrip(".")
    if suffix == "py":
        return "\n".join(head + _python_article(index, rel, name, text)) + "\n"
    if suffix == "sql":
        return "\n".join(head + _sql_article(text)) + "\n"
    if suffix == "md":
        return "\n".join(head + _md_article(text)) + "\n"
    return "\n".join(head + _plain_article(text, suffix or "sh")) + "\n"


def _python_article(index: ProjectIndex, rel: str, name: str, text: str) -> list[str]:
    tree = index.tree(rel)
    if tree is None:
        ast.parse(text, filename=rel)  # re-raise the SyntaxError with its location
    L: list[str] = ["## Purpose", ""]
    doc = ast.get_docstring(tree) or ""
    L += (doc.splitlines() if doc else ["_No module docstring._"]) + [""]
    pub = _public(tree)
    L += ["## Public API", ""]
    if not pub:
        L += ["_No public functions or classes._", ""]
    for node in pub:
        if isinstance(node, ast.ClassDef):
            bases = ", ".join(ast.unparse(b) for b in node.bases)
            L += [f"### class `{node.name}{'(' + bases + ')' if bases else ''}`", ""]
            d = _doc(node)
            L += (_quote(d) + [""]) if d else []
            methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and (not n.name.startswith("_") or n.name == "__init__")]
            for m in methods:
                first = (ast.get_docstring(m) or "").strip().split("\n\n")[0].replace("\n", " ")
                L.append(f"- `{_sig(m)}`" + (f": {first}" if first else ""))
            if methods:
                L.append("")
        else:
            L += [f"### `{_sig(node)}`", ""]
            d = _doc(node)
            L += (_quote(d) if d else ["_No docstring._"]) + [""]
    consts = _constants(tree)
    if consts:
        L += ["## Constants", ""] + [f"- {c}" for c in consts] + [""]
    cmds = _cli_commands(tree)
    if cmds:
        L += ["## CLI commands", ""] + [f"- `{c}`" + (f": {h}" if h else "") for c, h in cmds] + [""]
    deps = sorted(index.imports.get(name, set()))
    rdeps = sorted(index.imported_by.get(name, set()))
    ext = sorted({(a.name if isinstance(n, ast.Import) else (n.module or "")).split(".")[0]
                  for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and not getattr(n, "level", 0)
                  for a in (n.names if isinstance(n, ast.Import) else [n])} - {"", "ats", "mcp_servers", "__future__"})
    L += ["## Wiring", "",
          "- Imports (project): " + (", ".join(f"`{d}`" for d in deps) or "none"),
          "- Imported by: " + (", ".join(f"`{d}`" for d in rdeps) or "nothing in the scanned tree"),
          "- Third-party / stdlib: " + (", ".join(f"`{e}`" for e in ext) or "none"), ""]
    reads, writes = sql_tables(_strings(tree), index.known_tables)
    L += ["## Tables", "",
          "- Reads: " + (", ".join(f"`{t}`" for t in reads) or "none found in SQL strings"),
          "- Writes: " + (", ".join(f"`{t}`" for t in writes) or "none found in SQL strings"), ""]
    inv = comment_invariants(text, "py")
    L += ["## Invariants and warnings (from comments)", ""]
    L += [f"- line {ln}: {c}" for ln, c in inv[:40]] or ["_None marked._"]
    L.append("")
    tests = sorted(index.test_imports.get(name, set()))
    L += ["## Tests that cover it", ""]
    L += [f"- `{t}`" for t in tests] or ["_No test imports this module directly._"]
    L.append("")
    return L


def _sql_article(text: str) -> list[str]:
    header = []
    for line in text.splitlines():
        if line.startswith("--"):
            header.append(line[2:].strip())
        elif line.strip():
            break
    tables = _CREATE_TABLE_RE.findall(text)
    idx = re.findall(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)", text, re.I)
    trig = re.findall(r"CREATE\s+TRIGGER\s+([A-Za-z_][A-Za-z0-9_]*)", text, re.I)
    funcs = re.findall(r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+([A-Za-z_][A-Za-z0-9_]*)", text, re.I)
    altered = sorted(set(re.findall(r"ALTER\s+TABLE\s+([A-Za-z_][A-Za-z0-9_]*)", text, re.I)) - set(tables))
    L = ["## Purpose", ""] + (header or ["_No header comment._"]) + [""]
    L += ["## Schema objects", "",
          "- Tables created: " + (", ".join(f"`{t}`" for t in tables) or "none"),
          "- Tables altered: " + (", ".join(f"`{t}`" for t in altered) or "none"),
          "- Indexes: " + (", ".join(f"`{t}`" for t in idx) or "none"),
          "- Triggers: " + (", ".join(f"`{t}`" for t in trig) or "none"),
          "- Functions: " + (", ".join(f"`{t}`" for t in funcs) or "none"), ""]
    for t in tables:
        m = re.search(rf"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{t}\s*\((.*?)\n\);", text, re.S | re.I)
        if m:
            L += [f"### `{t}`", "", "```sql", m.group(1).strip("\n"), "```", ""]
    inv = comment_invariants(text, "sql")
    L += ["## Invariants and warnings (from comments)", ""]
    L += [f"- line {ln}: {c}" for ln, c in inv[:40]] or ["_None marked._"]
    L.append("")
    return L


def _md_article(text: str) -> list[str]:
    from .kb import parse_front_matter

    meta, body = parse_front_matter(text)
    L = []
    if meta:
        L += ["## Declaration (front matter)", ""] + [f"- **{k}**: {v}" for k, v in meta.items()] + [""]
    heads = [ln.strip() for ln in body.splitlines() if ln.startswith("#")]
    first = next((p.strip() for p in body.split("\n\n") if p.strip() and not p.strip().startswith("#")), "")
    L += ["## Summary", "", first[:1500] or "_Empty._", ""]
    if heads:
        L += ["## Sections", ""] + [f"- {h.lstrip('#').strip()}" for h in heads] + [""]
    inv = comment_invariants(body, "md")
    L += ["## Rules (lines with never / must / always)", ""]
    L += [f"- {c}" for _, c in inv[:40]] or ["_None._"]
    L.append("")
    return L


def _plain_article(text: str, suffix: str) -> list[str]:
    marker = "#"
    header = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#!"):
            continue
        if s.startswith(marker):
            header.append(s.lstrip("#").strip())
        elif s:
            break
    L = ["## Purpose", ""] + (header or ["_No header comment._"]) + [""]
    inv = comment_invariants(text, suffix if suffix in ("sh", "toml", "yaml", "yml") else "sh")
    L += ["## Invariants and warnings (from comments)", ""]
    L += [f"- line {ln}: {c}" for ln, c in inv[:40]] or ["_None marked._"]
    L.append("")
    return L


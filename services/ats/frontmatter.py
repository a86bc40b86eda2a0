"""The one YAML front-matter parser: KB articles, ``.claude-cron/prompts/*.md``, ``.claude/commands/*.md`` and
``.claude/agents/*.md``.

Claude Code reads these blocks as YAML, so ATS does too (``python-frontmatter``'s YAML handler, PyYAML's safe
loader): a tool list may be one comma-separated string or a YAML list, quotes and comments follow YAML. The body
is returned exactly as written (nothing stripped), so a file rewritten as front matter + body keeps its bytes.
"""

from __future__ import annotations

from typing import Any

from .errors import AtsError


def _is_delimiter(line: str) -> bool:
    return line.rstrip("\r\n").rstrip() == "---"


def split(text: str, *, where: str = "front matter") -> tuple[dict[str, Any], str]:
    """Split a markdown file into its YAML front matter and its body.

    Parameters
    ----------
    text : str
        The whole file. Front matter is a block opened by a first line ``---`` and closed by the next ``---``.
    where : str
        Names the file in error messages.

    Returns
    -------
    tuple of (dict, str)
        ``(metadata, body)``: YAML types (str, int, bool, list, ...); ``({}, text)`` when there is no block.

    Raises
    ------
    ats.errors.AtsError
        When the block is not closed, is not valid YAML, or is not a mapping.
    """
    import frontmatter  # python-frontmatter: YAMLHandler.load is PyYAML's safe loader

    lines = text.splitlines(keepends=True)
    if not lines or not _is_delimiter(lines[0]):
        return {}, text
    for i in range(1, len(lines)):
        if _is_delimiter(lines[i]):
            break
    else:
        raise AtsError(f"{where}: the front-matter block is not closed by a '---' line")
    try:
        meta = frontmatter.YAMLHandler().load("".join(lines[1:i])) or {}
    except Exception as exc:  # yaml.YAMLError and its subclasses
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AtsError(f"{where}: front matter is not valid YAML: {first}") from exc
    if not isinstance(meta, dict):
        raise AtsError(f"{where}: front matter must be a mapping of 'key: value' lines, got {type(meta).__name__}")
    return meta, "".join(lines[i + 1:])


def tool_list(value: Any) -> tuple[str, ...]:
    """A ``tools`` / ``allowed-tools`` value as a tuple of tool rules.

    Parameters
    ----------
    value : str, list of str or None
        Claude Code accepts one string split at commas outside parentheses
        (``Bash(ats kb scan:*), Read``) or a YAML list (each item may itself hold several comma-separated rules).

    Returns
    -------
    tuple of str
        The rules in order, stripped, empty ones dropped.
    """
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(t for item in value for t in tool_list(item))
    out, depth, cur = [], 0, ""
    for ch in str(value):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return tuple(t for t in out if t)

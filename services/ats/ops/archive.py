"""Deterministic core of the project-backup-archiver: ``ats archive [--dir D] [--keep N]``.

One archive is three files with the same stem ``ats-archive_<YYYYmmddTHHMMSSZ>`` in the archive directory:

``.bundle``   ``git bundle create --all`` (every branch and tag; verified with ``git bundle verify``; restore
              with ``git clone <file>.bundle DIR``)
``.tar.gz``   ``reports/ kb/ plans/`` of the working tree (committed or not)
``.json``     manifest: UTC time, HEAD commit, the refs in the bundle, per file size and sha256, tar members

Directory: ``--dir``, else setting ``archive.dir`` (migration 0111), else ``ATS_ARCHIVE_DIR``, else
``<root>/.ats/archives``. Rotation keeps the newest ``archive.keep`` (default 10) archives and deletes the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import AtsError, UsageError

SETTINGS = {"archive.dir": ("", "target directory ('' = ATS_ARCHIVE_DIR or <root>/.ats/archives)"),
            "archive.keep": (10, "keep the newest N archives")}
CONTENT_DIRS = ("reports", "kb", "plans")
STEM_RE = re.compile(r"^ats-archive_(\d{8}T\d{6}Z)$")
TS_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass
class ArchiveManifest:
    """What one archive holds (written as ``<stem>.json``); sizes in bytes, sha256 as hex."""

    stem: str
    created_at: str
    head: str
    refs: list[str]
    files: dict[str, dict] = field(default_factory=dict)
    members: int = 0
    dirs: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def settings(url: str | None = None) -> tuple[str, int]:
    """(archive.dir, archive.keep) from system_settings; the defaults when the database is unreachable.

    An embedded server that is not running is not started for this (the archive must work without a database).
    """
    try:
        from ..db.config_store import setting_as_of
        from ..db.connection import connect, external_url, pgdata_dir

        if url is None and not external_url() and not (pgdata_dir() / "postmaster.pid").exists():
            raise LookupError("no running database")

        with connect(url) as conn:
            return (str(setting_as_of(conn, "archive.dir", default=SETTINGS["archive.dir"][0]) or ""),
                    int(setting_as_of(conn, "archive.keep", default=SETTINGS["archive.keep"][0])))
    except Exception:
        return SETTINGS["archive.dir"][0], SETTINGS["archive.keep"][0]


def resolve_dir(root: Path, explicit: Path | None, configured: str) -> Path:
    """The archive directory by precedence: --dir, setting archive.dir, ATS_ARCHIVE_DIR, <root>/.ats/archives."""
    if explicit:
        return Path(explicit)
    if configured:
        return Path(configured)
    if os.environ.get("ATS_ARCHIVE_DIR"):
        return Path(os.environ["ATS_ARCHIVE_DIR"])
    return root / ".ats" / "archives"


def create_archive(root: Path, directory: Path, *, now: datetime | None = None) -> ArchiveManifest:
    """Write the bundle, the tarball and the manifest of ``root`` into ``directory``.

    Parameters
    ----------
    root : Path
        The git repository (project root).
    directory : Path
        Target directory (created 0700).
    now : datetime, optional
        UTC time for the stem (tests); default the wall clock.

    Returns
    -------
    ArchiveManifest

    Raises
    ------
    AtsError
        Not a git repository, no commit yet, or git bundle failed/verified badly (partial files removed).
    """
    import git

    try:
        repo = git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise AtsError(f"{root} is not a git repository: nothing to bundle") from exc
    if not repo.head.is_valid():
        raise AtsError(f"{root} has no commit yet: nothing to bundle")
    at = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    stem = f"ats-archive_{at.strftime(TS_FORMAT)}"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    bundle, tar, manifest = (directory / f"{stem}{ext}" for ext in (".bundle", ".tar.gz", ".json"))
    try:
        repo.git.bundle("create", str(bundle), "--all")
        repo.git.bundle("verify", "-q", str(bundle))
        refs = sorted(line.split(" ", 1)[1] for line in repo.git.bundle("list-heads", str(bundle)).splitlines()
                      if " " in line)
        dirs = [d for d in CONTENT_DIRS if (root / d).is_dir()]
        members = 0
        with tarfile.open(tar, "w:gz") as tf:
            for d in dirs:
                tf.add(root / d, arcname=d)
            members = len(tf.getmembers())
    except (git.GitCommandError, OSError) as exc:
        for p in (bundle, tar):
            p.unlink(missing_ok=True)
        raise AtsError(f"archive of {root} into {directory} failed: {str(exc).strip().splitlines()[-1][:300]}") from exc
    man = ArchiveManifest(stem=stem, created_at=at.isoformat(timespec="seconds"), head=repo.head.commit.hexsha,
                          refs=refs, members=members, dirs=dirs,
                          files={p.name: {"size_bytes": p.stat().st_size, "sha256": _sha256(p)} for p in (bundle, tar)})
    manifest.write_text(json.dumps(asdict(man), indent=2) + "\n", encoding="utf-8")
    return man


def rotate(directory: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` archives (by the time in their stem); returns the deleted stems."""
    if keep < 1:
        raise UsageError(f"archive.keep must be >= 1, got {keep}")
    stems = sorted({p.name.split(".", 1)[0] for p in directory.glob("ats-archive_*")
                    if STEM_RE.match(p.name.split(".", 1)[0])}, reverse=True)
    deleted = stems[keep:]
    for stem in deleted:
        for ext in (".bundle", ".tar.gz", ".json"):
            (directory / f"{stem}{ext}").unlink(missing_ok=True)
    return deleted

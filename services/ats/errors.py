"""Error types shared by every ATS module.

`AtsError` is what the CLI turns into one clear line and exit code 1; `UsageError` gives exit code 2.
Raise them with a message that names what was wrong and where (file, row, table, setting).
"""


class AtsError(Exception):
    """A failure the operator can act on; the CLI prints ``str(err)`` as one line and exits 1."""


class UsageError(AtsError):
    """Bad command-line usage (unknown option value, missing argument); the CLI exits 2."""


class BusyError(AtsError):
    """Another heavy run holds the lock (advisory lock or per-task lock file); nothing was queued."""

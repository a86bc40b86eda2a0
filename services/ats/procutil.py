"""Process helpers shared by the commands that watch other ats processes (``ats live status``, the live monitor)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this machine (signal 0; a process of another user counts as
    alive). A pid from another machine or a recycled pid cannot be told apart: callers pair this with a
    heartbeat (``live_sessions.updated_at``) or a lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

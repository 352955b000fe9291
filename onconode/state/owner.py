"""Who holds a lease: a process, named ``host/pid/start`` (host name, process ID, start time).

The start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) tells a process apart from
a later one that reuses its ID, as after a container restart, where the ID is 1 again. A node that
starts can therefore tell that a lease held by a process of its own host is held by nobody
(``holder_gone``) and take the work at once; a holder on another host is waited for until its lease
expires, since nothing here can tell a dead host from a slow one.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_UNKNOWN = "0"  # no /proc (not Linux): the process ID alone has to do


def _start_time(pid: int) -> str | None:
    """The process's start time, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else _UNKNOWN
    except OSError:
        return _UNKNOWN
    return stat[stat.rindex(b")") + 2:].split()[19].decode()  # after "pid (comm) ", field 22 is the 20th


def process_owner(pid: int | None = None) -> str:
    """This process (or the running process ``pid``), as lease rows name their holder."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{pid}/{_start_time(pid) or _UNKNOWN}"


def owner_pid(owner: str) -> int | None:
    """The process ID in ``owner`` (for an operator, or a test that stops the holder)."""
    parts = owner.split("/")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def holder_gone(owner: str) -> bool:
    """Whether ``owner`` was a process of this host that is no longer running."""
    parts = owner.split("/")
    pid = owner_pid(owner)
    if pid is None or parts[0] != socket.gethostname():
        return False
    started = _start_time(pid)
    return started is None or _UNKNOWN not in (started, parts[2]) and started != parts[2]

"""Which process owns a ledger row, and whether it is still alive.

A pending attempt is owned by ``(host, pid, start)``, where ``start`` is the process start time
in clock ticks since boot (``/proc/<pid>/stat`` field 22). Comparing it guards against a
recycled pid. On a system without ``/proc`` the start time is 0 and only the pid is checked.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessIdentity:
    """A process on a host: name of the host, pid, and start time (clock ticks since boot)."""

    host: str
    pid: int
    start: int

    @classmethod
    def current(cls) -> ProcessIdentity:
        """The identity of the running process.

        Returns
        -------
        ProcessIdentity
            This host's name, this pid, and its start time (0 when ``/proc`` cannot tell).
        """
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start(pid) or 0)

    def is_alive(self) -> bool:
        """Whether the process still runs.

        A process on another host cannot be checked from here and counts as alive: its rows
        are reclaimed by a run on its own host, or voided by hand.

        Returns
        -------
        bool
            True when the pid runs with the recorded start time (any start time when the recorded one
            is 0), or the process is on another host; False for a finished or zombie process or a
            recycled pid.
        """
        if self.host != socket.gethostname():
            return True
        start = process_start(self.pid)
        if start is None:
            return _pid_exists(self.pid)
        return self.start in (0, start)


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if unknown or not running.

    Parameters
    ----------
    pid : int
        The process id on this host.

    Returns
    -------
    int or None
        Field 22 of ``/proc/<pid>/stat`` (clock ticks since boot; divide by ``SC_CLK_TCK`` for s),
        or None when there is no ``/proc`` entry, it cannot be read, or the process is a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    # Field 2 (the command name) may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has finished; only its exit status is left
        return None
    return int(fields[19])


def _pid_exists(pid: int) -> bool:
    if os.path.isdir("/proc"):
        return False  # /proc exists but has no entry for the pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def operator_name() -> str:
    """The operator recorded in runs and the audit log: ``$ANATOMODEL_OPERATOR`` or the login.

    Returns
    -------
    str
        ``$ANATOMODEL_OPERATOR`` when set and non-empty, else the login name, else ``uid-<uid>``.

    Raises
    ------
    ConfigError
        If ``$ANATOMODEL_OPERATOR`` has control characters or is over 64 characters (exit code 4).
    """
    name = os.environ.get("ANATOMODEL_OPERATOR")
    if name:
        from pipeline.config import text_problem
        from pipeline.errors import ConfigError

        problem = text_problem(name, 64)
        if problem:
            raise ConfigError(f"$ANATOMODEL_OPERATOR {problem}", hint="set it to the operator's name")
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"

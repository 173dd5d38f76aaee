"""Watching the model instances of ``mmedge serve``: a killed instance process is noticed and Triton restarted.

Triton's Python backend runs each model instance in a process of its own
(``triton_python_backend_stub``, a child of ``tritonserver``). When one is killed (SIGKILL, the
OOM killer), Triton keeps reporting the model ready while every request to that instance fails
with "Stub process is not healthy", for good (and a request that was inside the killed process
never completes, so the model cannot even be unloaded). ``InstanceWatch`` notices the death
within one poll; the server then restarts Triton in a fresh workspace (the endpoints are down,
so not ready, meanwhile; then new instance processes, ready again), or, if that fails or
instances keep dying (``RestartBudget``), stops with an error so that ``mmedge serve`` exits
non-zero for its supervisor (systemd, a container runtime) to act on. Linux ``/proc`` only, as
Triton is.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["InstanceWatch", "RestartBudget", "child_pids", "STUB_NAME", "SERVER_NAME"]

STUB_NAME = "triton_python_backend_stub"
SERVER_NAME = "tritonserver"


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, parent pid, command name) of ``pid`` from ``/proc/<pid>/stat``, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), text[text.index("(") + 1:text.rindex(")")]


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def child_pids(parent: int, name: str, contains: str = "") -> set[int]:
    """Live children of ``parent`` whose executable file is called ``name`` (and whose command line holds
    ``contains``).

    The name is matched on the command line's first word or, where that is unreadable or empty (some
    sandboxes' ``/proc``, a process mid-exec), on the kernel's command name (the executable's file name
    cut to 15 characters).
    """
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[1] != parent or stat[0] in ("Z", "X"):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
        except OSError:
            argv = [""]
        named = os.path.basename(argv[0]) == name or (not argv[0] and stat[2] == name[:15])
        if named and contains in " ".join(argv):
            found.add(pid)
    return found


@dataclass
class InstanceWatch:
    """The instance processes of one running Triton, as seen when the model was last ready.

    Args:
        server_pid: The ``tritonserver`` process.
    """

    server_pid: int
    pids: set[int] = field(default_factory=set)

    def snapshot(self, exclude: set[int] = frozenset()) -> set[int]:
        """Records the instance processes now running but those in ``exclude`` (call when the model is ready)."""
        self.pids = child_pids(self.server_pid, STUB_NAME) - set(exclude)
        return self.pids

    def dead(self) -> set[int]:
        """The recorded instance processes that are gone (killed, crashed)."""
        return {pid for pid in self.pids if not _alive(pid)}


@dataclass
class RestartBudget:
    """At most ``restarts`` restarts within ``window_s`` seconds; one more means instances keep dying.

    Args:
        restarts: Restarts allowed in the window.
        window_s: The window, in seconds.
    """

    restarts: int = 3
    window_s: float = 600.0
    _times: deque = field(default_factory=deque)

    def spend(self) -> bool:
        """Records a restart; False when the budget is spent (the server should exit instead)."""
        now = time.monotonic()
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) >= self.restarts:
            return False
        self._times.append(now)
        return True

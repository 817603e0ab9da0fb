"""The process table, read from /proc (Linux): the tests that stop a run check which processes are left."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/PID/stat after the command name: [state, parent pid, ...]; raises OSError for a process gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(parent: int) -> list[int]:
    """The live (not zombie) child processes of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = _stat_fields(entry.name)[:2]
            except OSError:
                continue
            if int(ppid) == parent and state != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False

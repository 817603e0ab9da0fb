"""The journal `results.jsonl`: one JSON object per line, appended the moment a cell finishes. It is the source of
truth of a result folder; `results.json`, `results.csv` and the side files are derived from it.

A line is written whole: one write of the line and its newline, flushed and fsynced, with SIGINT and SIGTERM held
off meanwhile so that a stop asked for by the user lands between rows. What a crash can still do (a kill -9, a full
disk, a power cut) is cut the last line short. Such a torn tail is no row, it is cut off, and no row is ever written
after a fragment: `append_line` checks the journal ends with a newline before each append. A line in the middle that
is not a row was not written by cadbench: `read_journal` reports it, and nothing is repaired by guessing — except a
whole row that an older cadbench appended onto a torn fragment on the same line, which is recovered.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

# `check(value)` says why a parsed line is not a row (or None when it is one).
RowCheck = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class JournalEntry:
    number: int  # line number, from 1
    row: dict
    text: str  # the line as written (a recovered row: the part after the fragment)


@dataclass
class JournalScan:
    """What a journal holds (`entries`, in order) and what is wrong with the file."""

    entries: list[JournalEntry] = field(default_factory=list)
    torn_tail: str = ""  # text after the last newline: the start of a line a crash cut short
    recovered: list[int] = field(default_factory=list)  # lines where a whole row followed a fragment
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, why it is not a row)
    tail_is_row: bool = False  # the text after the last newline is a whole row whose newline was lost

    @property
    def needs_repair(self) -> bool:
        return bool(self.torn_tail or self.recovered)


def read_journal(path: Path, check: RowCheck) -> JournalScan:
    """Parse every line of the journal (a missing journal is an empty one)."""
    scan = JournalScan()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return scan
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline, as a whole journal does
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row, problem = _parse(line, check)
        if problem is None:
            scan.entries.append(JournalEntry(number, row, line))
            continue
        recovered = _row_behind_a_fragment(line, check)
        if recovered is not None:
            scan.entries.append(JournalEntry(number, *recovered))
            scan.recovered.append(number)
        else:
            scan.problems.append((number, problem))
    if tail.strip():
        row, problem = _parse(tail, check)
        if problem is None:
            scan.entries.append(JournalEntry(len(lines) + 1, row, tail))
            scan.tail_is_row = True
        scan.torn_tail = tail
    return scan


def rewrite_repaired(path: Path, scan: JournalScan, write: Callable[[Path, str], None]) -> None:
    """Rewrite the journal without torn fragments, every row as it was written (`write` replaces a file
    atomically)."""
    write(path, "".join(entry.text + "\n" for entry in scan.entries))


def append_line(path: Path, line: str) -> str:
    """Append `line` (one JSON object, no newline) and fsync it. Returns the fragment it had to cut off first ("" when
    the journal ended cleanly)."""
    if "\n" in line:
        raise ValueError("a journal line must not contain a newline")
    created = not path.exists()
    with _signals_held():
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fragment = _cut_torn_tail(fd)
            data = (line + "\n").encode("utf-8")
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_folder(path.parent)
    return fragment


def _parse(line: str, check: RowCheck) -> tuple[Any, str | None]:
    try:
        value = json.loads(line)
    except ValueError:
        return None, "not JSON"
    return value, check(value)


def _row_behind_a_fragment(line: str, check: RowCheck) -> tuple[dict, str] | None:
    """A whole row that follows the fragment of a torn write on the same line (what cadbench before issue 9 wrote
    when it resumed after a kill mid-write), or None."""
    start = line.find("{", 1)
    while start != -1:
        try:
            value = json.loads(line[start:])
        except ValueError:
            start = line.find("{", start + 1)
            continue
        return (value, line[start:]) if check(value) is None else None
    return None


def _cut_torn_tail(fd: int) -> str:
    """Truncate the journal to its last newline; returns what was cut off."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return ""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline != -1:
            keep = start + newline + 1
            break
        end = start
    else:
        keep = 0
    fragment = os.pread(fd, size - keep, keep).decode("utf-8", errors="replace")
    os.ftruncate(fd, keep)
    return fragment


def _fsync_folder(folder: Path) -> None:
    """Make a new file's name durable too (POSIX; silently skipped where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends: they are then delivered, between two rows."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

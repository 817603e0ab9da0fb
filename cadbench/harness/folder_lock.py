"""One run at a time per output folder: an exclusive `flock` on `<out>/.cadbench.lock`, held for the whole run.

Two runs on one `--out` would both measure every cell, write duplicate rows and skew each other's timings, so the
second is refused in one line naming the folder and the PID written inside the lock file by the holder. The kernel
releases a `flock` when its holder dies, however it dies (kill -9 included), so a lock file left by a dead run never
blocks the next one. On a clean release the holder removes the file while it still holds the lock; whoever opened
the old file meanwhile notices that the path no longer leads to the file it locked and tries again, so two runs can
never both believe they hold the folder.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from cadbench.errors import CadbenchError
from cadbench.files import warn

try:
    import fcntl
except ImportError:  # not POSIX: no flock; the run goes on unguarded, and says so
    fcntl = None

LOCK_FILE = ".cadbench.lock"


class FolderLock:
    """`acquire()` takes the folder (or raises CadbenchError saying who holds it); `release()` gives it back."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        if fcntl is None:
            warn(f"cannot lock --out {self.folder} on this platform; do not start a second run on it")
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise CadbenchError(
                        f"--out {self.folder} is in use by another cadbench run (PID {holder or 'unknown'}); "
                        f"wait for it to finish, or use another --out") from None
                warn(f"cannot lock --out {self.folder} ({exc.strerror or exc}); do not start a second run on it")
                return
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the previous holder removed that file as it finished: lock the current one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: nobody else can be inside
        except OSError:
            pass  # a lock file left behind blocks no one once it is unlocked
        os.close(fd)

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


def _read_pid(fd: int) -> str | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)

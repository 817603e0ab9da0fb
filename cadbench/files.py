"""Writing the files cadbench leaves behind: whole or not at all, strict JSON, and a one-line error naming the file
when it cannot be written.

`replaced_atomically(path)` is the one way a file is written whole, whatever writes it (text, `torch.save`,
safetensors): the writer fills a temporary file beside the target, which is fsynced and renamed over the target, so
a reader (or a run killed half-way) sees the old file or the new one, never a mix. `write_atomically` writes text
that way.

`strict_json` is `json.dumps` that refuses NaN and infinities (bare `NaN` tokens are not JSON; a value that could
not be measured is null, see `harness.results.rows.finite_row`) and writes numpy scalars as plain numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from cadbench.errors import CadbenchError


def strict_json(value: Any, **options: Any) -> str:
    """`json.dumps(value, allow_nan=False)`; raises ValueError on a non-finite float (clean it first)."""
    return json.dumps(value, allow_nan=False, default=plain_scalar, **options)


def plain_scalar(value: Any) -> Any:
    """numpy (and torch) scalars as the Python number they hold; anything else is not JSON."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def check_writable_target(path: str | Path) -> Path:
    """Refuse, before any work, an output path that can never be written as a file: a folder, or a file in a folder
    that does not exist. (Permissions are found out by the write itself, which fails in one line too.)"""
    path = Path(path)
    if path.is_dir():
        raise CadbenchError(f"cannot write {path}: it is a folder; name a file to write")
    if not path.parent.is_dir():
        raise CadbenchError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


@contextlib.contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary path in `path`'s folder for the caller to write `path`'s new content to. When the block ends, the
    file is given the permissions a new file gets (0666 less the umask: results are meant to be shared), fsynced
    and renamed over `path` in one step; when the block raises, it is removed and `path` is left as it was.
    OSError is raised as it is: the caller says which file could not be written."""
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600
        handle = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_atomically(path: str | Path, text: str) -> None:
    """Replace `path` with `text` in one step (`replaced_atomically`). Raises CadbenchError naming the file when it
    cannot be written."""
    path = check_writable_target(path)
    try:
        with replaced_atomically(path) as temporary:
            temporary.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CadbenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def warn(message: str) -> None:
    """One line on stderr for something the user should know that does not stop the run."""
    print(f"cadbench: warning: {message}", file=sys.stderr, flush=True)

"""Writing the files cadbench leaves behind: whole or not at all, strict JSON, and a one-line error naming the file
when it cannot be written.

`write_atomically` writes a temporary file beside the target and renames it over the target, so a reader (or a run
killed half-way) sees the old file or the new one, never a mix. `strict_json` is `json.dumps` that refuses NaN and
infinities (bare `NaN` tokens are not JSON; a value that could not be measured is null, see
`harness.results.rows.finite_row`) and writes numpy scalars as plain numbers.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

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


def write_atomically(path: str | Path, text: str) -> None:
    """Replace `path` with `text` in one step (temporary file, fsync, rename). Raises CadbenchError naming the file
    when it cannot be written."""
    path = Path(path)
    check_writable_target(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise CadbenchError(f"cannot write {path}: {exc.strerror or exc}") from None
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            os.fchmod(stream.fileno(), 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise CadbenchError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def warn(message: str) -> None:
    """One line on stderr for something the user should know that does not stop the run."""
    print(f"cadbench: warning: {message}", file=sys.stderr, flush=True)

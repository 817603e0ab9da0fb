"""Writing the files cadbench leaves behind: whole or not at all, strict JSON, and a one-line error naming the file
when it cannot be written; and reading back the files beside the results, where a damaged one costs only what it
holds.

`replaced_atomically(path)` is the one way a file is written whole, whatever writes it (text, `torch.save`,
safetensors): the writer fills a temporary file beside the target, which is fsynced and renamed over the target, so
a reader (or a run killed half-way) sees the old file or the new one, never a mix. `write_atomically` writes text
that way.

`strict_json` is `json.dumps` that refuses NaN and infinities (bare `NaN` tokens are not JSON; a value that could
not be measured is null, see `harness.results.rows.finite_row`) and writes numpy scalars as plain numbers.

`read_side_file(path, cost)` is the one reader of the JSON files beside the results (timelines, loss curves, the
environment results.json records): a damaged one costs what it holds, with one warning line, never the run or the
report.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

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


def read_json_object(path: str | Path) -> dict | None:
    """The JSON object in `path`, or None when it cannot be read, is not JSON, or is not an object."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def read_side_file(path: str | Path, cost: str | Callable[[Path], str]) -> dict:
    """The JSON object a file beside the results holds, or {} when there is none. A damaged one (unreadable, not
    JSON, or not an object) gives {} and one warning line: '<path> is damaged (not a JSON object); <cost>'. `cost`
    says what that costs the caller; a callable is given the path first (to set the file aside, say) and returns
    it."""
    path = Path(path)
    if not path.exists():
        return {}
    document = read_json_object(path)
    if document is not None:
        return document
    warn(f"{path} is damaged (not a JSON object); {cost(path) if callable(cost) else cost}")
    return {}


def warn(message: str) -> None:
    """One line on stderr for something the user should know that does not stop the run."""
    print(f"cadbench: warning: {message}", file=sys.stderr, flush=True)

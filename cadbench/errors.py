"""User-facing errors: one line, no traceback, non-zero exit (the CLI catches these)."""

from __future__ import annotations

from typing import Iterable


class CadbenchError(Exception):
    """An error caused by the user's input. Its message is one self-contained line."""


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> CadbenchError:
    """The error for a name that is not among the valid ones, listing them."""
    return CadbenchError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")


def summarize_names(names: list[str], limit: int = 3) -> str:
    """'a, b, c and 7 more' — keeps one-line errors one line."""
    shown = ", ".join(names[:limit])
    rest = len(names) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown

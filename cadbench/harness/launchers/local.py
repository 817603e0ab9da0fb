"""The local launcher: each device cell in a fresh Python process on this machine, one after another."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from cadbench.backbones import get_backbone
from cadbench.harness.grid import Cell
from cadbench.harness.options import Mode, RunOptions
from cadbench.harness.processes import run_cell_process
from cadbench.harness.results import explain_nulls, new_row


def run_in_fresh_process(cell: Cell, mode: Mode, options: RunOptions, environment: dict) -> dict:
    """Measure a cell in a new Python process: allocator state, fragmentation and crashes stay there."""
    spec = json.dumps({"cell": cell.as_dict(), "mode": mode, "options": options.as_dict(),
                       "environment": environment})
    with tempfile.TemporaryDirectory(prefix="cadbench-cell-") as folder:
        result_path = Path(folder) / "row.json"
        returncode, stderr = run_cell_process(
            [sys.executable, "-m", "cadbench.harness.measure_cell", spec, str(result_path)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        row = _read_row(result_path)
        if row is not None:
            return row
    last_line = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    row = new_row({**cell.as_dict(), "test_scale": get_backbone(cell.backbone).test_scale}, environment)
    row.update(status="error", error=f"cell process exited with code {returncode}: {last_line}".strip())
    why = f"cell process died ({row['error']})"
    return explain_nulls(row, {"*": why})


def _read_row(path: Path) -> dict | None:
    """The row a cell process wrote, or None when it wrote none or died writing it."""
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return row if isinstance(row, dict) and "status" in row else None

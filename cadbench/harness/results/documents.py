"""The one reader of result documents, and of the settings a result folder was measured with.

`read_results_document(path)` reads a result set (a folder, a results.json, a results.csv, or a baseline) for
`check`, `compare`, `report` and `load_results`, checking its schema version and the columns its rows need.
`read_run_config` and `run_config_from_results` read the settings a folder was measured with (the store checks a
resumed run against them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from cadbench.errors import CadbenchError
from cadbench.files import read_json_object
from cadbench.harness.results.rows import ROW_REQUIRED_COLUMNS, contract_columns

SCHEMA_VERSION = 1


def read_run_config(path: Path) -> dict | None:
    """The settings a run.json holds, or None when it is unreadable."""
    config = (read_json_object(path) or {}).get("config")
    return config if isinstance(config, dict) else None


def run_config_from_results(path: Path) -> dict | None:
    """The settings a results.json recorded, or None when it is unreadable or recorded none."""
    config = (read_json_object(path) or {}).get("run")
    return config if isinstance(config, dict) else None


def read_results_document(path: str | Path, role: str = "results",
                          required: Iterable[str] = ROW_REQUIRED_COLUMNS, allow_csv: bool = True) -> dict:
    """A result set as {"schema_version", "run", "environment", "rows", "path"}, from an output folder (its
    results.json), a results.json or baseline, or (when `allow_csv`) a results.csv, which carries no schema
    version: its columns are checked instead. Every row must have the `required` columns. Raises CadbenchError
    naming `role` and the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise CadbenchError(f"{role} {path} does not exist")
    if path.suffix.lower() == ".csv":
        if not allow_csv:
            raise CadbenchError(f"{role} {path}: give a results.json here (a CSV carries no schema version)")
        document = {"schema_version": SCHEMA_VERSION, "run": None, "environment": None,
                    "rows": _csv_rows(path, role)}
    else:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CadbenchError(f"{role} {path} is not readable JSON: {type(exc).__name__}") from None
        versioned = isinstance(document, dict) and "schema_version" in document
        if not versioned and not (isinstance(document, dict) and isinstance(document.get("rows"), list)):
            raise CadbenchError(f"{role} {path} is not a cadbench results file (no 'rows' list)")
        if document.get("schema_version") != SCHEMA_VERSION:  # before the rows: another schema may keep them elsewhere
            raise CadbenchError(f"{role} {path} has schema version {document.get('schema_version')!r}; "
                                f"this cadbench reads version {SCHEMA_VERSION}")
        if not isinstance(document.get("rows"), list):
            raise CadbenchError(f"{role} {path} is not a cadbench results file (no 'rows' list)")
    required = tuple(required)
    for index, row in enumerate(document["rows"]):
        if not isinstance(row, dict):
            raise CadbenchError(f"{role} {path} row {index} is not an object")
        missing = [column for column in required if column not in row]
        if missing:
            raise CadbenchError(f"{role} {path} row {index} lacks {', '.join(missing)}")
    document["path"] = str(path)
    return document


def _csv_rows(path: Path, role: str) -> list[dict]:
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CadbenchError(f"{role} {path} is not a readable CSV: {type(exc).__name__}") from None
    if "null_reasons" not in frame.columns:
        raise CadbenchError(f"{role} {path} is not a cadbench results file (no null_reasons column)")
    rows = []
    for index, record in enumerate(frame.astype(object).where(frame.notna(), None).to_dict("records")):
        try:
            record["null_reasons"] = json.loads(record["null_reasons"] or "{}")
        except (TypeError, ValueError):
            raise CadbenchError(f"{role} {path} row {index} has unreadable null_reasons") from None
        rows.append(record)
    return rows


def load_results(path: str | Path, role: str = "results") -> pd.DataFrame:
    """Results as a DataFrame, from an output folder, a results.json or a results.csv."""
    document = read_results_document(path, role)
    return pd.DataFrame(document["rows"], columns=list(contract_columns()))

"""The result folder (`--out`) and its store, `ResultStore`:

    store = ResultStore(out)                 # nothing touched yet
    with store.open(run_config, environment):  # lock the folder, check run.json, repair the journal's torn tail
        store.finished_keys()                # keys of the cells already finished (ok or oom; errors are retried)
        store.append(row)                    # persist one finished cell: journal first, then the derived files
        store.rows()                         # the latest row of each cell, in the order cells first appeared
    # leaving the block (or store.close()) releases the folder

* `results.jsonl`, the journal (see `journal`), is the source of truth: a row is fsynced there before anything
  else is written, with its side data (`_timeline`, `_loss_curve`) on the same line.
* `results.json` and `results.csv` (the table), `timelines.json` and `loss_curves.json` (side data for the charts,
  keyed by cell) are derived from it and rewritten atomically after each row. Any of them may fail to be written or
  be found damaged: that costs no row. A damaged one is rebuilt from the journal when the folder is opened; one that
  cannot be written gets a one-line warning and the run goes on.
* `run.json` holds the settings the folder was measured with; a run with other settings is refused. An unreadable
  run.json is restored from results.json when that recorded them, and is otherwise a one-line error.
* One run at a time: `open` takes an exclusive lock on the folder for as long as the store is open (see
  `folder_lock`). The process holding it is the only writer of the folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from cadbench.errors import CadbenchError
from cadbench.files import read_side_file, strict_json, warn, write_atomically
from cadbench.harness.folder_lock import FolderLock
from cadbench.harness.journal import append_line, read_journal, rewrite_repaired
from cadbench.harness.results.documents import SCHEMA_VERSION, read_run_config, run_config_from_results
from cadbench.harness.results.rows import finite_row, row_problem, rows_to_frame, unexplained_nulls
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.outcomes import FINISHED_STATUSES

# Side data: a row's key starting with '_' -> the file that keeps it beside the table, keyed by cell.
SIDE_FILES = {"_timeline": "timelines.json", "_loss_curve": "loss_curves.json"}


class ResultStore:
    """The result files of one output folder; rows are keyed by `cell_type`'s fields (see `Cell.key_of`). See the
    module docstring for the API and the guarantees."""

    def __init__(self, out_dir: str | Path, cell_type: type[Cell] = Cell) -> None:
        self.out_dir = Path(out_dir)
        self.cell_type = cell_type
        self.key_of = cell_type.key_of
        self.jsonl = self.out_dir / "results.jsonl"
        self.json = self.out_dir / "results.json"
        self.csv = self.out_dir / "results.csv"
        self.run_file = self.out_dir / "run.json"
        self.run_config: dict | None = None
        self.environment: dict | None = None
        self._lock = FolderLock(self.out_dir)
        self._latest: dict[str, dict] | None = None  # key -> latest row, while open
        self._side: dict[str, dict[str, Any]] = {kind: {} for kind in SIDE_FILES}
        self._warned: set[str] = set()

    # -- opening and closing ---------------------------------------------------------------------------------------
    def open(self, run_config: dict, environment: dict) -> "ResultStore":
        """Lock the folder (creating it), repair the journal's torn tail, check or write run.json and rebuild the
        derived files. Raises CadbenchError (one line) when the folder is in use, unwritable, measured with other
        settings, or holds a journal line that is not a row; the folder is then left as it was."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
            with tempfile.NamedTemporaryFile(dir=self.out_dir, prefix=".write-check-"):
                pass
        except OSError as exc:
            self._lock.release()
            raise CadbenchError(f"--out {self.out_dir} is not writable: {exc.strerror or exc}") from None
        try:
            latest, side = self._load_journal(repair=True)
            self._check_run_file(run_config, has_rows=bool(latest))
            write_atomically(self.run_file, strict_json({"config": run_config, "environment": environment},
                                                        indent=2))
        except BaseException:
            self._lock.release()
            raise
        self.run_config, self.environment = run_config, environment
        self._latest = latest
        self._side = {kind: {**self._side_file_entries(kind), **side[kind]} for kind in SIDE_FILES}
        if latest:
            self._write_derived([kind for kind in SIDE_FILES if self._side[kind]])
        return self

    def close(self) -> None:
        """Release the folder. The store can still be read; appending needs `open` again."""
        self._latest = None
        self._lock.release()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """The latest row of each cell, in the order cells first appeared (read from the journal when not open)."""
        latest = self._latest if self._latest is not None else self._load_journal(repair=False)[0]
        return list(latest.values())

    def rows_with_side_data(self) -> list[dict]:
        """The latest row of each cell with its side data (`_timeline`, `_loss_curve`) as the journal holds them,
        read without the lock (for `merge`, which copies rows into another folder)."""
        latest, side = self._load_journal(repair=False)
        return [{**row, **{kind: side[kind][key] for kind in SIDE_FILES if key in side[kind]}}
                for key, row in latest.items()]

    def finished_keys(self) -> set[str]:
        return {self.key_of(row) for row in self.rows() if row["status"] in FINISHED_STATUSES}

    # -- writing ---------------------------------------------------------------------------------------------------
    def append(self, row: dict) -> None:
        """Persist a finished cell: the row (and its side data, keys starting with '_': `_timeline`, live memory
        over one step; `_loss_curve`, the fine-tuning losses) is fsynced to the journal first; then the derived
        files are rewritten, each of which may fail with a warning without costing the row."""
        if self._latest is None:
            raise ValueError("ResultStore.append needs an open store (store.open(...))")
        row = finite_row(row)
        side = {kind: row.pop(kind) for kind in [key for key in row if key.startswith("_")]}
        missing = unexplained_nulls(row)
        if missing:
            raise AssertionError(f"row for {self.key_of(row)} has null columns without a reason: {missing}")
        kept = {kind: value for kind, value in side.items() if kind in SIDE_FILES and value is not None}
        try:
            fragment = append_line(self.jsonl, strict_json({**row, **kept}))
        except OSError as exc:
            raise CadbenchError(f"cannot append the row of {self.key_of(row)} to {self.jsonl}: "
                                f"{exc.strerror or exc}; the rows before it are kept there") from None
        if fragment:
            warn(f"{self.jsonl} ended in a line cut short ({len(fragment)} characters, no whole row); cut it off "
                 f"before appending")
        key = self.key_of(row)
        self._latest[key] = row  # a re-measured cell keeps its place
        for kind, value in kept.items():
            self._side[kind][key] = value
        self._write_derived(kept)

    def write_tables(self) -> None:
        """Rewrite results.json and results.csv from the rows."""
        self._write_derived(())

    def _write_derived(self, side_kinds: Iterable[str]) -> None:
        rows = self.rows()
        document = {"schema_version": SCHEMA_VERSION, "run": self.run_config, "environment": self.environment,
                    "rows": rows}
        self._write_derived_file(self.json, lambda: strict_json(document, indent=2))
        self._write_derived_file(self.csv, lambda: rows_to_frame(rows).to_csv(index=False))
        for kind in side_kinds:
            self._write_derived_file(self.out_dir / SIDE_FILES[kind], lambda kind=kind: strict_json(self._side[kind]))

    def _write_derived_file(self, path: Path, render) -> None:
        try:
            write_atomically(path, render())
        except (CadbenchError, OSError, ValueError) as exc:
            if path.name not in self._warned:
                self._warned.add(path.name)
                warn(f"{exc}; the rows are safe in {self.jsonl.name}, and {path.name} is rebuilt from it when this "
                     f"--out is next resumed")

    # -- the journal and run.json ---------------------------------------------------------------------------------
    def _load_journal(self, repair: bool) -> tuple[dict[str, dict], dict[str, dict[str, Any]]]:
        """The latest row of each cell and its side data. `repair` (only under the lock) cuts off a torn tail."""
        scan = read_journal(self.jsonl, lambda value: row_problem(value, self.cell_type))
        if scan.problems:
            number, problem = scan.problems[0]
            more = f" (and {len(scan.problems) - 1} more lines)" if len(scan.problems) > 1 else ""
            raise CadbenchError(f"{self.jsonl} line {number}: {problem}{more}; cadbench only appends whole rows, "
                                f"so this line was written by something else: fix or delete it, or use another --out")
        if repair and scan.needs_repair:
            rewrite_repaired(self.jsonl, scan, write_atomically)
            for number in scan.recovered:
                warn(f"{self.jsonl} line {number}: a row followed the fragment of a write cut short (as an older "
                     f"cadbench left it); kept the row, removed the fragment")
            if scan.torn_tail and not scan.tail_is_row:
                warn(f"{self.jsonl} ended in a line cut short by an interrupted write ({len(scan.torn_tail)} "
                     f"characters, no whole row); removed it, so that cell is measured again")
        latest: dict[str, dict] = {}
        side: dict[str, dict[str, Any]] = {kind: {} for kind in SIDE_FILES}
        for entry in scan.entries:
            row = finite_row(entry.row)
            key = self.key_of(row)
            for kind in SIDE_FILES:
                if row.get(kind) is not None:
                    side[kind][key] = row[kind]
            latest[key] = {column: value for column, value in row.items() if not column.startswith("_")}
        return latest, side

    def _check_run_file(self, run_config: dict, has_rows: bool) -> None:
        """Refuse to resume a folder measured with other settings."""
        if not self.run_file.exists():
            return
        previous = read_run_config(self.run_file)
        if previous is None:
            if not has_rows:
                warn(f"{self.run_file} is unreadable; the folder holds no rows yet, so it is rewritten")
                return
            previous = run_config_from_results(self.json)
            if previous is None:
                raise CadbenchError(
                    f"{self.run_file} is unreadable, so the rows in {self.out_dir} cannot be checked against this "
                    f"run's settings; restore it, delete it to resume regardless, or use another --out")
            warn(f"{self.run_file} was unreadable; restored the settings it held from {self.json.name}")
        differing = sorted(key for key in set(previous) | set(run_config) if previous.get(key) != run_config.get(key))
        if differing:
            raise CadbenchError(
                f"--out {self.out_dir} holds results measured with different settings ({', '.join(differing)}); "
                f"use another --out or the same settings to resume")

    def _side_file_entries(self, kind: str) -> dict[str, Any]:
        """What a side file holds now (entries of rows journalled before side data went into the journal); a
        damaged file is set aside and rebuilt from the journal."""
        return read_side_file(self.out_dir / SIDE_FILES[kind], self._set_aside)

    def _set_aside(self, damaged: Path) -> str:
        """Keep a damaged side file as <name>.damaged (it is rebuilt from the journal); says what was done."""
        kept = damaged.with_name(damaged.name + ".damaged")
        try:
            os.replace(damaged, kept)
        except OSError:
            return f"rebuilt from {self.jsonl.name}"
        return f"rebuilt from {self.jsonl.name}; the damaged file is kept as {kept.name}"

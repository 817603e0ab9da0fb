"""Merging result folders measured on several machines (or by several launchers) into one, for `report` and
`check`: one row per cell, the settings of every folder alike.

Refused in one line, before the output folder is touched: a folder that is not a result folder, folders measured
with different settings (their run.json `config`, what a resume compares), and two different finished rows (ok or
oom) for one cell, which merge cannot choose between. Identical rows (a folder given twice, or merged before) count
once; an error row only stands where no folder finished that cell. The output folder may hold rows already: they take
part as one more folder, and only what it lacks is appended (through the result store: journal first, lock held).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cadbench.errors import CadbenchError
from cadbench.harness.results.store import ResultStore
from cadbench.vocabulary.outcomes import FINISHED_STATUSES


@dataclass
class MergeOutcome:
    out_dir: Path
    rows: int  # cells in the merged folder
    added: int  # rows appended by this merge
    sources: list[Path]


@dataclass
class _Source:
    folder: Path
    config: dict
    environment: dict
    rows: list[dict]


def _read_source(folder: Path) -> _Source:
    run_file = folder / "run.json"
    try:
        document = json.loads(run_file.read_text(encoding="utf-8"))
        config, environment = document["config"], document.get("environment") or {}
        if not isinstance(config, dict):
            raise TypeError
    except FileNotFoundError:
        raise CadbenchError(f"{folder} is not a cadbench result folder (no run.json)") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise CadbenchError(f"{run_file} is unreadable, so the settings {folder} was measured with are "
                            f"unknown") from None
    return _Source(folder, config, environment, ResultStore(folder).rows_with_side_data())


def _same_row(a: dict, b: dict) -> bool:
    return a == b


def merge_folders(out: str | Path, folders: list[str | Path]) -> MergeOutcome:
    out = Path(out)
    sources: list[_Source] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise CadbenchError(f"{folder} is not a folder")
        if all(folder.resolve() != source.folder.resolve() for source in sources):
            sources.append(_read_source(folder))
    if (out / "run.json").exists():
        existing = _read_source(out)
        sources = [existing] + [source for source in sources if source.folder.resolve() != out.resolve()]
    first = sources[0]
    for source in sources[1:]:
        differing = sorted(key for key in set(first.config) | set(source.config)
                           if first.config.get(key) != source.config.get(key))
        if differing:
            raise CadbenchError(f"{source.folder} was measured with different settings than {first.folder} "
                                f"({', '.join(differing)}); merge only folders measured alike")

    key_of = ResultStore(out).key_of
    merged: dict[str, tuple[dict, Path]] = {}  # key -> (row, the folder it came from)
    for source in sources:
        for row in source.rows:
            key = key_of(row)
            held = merged.get(key)
            if held is None:
                merged[key] = (row, source.folder)
                continue
            kept, kept_from = held
            if _same_row(kept, row):
                continue
            kept_done, new_done = kept["status"] in FINISHED_STATUSES, row["status"] in FINISHED_STATUSES
            if kept_done and new_done:
                raise CadbenchError(f"cell {key} has different rows in {kept_from} and {source.folder}; merge keeps "
                                    f"one row per cell: remove it from one folder")
            if new_done or not kept_done:  # a finished row beats an error row; of two error rows, the later
                merged[key] = (row, source.folder)

    environment = _merged_environment(sources)
    store = ResultStore(out)
    already = {store.key_of(row): row for row in ResultStore(out).rows_with_side_data()} \
        if (out / "results.jsonl").exists() else {}
    added = 0
    with store.open(first.config, environment):
        for key, (row, _) in merged.items():
            if key in already and _same_row(already[key], row):
                continue
            store.append(dict(row))
            added += 1
        count = len(store.rows())
    return MergeOutcome(out, count, added, [source.folder for source in sources])


def _merged_environment(sources: list[_Source]) -> dict:
    """What every folder's environment shares, and each folder's own under `merged_from`."""
    keys = set().union(*(source.environment for source in sources)) - {"merged_from"}
    shared = {key: sources[0].environment.get(key) for key in sorted(keys)
              if all(source.environment.get(key) == sources[0].environment.get(key) for source in sources)}
    shared["merged_from"] = [{"folder": str(source.folder), "environment": source.environment}
                             for source in sources]
    return shared


__all__ = ["MergeOutcome", "merge_folders"]

"""The Slurm jobs a result folder is waiting for, kept in `<out>/slurm/jobs.json` so that a later run (after
`--detach`, a Ctrl-C or a lost login) reconnects to them instead of submitting the cells again. Beside it, submitit's
folder `<out>/slurm/<job id>/` holds each job's pickles and log.

Written only by the run that holds the folder's lock, atomically, as strict JSON. A job is recorded from its
submission until its cell's row is in the journal."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cadbench.errors import CadbenchError

FOLDER = "slurm"
RECORDS = "jobs.json"


@dataclass(frozen=True)
class JobRecord:
    job_id: str  # e.g. '1234_5' for task 5 of array job 1234
    key: str  # the cell's key
    cell: dict[str, Any]  # the cell's fields
    mode: str
    submitted: str  # ISO time


@dataclass
class JobRecords:
    jobs: list[JobRecord] = field(default_factory=list)

    @staticmethod
    def path(out_dir: Path) -> Path:
        return Path(out_dir) / FOLDER / RECORDS

    @staticmethod
    def submitit_folder(out_dir: Path) -> Path:
        """submitit's folder pattern: one subfolder per job (its pickles and its log)."""
        return (Path(out_dir) / FOLDER / "%j").absolute()

    @classmethod
    def read(cls, out_dir: Path) -> "JobRecords":
        path = cls.path(out_dir)
        if not path.exists():
            return cls()
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            return cls([JobRecord(**job) for job in document["jobs"]])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise CadbenchError(f"{path} is unreadable, so the Slurm jobs of this folder are unknown; check them "
                                f"with squeue, then delete it to go on") from None

    def write(self, out_dir: Path) -> None:
        from cadbench.files import strict_json, write_atomically

        path = self.path(out_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, strict_json({"jobs": [asdict(job) for job in self.jobs]}, indent=1))

    def without(self, job_ids: set[str]) -> "JobRecords":
        return JobRecords([job for job in self.jobs if job.job_id not in job_ids])


__all__ = ["FOLDER", "JobRecord", "JobRecords"]

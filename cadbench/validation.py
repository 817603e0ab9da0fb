"""`cadbench validate`: the estimator against a real GPU, cell by cell (needs CUDA).

Each cell is measured on CUDA in a fresh process (the sweep of `cadbench run --device cuda`, without the quality
phase) and estimated by the fake-tensor replay in this process. Every figure the two share is compared
(`COMPARISONS`): the estimate's row fields against the CUDA row's columns: allocated memory, and reserved memory
(the estimator's caching-allocator simulation against `max_memory_reserved`; both sides use the same allocator
settings, from the environment). Beside them: the CUDA context NVML sees beyond the allocator (what `fit`
allows 1 GiB for) and the measured throughput. Target: allocated within 3% on every cell that fits.

`--reference` writes the whole of it as a folder to commit, `reports/reference/<gpu>-<date>/` (see
`write_reference`); the HTML report then shows each estimate's error against it.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from cadbench.errors import CadbenchError
from cadbench.files import write_atomically
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.precision import DEFAULT_PRECISIONS

TARGET_ERROR = 0.03  # |estimate / cuda - 1| of allocated memory
REFERENCE_ROOT = Path("reports") / "reference"
REFERENCE_BATCH_SIZES = (1, 2, 4)  # 4 is recorded as oom where it does not fit
VALIDATION_FILES = ("validation.csv", "validation.json")
# What the reference environment records beyond collect_environment(): settings that move the measured figures.
SETTINGS_THAT_MOVE_MEMORY = ("CUDA_VISIBLE_DEVICES", "PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF",
                             "CUBLAS_WORKSPACE_CONFIG", "CUDA_MODULE_LOADING")


@dataclass(frozen=True)
class Comparison:
    """One figure both a CUDA row and an estimate give: `measured` is the CUDA row's column, `estimated` the name of
    the estimate's row field (`MemoryEstimate.as_row_fields()`)."""

    name: str
    measured: str
    estimated: str


COMPARISONS = (
    Comparison("allocated", "peak_memory_bytes", "peak_memory_bytes"),  # torch.cuda.max_memory_allocated
    Comparison("reserved", "reserved_memory_bytes", "reserved_memory_bytes"),  # torch.cuda.max_memory_reserved
)


def require_cuda() -> None:
    """Refuse, in one line, to validate where there is nothing to validate against."""
    import torch

    if not torch.cuda.is_available():
        raise CadbenchError("validate measures on a CUDA GPU, and PyTorch sees none here; without one, "
                            "`cadbench estimate` gives the estimates alone")


def estimate_fields(cell: Cell) -> dict[str, Any]:
    """The estimate's row fields for `cell` (the same fields `cadbench estimate` writes into its rows)."""
    from cadbench.estimator import estimate_cell

    return estimate_cell(cell).as_row_fields()


def compare_cell(row: Mapping[str, Any], estimate: Mapping[str, Any] | None,
                 estimate_failure: str | None = None) -> dict[str, Any]:
    """One line of the validation table: a CUDA result row against the estimate's fields for the same cell
    (`estimate` None when the estimator failed, `estimate_failure` saying why)."""
    line: dict[str, Any] = {name: _plain(row[name]) for name in Cell.key_columns()}
    line.update(cell=Cell.key_of(row), status=row["status"], gpu_name=_plain(row.get("gpu_name")))
    reasons: dict[str, str] = {}
    finished = row["status"] == "ok"
    not_measured = f"the cell did not finish on CUDA ({row['status']}: {row.get('error')})"
    for comparison in COMPARISONS:
        cuda = _plain(row.get(comparison.measured)) if finished else None
        estimated = _plain(estimate.get(comparison.estimated)) if estimate is not None else None
        line[f"cuda_{comparison.name}_bytes"] = cuda
        line[f"estimated_{comparison.name}_bytes"] = estimated
        line[f"{comparison.name}_error"] = estimated / cuda - 1 if cuda and estimated is not None else None
        if cuda is None:
            reasons[f"cuda_{comparison.name}_bytes"] = not_measured if not finished else "CUDA gave no figure"
        if estimated is None:
            reasons[f"estimated_{comparison.name}_bytes"] = (
                f"the estimator failed: {estimate_failure}" if estimate is None
                else f"the estimator gives no {comparison.name}-memory figure ({comparison.estimated})")
        if line[f"{comparison.name}_error"] is None:
            reasons[f"{comparison.name}_error"] = (reasons.get(f"cuda_{comparison.name}_bytes")
                                                   or reasons.get(f"estimated_{comparison.name}_bytes")
                                                   or "CUDA gave zero bytes")
    measured = {column: _plain(row.get(column)) if finished else None
                for column in ("nvml_process_memory_bytes", "nvml_process_peak_bytes", "throughput_img_s",
                               "step_time_median_s")}
    nvml_end, reserved = measured.pop("nvml_process_memory_bytes"), line["cuda_reserved_bytes"]
    line.update(measured)
    # the caching allocator only grows during the timed steps, so its reserved peak is also its end value
    line["cuda_context_bytes"] = nvml_end - reserved if nvml_end is not None and reserved is not None else None
    nvml_reason = (row.get("null_reasons") or {}).get("nvml_process_memory_bytes") or "NVML gave no figure"
    for column, reason in (("nvml_process_peak_bytes", nvml_reason), ("cuda_context_bytes", nvml_reason),
                           ("throughput_img_s", "CUDA gave no figure"), ("step_time_median_s", "CUDA gave no figure")):
        if line[column] is None:
            reasons[column] = reason if finished else not_measured
    line["null_reasons"] = reasons
    return line


def validate(methods: Iterable[str], backbones: Iterable[str], batch_sizes: Iterable[int],
             precisions: Iterable[str] = DEFAULT_PRECISIONS, out: str | Path | None = None, *,
             levers: Mapping[str, Iterable[Any]] | None = None, image_sizes: Iterable[int] | None = None,
             prompts_per_image: Iterable[Any] = ("image",),
             estimate: Callable[[Cell], Mapping[str, Any]] = estimate_fields, show_progress: bool = False,
             **options: Any) -> pd.DataFrame:
    """Measure every cell on CUDA (each in a fresh process), estimate it, and write the comparison to
    `out/validation.csv` and `out/validation.json`. `options` are RunOptions fields (steps, warmup, seed) and
    `checkpoint`. Returns the validation table, one line per cell."""
    require_cuda()
    from cadbench.api import default_out_dir, run

    out = Path(out or default_out_dir())
    measured = run(methods=methods, backbones=backbones, batch_sizes=batch_sizes, precisions=precisions, levers=levers,
                   image_sizes=image_sizes, prompts_per_image=prompts_per_image, device="cuda", dataset=None, out=out,
                   print_summary=False,
                   show_progress=show_progress, **options)
    lines = []
    for row in measured.to_dict("records"):
        row["null_reasons"] = json.loads(row["null_reasons"]) if isinstance(row["null_reasons"], str) else {}
        if row["status"] == "not_applicable":  # nothing ran, nothing to estimate: the row says why
            fields, failure = None, row["error"]
        else:
            try:
                fields, failure = estimate(Cell.from_row(row)), None
            except CadbenchError as exc:
                fields, failure = None, str(exc)
        lines.append(compare_cell(row, fields, failure))
    table = pd.DataFrame(lines)
    table.attrs["out_dir"] = out
    write_validation(out, table)
    return table


def write_validation(out: Path, table: pd.DataFrame) -> None:
    document = {"target_error": TARGET_ERROR, "compared": [comparison.__dict__ for comparison in COMPARISONS],
                "rows": table.to_dict("records")}
    write_atomically(out / "validation.json", json.dumps(_strict(document), indent=2, allow_nan=False))
    write_atomically(out / "validation.csv", table.drop(columns=["null_reasons"]).to_csv(index=False))


def within_target(table: pd.DataFrame) -> bool:
    """True when every cell finished or ran out of memory, and every finished one is within the target."""
    errors = table["allocated_error"].dropna().abs() if "allocated_error" in table else pd.Series(dtype=float)
    finished = int((table["status"] == "ok").sum())
    return (not table.empty and set(table["status"]) <= {"ok", "oom"} and len(errors) == finished
            and bool((errors <= TARGET_ERROR).all()))


def format_validation(table: pd.DataFrame) -> str:
    """The table for a terminal: GiB, signed percentages, '—' for nulls."""
    def gib(value) -> str:
        return "—" if value is None or pd.isna(value) else f"{value / 2**30:.3f}"

    def percent(value) -> str:
        return "—" if value is None or pd.isna(value) else f"{value:+.2%}"

    shown = pd.DataFrame({
        "cell": table["cell"], "status": table["status"],
        "cuda alloc GiB": table["cuda_allocated_bytes"].map(gib),
        "estimate GiB": table["estimated_allocated_bytes"].map(gib), "error": table["allocated_error"].map(percent),
        "cuda reserved GiB": table["cuda_reserved_bytes"].map(gib),
        "reserved error": table["reserved_error"].map(percent),
        "context GiB": table["cuda_context_bytes"].map(gib),
        "images/s": table["throughput_img_s"].map(lambda v: "—" if v is None or pd.isna(v) else f"{v:.1f}"),
    })
    errors, reserved = table["allocated_error"].dropna().abs(), table["reserved_error"].dropna()
    reserved_note = (f"reserved compared on {len(reserved)} cells" if len(reserved)
                     else "reserved not compared: the estimates give no reserved figure")
    return (shown.to_string(index=False) + f"\n{int((errors <= TARGET_ERROR).sum())} of {len(errors)} measured cells "
            f"within ±{TARGET_ERROR:.0%} (allocated); {reserved_note}")


# -- the reference folder --------------------------------------------------------------------------------------------
def reference_folder(gpu_name: str, when: datetime.date | None = None, root: Path = REFERENCE_ROOT) -> Path:
    """reports/reference/<gpu>-<date>/, e.g. reports/reference/nvidia-h100-80gb-hbm3-2025-06-30/."""
    when = when or datetime.datetime.now(datetime.timezone.utc).date()
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    return root / f"{slug}-{when.isoformat()}"


def write_reference(out: Path, table: pd.DataFrame, command: str) -> list[Path]:
    """Complete a validated result folder into a reference ready to commit: the environment, the exact command,
    a README saying how to contribute it, and a .gitignore keeping the regenerable HTML out. Returns the files."""
    from cadbench.harness.environment import collect_environment

    environment = {**collect_environment(),
                   "settings": {name: os.environ.get(name) for name in SETTINGS_THAT_MOVE_MEMORY}}
    gpu = environment.get("gpu_name") or "unknown GPU"
    errors = table["allocated_error"].dropna().abs()
    written = [out / "environment.json", out / "command.txt", out / "README.md", out / ".gitignore"]
    write_atomically(written[0], json.dumps(_strict(environment), indent=2, allow_nan=False))
    write_atomically(written[1], command + "\n")
    write_atomically(written[2], REFERENCE_README.format(
        gpu=gpu, folder=out.as_posix(), folder_name=out.name, command=command, cells=len(table),
        ok=int((table["status"] == "ok").sum()), oom=int((table["status"] == "oom").sum()), within=int((errors <= TARGET_ERROR).sum()), measured=len(errors),
        target=f"{TARGET_ERROR:.0%}", commit=environment.get("git_commit") or "unknown",
        torch=environment.get("torch_version"), cuda=environment.get("cuda_version"),
        driver=environment.get("driver_version")))
    write_atomically(written[3], "# regenerable: cadbench report <this folder>\nindex.html\n")
    return written


REFERENCE_README = """# Reference measurements: {gpu}

Measured with cadbench on a real GPU by

```sh
{command}
```

cadbench commit {commit}, torch {torch}, CUDA {cuda}, driver {driver}; the rest is in `environment.json`.
{cells} cells: {ok} finished, {oom} out of memory; the estimator's allocated memory is within ±{target} of
`torch.cuda.max_memory_allocated` on {within} of {measured} measured cells.

- `results.json` / `results.csv` (and the journal `results.jsonl`, `run.json`): every cell as `cadbench run` records
  it on CUDA: `max_memory_allocated`, `max_memory_reserved`, NVML's per-process memory (end and peak), step times.
- `validation.json` / `validation.csv`: each cell's estimate against its measurement (`allocated_error`,
  `reserved_error` = estimate / cuda - 1), the CUDA context NVML sees beyond the allocator, throughput.
- `environment.json`: versions, GPU, driver, and the environment variables that move memory figures.
- `command.txt`: the command above.

The HTML report (`cadbench report`) reads this folder from `reports/reference/` and shows the estimator's measured
error next to every estimate of the same cell.

## Contributing it back

1. Check that the numbers look sane (`validation.csv`); do not edit them. Rerunning the same command resumes.
2. In your clone of cadbench (the `.gitignore` here keeps the regenerable `index.html` out):

   ```sh
   git checkout -b reference-{folder_name}
   git add {folder}
   git commit -m "Reference measurements: {gpu}"
   ```

3. Open a pull request with that title, and paste the table `cadbench validate` printed into its description.
"""


def _plain(value: Any) -> Any:
    """numpy scalars and NaN (rows read through pandas) as plain Python values and None."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _strict(value: Any) -> Any:
    """`value` with every NaN replaced by None and numpy scalars made plain, for strict JSON."""
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    return _plain(value)

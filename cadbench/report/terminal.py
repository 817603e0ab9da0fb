"""What a sweep prints at its end: the comparison table (methods side by side, memory as a ratio of a baseline),
the throughput table, and the lines around them (why blanks are blank, quality, how the cells were measured).

Methods are shown by their labels: a method with options is its own column, 'lora (rank 16)' beside 'lora', and so
is a method with memory levers, 'sam_adapter + checkpointed encoder' beside 'sam_adapter'.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from cadbench.backbones import RANDOM_WEIGHTS, get_backbone
from cadbench.errors import CadbenchError
from cadbench.harness.options import RunOptions
from cadbench.measure.timing import NOISY_SPREAD
from cadbench.vocabulary.cell import Cell, cell_key, lever_label
from cadbench.vocabulary.levers import declared_levers
from cadbench.vocabulary.method_spec import method_label, split_method_spec
from cadbench.vocabulary.modes import Mode
from cadbench.vocabulary.outcomes import INFERENCE
from cadbench.vocabulary.prompts import WHOLE_IMAGE, describe_prompts

GB = 10**9  # decimal gigabytes, as GPU capacities and the report state them
SHORT_NAMES = {"batch_size": "batch", "image_px": "px"}
LEVER_SEPARATOR = " + "
DEFAULT_BASELINE = "sam_adapter"


def method_columns() -> tuple[str, ...]:
    """What a method label is made of: the method spec (see Cell.method_label) and each declared lever (see
    lever_label)."""
    return ("method", "method_options", "prompts_per_image", *(lever.name for lever in declared_levers()))


def method_labels(rows: pd.DataFrame) -> list[str]:
    """Each row's method label: 'lora (rank 16)', or the bare name at the method's defaults (and in rows written
    before methods had options), followed by its objects per image unless the whole-image protocol, and its non-default
    levers: 'sam_adapter + 8 objects per image + checkpointed encoder'."""
    options = rows["method_options"] if "method_options" in rows else [""] * len(rows)
    labels = []
    for (_, row), option in zip(rows.iterrows(), options):
        label = method_label(row["method"], option if isinstance(option, str) else "")
        if row.get("step_kind") == INFERENCE:
            label = f"{label} (inference)"
        prompts = row.get("prompts_per_image")  # a row written before the dimension existed: the default
        prompts = describe_prompts(WHOLE_IMAGE if prompts is None or pd.isna(prompts) else str(prompts))
        label = f"{label}{LEVER_SEPARATOR}{prompts}" if prompts else label
        levers = lever_label(row)
        labels.append(f"{label}{LEVER_SEPARATOR}{levers}" if levers else label)
    return labels


def baseline_label(spec: str) -> str:
    """The label of the method spec a user names as baseline, canonical where the method is installed."""
    from cadbench.registry import parse_method_spec

    try:
        return parse_method_spec(spec).label
    except CadbenchError:  # a result file read where its method is not installed: take the text as written
        return method_label(*split_method_spec(spec))


def choose_baseline(labels: list[str], requested: str | None) -> str | None:
    """The baseline's label: the requested method spec's, else sam_adapter's when it was measured."""
    if requested:
        return baseline_label(requested)
    return DEFAULT_BASELINE if DEFAULT_BASELINE in labels else None


def identity_columns(rows: pd.DataFrame) -> list[str]:
    """The columns a table line stands for, beyond the method: the cell's key columns that are not part of the method
    label (backbone, batch size, precision, ...). The image size is shown as the pixels it stands for (`image_px`,
    'px') where any row is not at its backbone's native size, and left out where none is (the table of a grid
    without --image-size is the one it was before image sizes)."""
    identity = [column for column in Cell.key_columns() if column not in method_columns() and column in rows]
    if "image_size" in identity:
        identity.remove("image_size")
        sizes = rows["image_size"].fillna(0)
        if (sizes != 0).any():
            shown = "image_px" if "image_px" in rows and rows["image_px"].notna().all() else "image_size"
            identity.insert(identity.index("precision") + 1 if "precision" in identity else len(identity), shown)
    return identity


def comparison_table(rows: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """One line per cell identity without the method (backbone x batch size x precision x ...), one column per
    method label: 'peak GB (ratio×)' or OOM/error. `baseline` is a method label."""
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(method=method_labels(rows))
    methods = list(dict.fromkeys(rows["method"]))
    identity = identity_columns(rows)
    lines = []
    for values, group in rows.groupby(identity, sort=False, dropna=False):
        by_method = {row["method"]: row for _, row in group.iterrows()}
        base = by_method.get(baseline) if baseline else None
        base_peak = base["peak_memory_bytes"] if base is not None and base["status"] == "ok" else None
        line = {SHORT_NAMES.get(column, column): int(value) if column in ("batch_size", "image_px") else value
                for column, value in zip(identity, values)}
        for method in methods:
            line[method] = _memory_cell(by_method.get(method), base_peak)
        lines.append(line)
    return pd.DataFrame(lines).fillna("—")


def throughput_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Images/s, laid out like `comparison_table` (one column per method label), for the cells that were timed
    only; '—' where a method was not timed, and a timing whose steps were too uneven to trust marked 'noisy'
    (see `cadbench.measure.timing.NOISY_SPREAD`). Empty when no cell was timed."""
    if rows.empty or rows["throughput_img_s"].isna().all():
        return pd.DataFrame()
    rows = rows.assign(method=method_labels(rows))
    methods = list(dict.fromkeys(rows.loc[rows["throughput_img_s"].notna(), "method"]))
    identity = identity_columns(rows)
    lines = []
    for values, group in rows.groupby(identity, sort=False, dropna=False):
        timed = group[group["throughput_img_s"].notna()]
        if timed.empty:
            continue
        line = {SHORT_NAMES.get(column, column): int(value) if column in ("batch_size", "image_px") else value
                for column, value in zip(identity, values)}
        by_method = {row["method"]: row for _, row in timed.iterrows()}
        for method in methods:
            row = by_method.get(method)
            line[method] = "—" if row is None else f"{row['throughput_img_s']:.2f}" + (
                " noisy" if row.get("step_time_noisy") is True else "")
        lines.append(line)
    return pd.DataFrame(lines)


def to_text(table: pd.DataFrame) -> str:
    """A table as text no wider than the terminal (or $COLUMNS): pandas wraps columns that do not fit into further
    blocks. Off a terminal (a log) the lines are left whole."""
    import shutil

    width = shutil.get_terminal_size((0, 0)).columns
    return table.to_string(index=False, line_width=width or None)


def _memory_cell(row, base_peak) -> str:
    if row is None:
        return "—"
    if row["status"] == "oom":
        return "OOM"
    if row["status"] == "error":
        return "error"
    if row["status"] == "not_applicable":
        return "not applicable"
    peak = row["peak_memory_bytes"]
    if pd.isna(peak):
        return "n/a"
    text = f"{peak / GB:.2f} GB"
    if base_peak and not pd.isna(base_peak):
        text += f" ({peak / base_peak:.2f}×)"
    return text


def blanks_explained(cells: list[Cell], mode_of: Callable[[Cell], Mode], options: RunOptions) -> str | None:
    """One line on why estimated cells have no throughput or quality, and what gives them (None when no cell was
    estimated, or when only memory was asked for)."""
    estimated = [cell for cell in cells if mode_of(cell) == "estimate"]
    if options.estimate_only or not estimated:
        return None
    line = (f"Why throughput and quality are blank: {len(estimated)} of {len(cells)} cells were estimated (peak "
            f"memory only: no CUDA GPU here), and timing or fine-tuning them needs one.")
    on_cpu = [cell for cell in cells if mode_of(cell) == "cpu"]
    if on_cpu:
        names = sorted({cell.backbone for cell in on_cpu})
        what = ("CPU timings, a pipeline check of fine-tuning" if all(get_backbone(name).test_scale for name in names)
                else "CPU timings and quality")
        return line + f" The {', '.join(names)} cells marked cpu ran for real on this CPU ({what})."
    methods = ",".join(dict.fromkeys(cell.method_spec for cell in cells))
    return line + (f" On this CPU, `cadbench run --methods {methods} --backbone test_scale` gives CPU timings and a "
                   "test-scale quality check (`--device cpu` times full-size cells, slowly).")


MODE_WORDS = {"estimate": "estimated", "cpu": "run on the CPU", "cuda": "run on CUDA"}


def cells_sentence(ran: Iterable[Mode], skipped: int) -> str:
    """'36 cells estimated, 12 cells run on the CPU, 0 already finished': how this invocation measured its cells."""
    counts = {mode: 0 for mode in MODE_WORDS}
    for mode in ran:
        counts[mode] += 1
    parts = [f"{count} {'cell' if count == 1 else 'cells'} {MODE_WORDS[mode]}" for mode, count in counts.items()
             if count]
    return ", ".join(parts or ["no cell measured"]) + f", {skipped} already finished"


def _known(value) -> bool:
    return value is not None and not pd.isna(value)


def reference_phrase(row) -> str:
    """', +0.071 IoU / +0.052 Dice over zero-shot (IoU 0.580, Dice 0.710); box fill IoU 0.452, Dice 0.610 (eval
    boxes +3 px)': a fine-tuned row of the object protocol against its zero-shot and box-fill references ('' when
    the row has none). With random weights the zero-shot figure is said to be meaningless, not hidden."""
    if not (_known(row.get("zero_shot_iou")) and _known(row.get("iou"))):
        return ""
    zero = f"zero-shot (IoU {row['zero_shot_iou']:.3f}, Dice {row['zero_shot_dice']:.3f})"
    if row.get("step_kind") == INFERENCE:  # the zero-shot row itself
        text = ""
    elif row.get("weights") == RANDOM_WEIGHTS:
        text = f"; {zero}: meaningless, random weights"
    else:
        text = (f", {row['iou'] - row['zero_shot_iou']:+.3f} IoU / {row['dice'] - row['zero_shot_dice']:+.3f} Dice "
                f"over {zero}")
    if _known(row.get("box_fill_iou")):
        text += (f"; box fill IoU {row['box_fill_iou']:.3f}, Dice {row['box_fill_dice']:.3f} (eval boxes "
                 f"+{row['eval_box_margin_px']:g} px)")
    return text


def _how_trained(row) -> str:
    """'after 50 steps of quick', or for the zero-shot row 'as built, no training' (with random weights, said to be
    meaningless)."""
    if row.get("step_kind") != INFERENCE:
        return f"after {int(row['train_steps'])} steps of {row['protocol']}"
    if row.get("weights") == RANDOM_WEIGHTS:
        return "as built, no training: meaningless, random weights"
    return "as built, no training"


def quality_provenance(row, model: str) -> str:
    """Where a quality figure comes from: 'measured on CPU · real weights (litemedsam, sha256:79d8c9dc…) ·
    nuclei-sample (69 test objects)'."""
    device = {"cpu": "CPU", "cuda": "CUDA"}.get(str(row.get("throughput_source")), str(row.get("device") or "?"))
    weights = str(row.get("weights"))
    weights = (f"random weights ({model})" if weights == RANDOM_WEIGHTS else
               f"real weights ({model}, {weights[:15]}…)" if weights.startswith("sha256:") else f"{weights} ({model})")
    dataset = str(row.get("quality_dataset") or "").split(",", 1)[0]  # its name; the row has the whole summary
    objects = f" ({int(row['test_objects'])} test objects)" if _known(row.get("test_objects")) else ""
    return f"measured on {device} · {weights} · {dataset}{objects}"


def print_sweep_summary(frame: pd.DataFrame, labels: list[str], baseline_method: str | None, mode: str,
                        out_dir: Path, modes: list[Mode], skipped: int, errored: list[dict], notes: list[str],
                        blanks: str | None = None) -> None:
    """What a finished sweep prints: the peak-memory table, the throughput table, why blanks are blank, the quality
    lines, errors (on stderr), how the cells were measured and where the results are."""
    baseline = choose_baseline(labels, baseline_method)
    source = ("measured on CUDA (max_memory_allocated)" if mode == "cuda" else
              "estimated (fake-tensor replay of the training step; no GPU used)")
    # one table per task (objects per image): cells prompted differently are not the same job, so they share no line
    tasks = (frame["prompts_per_image"].fillna(WHOLE_IMAGE).astype(str) if "prompts_per_image" in frame
             else pd.Series(WHOLE_IMAGE, index=frame.index))
    for task in sorted(dict.fromkeys(tasks), key=lambda task: task != WHOLE_IMAGE):
        part = frame[tasks == task]
        ratios = baseline if baseline in method_labels(part) else None
        table = comparison_table(part, ratios)
        what = f" ({describe_prompts(task)})" if describe_prompts(task) and len(set(tasks)) > 1 else ""
        print(f"\nPeak training memory{what}, {source}" + (f"; ratios to {ratios}" if ratios else "") + ":")
        if not table.empty:
            print(to_text(table))
    throughput = throughput_table(frame)
    if not throughput.empty:
        where = sorted(set(frame["throughput_source"].dropna()))
        print(f"\nTraining throughput, images/s ({'/'.join(where)}"
              + ("; CPU timings are not comparable to GPU figures" if "cpu" in where else "") + "):")
        print(to_text(throughput))
        if frame["step_time_noisy"].eq(True).any():
            print(f"noisy: the slowest steps took over {NOISY_SPREAD:g}× the median even after timing the cell a "
                  "second time (outside load?): not a trend.")
    if frame.get("step_kind", pd.Series(dtype=object)).eq(INFERENCE).any():
        print("(inference): a method that does not train (zero_shot, the model as built); its memory and throughput "
              "are an inference step's (forward under no_grad, no gradients or optimizer states).")
    if blanks:
        print(blanks)
    for name in sorted({b for b in frame["backbone"] if get_backbone(b).test_scale}):
        what = ("a tiny SAM (128 px, 4 blocks) made of Meta's classes" if name == "test_scale"
                else f"a tiny model ({get_backbone(name).describe})")
        print(f"{name}: {what}, for CPU demos. Its IoU/Dice are a pipeline check (fine-tuning and scoring ran end to "
              "end), not a quality result: with random weights and a short fine-tune it may still predict "
              "background everywhere (IoU 0).")
    quality = frame[frame["dice"].notna()]
    for label, (_, row) in zip(method_labels(quality), quality.iterrows()):
        spec = get_backbone(row["backbone"])
        size = row.get("image_size")  # a cell off its backbone's native size says its pixels
        where = spec.label + (f" at {spec.input_size(int(size))} px" if size and not pd.isna(size) else "")
        if spec.test_scale and row["weights"] == RANDOM_WEIGHTS:
            print(f"pipeline check (test scale, random weights) {label} · {where} · batch {row['batch_size']}: IoU "
                  f"{row['iou']:.3f}, Dice {row['dice']:.3f} {_how_trained(row)}{reference_phrase(row)} "
                  f"({row['quality_dataset']})")
            continue
        print(f"quality {label} · batch {row['batch_size']}: IoU {row['iou']:.3f}, Dice {row['dice']:.3f} "
              f"{_how_trained(row)}{reference_phrase(row)}\n    {quality_provenance(row, where)}")
    if set(frame["weights"].dropna()) == {RANDOM_WEIGHTS}:
        print("Weights: random (no --checkpoint); memory and speed do not depend on them.")
    for row in errored:
        print(f"error in {cell_key(row)}: {row['error']}", file=sys.stderr)
    print(f"{cells_sentence(modes, skipped)}; results in {out_dir}/ (results.jsonl, results.json, "
          f"results.csv, index.html)")
    for line in notes:
        print(line)

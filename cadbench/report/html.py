"""Build `index.html` from one or more result folders."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace
from pathlib import Path

import jinja2
import pandas as pd

from cadbench.backbones import BACKBONES, RANDOM_WEIGHTS
from cadbench.errors import CadbenchError
from cadbench.families import FAMILIES
from cadbench.files import read_side_file, write_atomically
from cadbench.harness.options import DEFAULT_PROTOCOL
from cadbench.harness.results.documents import load_results
from cadbench.measure.cpu_allocator import short_cpu_description
from cadbench.measure.timing import NOISY_SPREAD
from cadbench.report import charts
from cadbench.report.reference import DEFAULT_REFERENCE_ROOT, Reference, choose_references, load_references
from cadbench.report.terminal import choose_baseline, method_labels, quality_provenance
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.outcomes import INFERENCE

GB = 1e9
ENVIRONMENT_KEYS = ("gpu_name", "driver_version", "cuda_version", "torch_version", "torchvision_version",
                    "segment_anything_version", "cadbench_version", "git_commit", "platform", "timestamp")


def _environment(folder: Path) -> dict:
    """What the first folder's results.json recorded of its environment; a damaged one costs that, not the report."""
    environment = read_side_file(folder / "results.json", "the report shows no environment").get("environment")
    return {key: environment.get(key) if isinstance(environment, dict) else None for key in ENVIRONMENT_KEYS}


def _read_json(path: Path) -> dict:
    """A side file (timelines, loss curves): a damaged one costs its charts, with a warning, not the report."""
    return read_side_file(path, "its charts are left out; resuming that run rebuilds it")


def _label(backbone: str) -> str:
    spec = BACKBONES.get(backbone)
    return spec.label if spec else backbone


def _family_label(backbone: str) -> str:
    """The model family a backbone's table is grouped under: 'SAM 2.1 (Hiera image encoder)'; 'other' for a
    backbone this cadbench does not know."""
    spec = BACKBONES.get(backbone)
    return FAMILIES[spec.family].label if spec is not None else "other"


def _own_definitions(methods, backbone: str) -> list[str]:
    """A line for each method of a section whose definition on the backbone's model family is cadbench's own rather
    than its authors' (e.g. cad on SAM 2.1), as `cadbench list` says it."""
    from cadbench.registry import available_methods

    spec = BACKBONES.get(backbone)
    known = available_methods()
    lines = []
    for name in dict.fromkeys(methods):
        method = known.get(name)
        note = method.own_definition_on.get(spec.family) if method is not None and spec is not None else None
        if note:
            lines.append(f"{name} on {spec.label}: {note}.")
    return lines


def _fmt_bytes(value) -> str:
    return "—" if pd.isna(value) else f"{value / GB:.2f} GB"


def _fmt(value, pattern="{:.2f}") -> str:
    return "—" if value is None or pd.isna(value) else pattern.format(value)


def _device(row: pd.Series) -> str:
    """Where the row's steps ran, as its `device` column says: 'GPU 1: NVIDIA H100 80GB HBM3' (the index where a
    launcher pinned the cell to one), 'cpu' with the name of the malloc setting it ran under (its value is in the row
    file), or '—' where no step ran on a device (an estimate)."""
    device = row.get("device")
    if device is None or pd.isna(device):
        return "—"
    name = short_cpu_description(str(device))
    index = row.get("gpu_index")
    return f"GPU {int(index)}: {name}" if index is not None and not pd.isna(index) else name


def _table(rows: pd.DataFrame, baseline: str | None,
           references: list[Reference] = ()) -> tuple[list[str], list[list[dict]]]:
    # where every row is an estimate, no step ran on a device: no column of dashes
    show_device = "device" in rows and bool(rows["device"].notna().any())
    columns = ["method", "batch", "precision", "status", "peak memory", "source", *(["device"] if show_device else []),
               *[reference.column for reference in references],
               f"× {baseline}" if baseline else "×",
               "reserved", "images/s", "FLOPs/step", "IoU", "Dice", "trainable params"]
    lines = []
    for _, row in rows.sort_values(["batch_size", "precision", "method"]).iterrows():
        base = rows[(rows["method"] == baseline) & (rows["batch_size"] == row["batch_size"])
                    & (rows["precision"] == row["precision"]) & (rows["status"] == "ok")] if baseline else None
        ratio = "—"
        if base is not None and not base.empty and row["status"] == "ok" and not pd.isna(row["peak_memory_bytes"]):
            ratio = f"{row['peak_memory_bytes'] / base['peak_memory_bytes'].iloc[0]:.2f}×"
        status_css = "oom" if row["status"] == "oom" else "error" if row["status"] == "error" else ""
        peak = "OOM" if row["status"] == "oom" else _fmt_bytes(row["peak_memory_bytes"])
        # a not-applicable reason's first clause here; the whole of it is under "Empty cells, and why"
        status = {"error": f"error: {row['error']}",
                  "not_applicable": f"not applicable: {str(row['error']).split(': ', 1)[0]}"}.get(row["status"],
                                                                                                   row["status"])
        throughput = _fmt(row["throughput_img_s"])
        if throughput != "—" and row["throughput_source"] == "cpu":
            throughput += " (cpu)"
        if throughput != "—" and row.get("step_time_noisy") is True:
            throughput += " noisy"
        values = [row["method"], str(row["batch_size"]), row["precision"],
                  status, peak, _fmt(row["memory_source"] or None, "{}"), *([_device(row)] if show_device else []),
                  *[reference.error_of(row) or "—" for reference in references],
                  ratio, _fmt_bytes(row["reserved_memory_bytes"]), throughput,
                  _fmt(row["flops_per_step"], "{:.3g}"), *_quality_cells(row),
                  _fmt(row["trainable_params"], "{:,.0f}")]
        lines.append([{"text": value, "css": ("text " if index < 3 else "")
                       + (status_css if index in (3, 4) else "")} for index, value in enumerate(values)])
    return columns, lines


def _is_pipeline_check(row) -> bool:
    """A test-scale model with random weights: its scores check the pipeline, they are no quality result."""
    spec = BACKBONES.get(row["backbone"])
    return bool(spec and spec.test_scale and row.get("weights") in (None, RANDOM_WEIGHTS))


def _quality_cells(row) -> list[str]:
    cells = [_fmt(row["iou"], "{:.3f}"), _fmt(row["dice"], "{:.3f}")]
    if _is_pipeline_check(row) and cells[0] != "—":
        cells = [f"{cell} (check)" for cell in cells]
    return cells


def _protocol_of(row) -> str:
    value = row.get("protocol")
    return DEFAULT_PROTOCOL if value is None or pd.isna(value) else str(value)


def _losses(curve) -> list[float]:
    """A cell's losses from loss_curves.json: a list (older results) or {"losses": [...], "epochs": [...]}."""
    return list(curve["losses"]) if isinstance(curve, dict) else list(curve)


def _quality_inputs(folders: list[Path]) -> tuple[pd.DataFrame, dict]:
    """Scored rows and their loss curves, keyed by protocol and cell: one folder holds one protocol, so folders of
    different protocols keep a row per cell each (the memory tables keep one row per cell, the last folder's)."""
    frames, curves = [], {}
    for folder in folders:
        frame = load_results(folder)
        frame = frame[frame["iou"].notna()].copy()
        frame["cell"] = [Cell.key_of(row) for _, row in frame.iterrows()]
        frame["protocol"] = [_protocol_of(row) for _, row in frame.iterrows()]
        frame["quality_key"] = [f"{protocol} {cell}" for protocol, cell in zip(frame["protocol"], frame["cell"])]
        # a method at another input size is another bar and point: quality is never averaged across resolutions
        native = [_backbone_at(backbone, pixels) == _label(backbone)
                  for backbone, pixels in zip(frame["backbone"], _pixels(frame))]
        frame["method"] = [method if at_native else f"{method} at {pixels:.0f} px"
                           for method, at_native, pixels in zip(frame["method"], native, _pixels(frame))]
        for cell, curve in _read_json(folder / "loss_curves.json").items():
            protocols = frame.loc[frame["cell"] == cell, "protocol"]
            protocol = curve.get("protocol") if isinstance(curve, dict) else None
            curves[f"{protocol or (protocols.iloc[0] if len(protocols) else DEFAULT_PROTOCOL)} {cell}"] = curve
        frames.append(frame)
    scored = pd.concat(frames, ignore_index=True).drop_duplicates(subset="quality_key", keep="last")
    return scored, curves


def _quality_sections(scored: pd.DataFrame, curves: dict) -> tuple[list[dict], dict | None]:
    """The Quality section (full-size models only, one part per protocol: rows of different protocols never share
    a chart) and the pipeline check (test-scale models with random weights). `scored` and `curves` are keyed by
    protocol and cell (`_quality_inputs`)."""
    check = scored[[_is_pipeline_check(row) for _, row in scored.iterrows()]]
    full = scored[~scored.index.isin(check.index)]
    sections = []
    for protocol, group in full.groupby("protocol", sort=False):
        keys = {cell: key for cell, key in zip(group["cell"], group["quality_key"]) if key in curves}
        label = f"protocol {protocol}"
        weights = ", ".join(sorted(set(group["weights"].dropna()))) or "unknown"
        section_charts = [
            charts.quality_bars(group, f"segmentation quality (test split), {label}"),
            charts.memory_vs_dice(group),
            charts.loss_curves({cell: _losses(curves[key]) for cell, key in keys.items()}, f"fine-tuning loss, {label}"),
            charts.validation_curves({cell: curves[key].get("epochs", []) for cell, key in keys.items()
                                      if isinstance(curves[key], dict)}, f"validation after each epoch, {label}"),
        ]
        provenance = list(dict.fromkeys(quality_provenance(row, _label(row["backbone"]))
                                        for _, row in group.iterrows()))
        sections.append({"protocol": protocol, "summary": _protocol_summary(protocol), "weights": weights,
                         "provenance": provenance,
                         "charts": [chart for chart in section_charts if chart],
                         "references": _reference_table(group)})
    if check.empty:
        return sections, None
    lines = []
    for _, row in check.iterrows():
        losses = _losses(curves[row["quality_key"]]) if row["quality_key"] in curves else []
        trend = f"{losses[0]:.3f} → {losses[-1]:.3f}" if losses else "—"
        lines.append([row["method"], _label(row["backbone"]), str(row["batch_size"]), row["protocol"],
                      _fmt(row["train_steps"], "{:.0f}"), trend, _fmt(row["iou"], "{:.3f}"),
                      _fmt(row["dice"], "{:.3f}")])
    steps = sorted({int(value) for value in check["train_steps"].dropna()})
    background = not (check[["iou", "dice"]].fillna(0) > 0).to_numpy().any()
    pipeline = {
        "columns": ["method", "backbone", "batch", "protocol", "steps", "loss (first → last)", "IoU", "Dice"],
        "rows": lines,
        "sentence": "These rows come from the test-scale SAM (128 px, 4 blocks) with random weights, fine-tuned for "
                    f"{'/'.join(map(str, steps)) or 'a few'} steps on this machine: they show that fine-tuning and "
                    "scoring run end to end, not how good any method is."
                    + (" IoU and Dice of 0 mean the model still predicts background everywhere, which a random-weight "
                       "model after so few steps is expected to do." if background else ""),
        "references": _reference_table(check),
        "charts": [chart for chart in (charts.loss_curves({cell: _losses(curves[key]) for cell, key
                                                           in zip(check["cell"], check["quality_key"]) if key in curves},
                                                          "pipeline check: fine-tuning loss"),) if chart],
    }
    return sections, pipeline


def _reference_table(group: pd.DataFrame) -> dict | None:
    """The object protocol's quality as rows, per backbone and test objects: zero-shot (the backbone as built, no
    training), each fine-tuned row, and box fill (the prompt box itself), all scored on the same test objects with
    the same evaluation boxes, each against zero-shot. None when no row of `group` has them (the whole-image
    protocol, older results)."""
    rows = group[group["zero_shot_iou"].notna()] if "zero_shot_iou" in group else group.iloc[0:0]
    if rows.empty:
        return None
    lines = []
    keys = ["backbone", "zero_shot_iou", "zero_shot_dice", "box_fill_iou", "box_fill_dice"]
    for (backbone, zero_iou, zero_dice, fill_iou, fill_dice), part in rows.groupby(keys, sort=False, dropna=False):
        random = part["weights"].isin([None, RANDOM_WEIGHTS]).any()

        def over(iou: float, dice: float) -> str:
            if random:
                return "meaningless (random weights)"
            return "—" if pd.isna(iou) else f"{iou - zero_iou:+.3f} / {dice - zero_dice:+.3f}"

        lines.append(["zero-shot (as built, no training)", _label(backbone), "any", "0", _fmt(zero_iou, "{:.3f}"),
                      _fmt(zero_dice, "{:.3f}"), "—"])
        trained = part[part["step_kind"] != INFERENCE] if "step_kind" in part else part
        for _, row in trained.iterrows():
            lines.append([row["method"], _label(backbone), str(row["batch_size"]), _fmt(row["train_steps"], "{:.0f}"),
                          _fmt(row["iou"], "{:.3f}"), _fmt(row["dice"], "{:.3f}"), over(row["iou"], row["dice"])])
        lines.append(["box fill (the prompt box itself)", _label(backbone), "—", "—", _fmt(fill_iou, "{:.3f}"),
                      _fmt(fill_dice, "{:.3f}"), over(fill_iou, fill_dice)])
    margins = sorted({float(value) for value in rows["eval_box_margin_px"].dropna()})
    jitter = next(iter(rows["train_box_jitter"].dropna()), "")
    weights = sorted(set(rows["weights"].dropna()))
    return {
        "columns": ["method", "backbone", "batch", "steps", "IoU", "Dice", "over zero-shot (IoU / Dice)"],
        "rows": lines,
        "sentence": "Every object of the test images prompted by its own box, scored against its own mask (means over "
                    "objects), on the same objects and boxes for every row: zero-shot, the backbone as built with no "
                    "method and no training (weights: " + (", ".join(weights) or "unknown") + "); each method after "
                    "fine-tuning; and box fill, the prompt box itself filled in, which a number must beat to mean "
                    "anything. Evaluation boxes: each object's tight box plus "
                    + "/".join(f"{margin:g}" for margin in margins) + " px on every side; training boxes: the same, "
                    + jitter + ". Zero-shot's own memory and inference speed are the zero_shot (inference) rows of "
                    "the tables above, where the run measured them.",
    }


def _protocol_summary(name: str) -> str:
    from cadbench.training.protocols import available_protocols

    protocol = available_protocols().get(name)
    return protocol.summary if protocol else f"protocol {name!r} (not known to this cadbench)"


def _full_size(rows: pd.DataFrame) -> pd.Series:
    """Which rows are of a full-size model (a test-scale one says nothing about which GPU to rent)."""
    return ~rows["backbone"].map(lambda name: bool(BACKBONES.get(name) and BACKBONES[name].test_scale))


def _pixels(rows: pd.DataFrame) -> pd.Series:
    """The input side each row ran at, in pixels: its `image_px`, else (results written before image sizes) its
    backbone's native size; NaN for a backbone this cadbench does not know."""
    native = rows["backbone"].map(lambda name: BACKBONES[name].image_size if name in BACKBONES else float("nan"))
    given = rows["image_px"] if "image_px" in rows else pd.Series(float("nan"), index=rows.index)
    return given.astype(float).fillna(native)


def _where(backbone: str, pixels: float) -> str:
    """'vit_b at 512 px' ('vit_b' where the size is not known)."""
    return backbone if pd.isna(pixels) else f"{backbone} at {pixels:.0f} px"


def _backbone_at(backbone: str, pixels: float) -> str:
    """A backbone's label, with the input size where it is not the backbone's native one: 'vit_b at 512 px'."""
    spec = BACKBONES.get(backbone)
    native = spec is not None and not pd.isna(pixels) and int(pixels) == spec.image_size
    return _label(backbone) if native or pd.isna(pixels) else f"{_label(backbone)} at {pixels:.0f} px"


def _fit_table(rows: pd.DataFrame, context_gb: float) -> tuple[list[str], list[list[str]]]:
    """Largest batch in the results that fits each card, per full-size method with its levers (the label names them:
    'sam_adapter + checkpointed encoder'), backbone and precision, in the results' order; a test-scale model says
    nothing about which GPU to rent."""
    capacities = charts.GPU_CAPACITIES_GB
    columns = ["method + levers", "backbone", "precision"] + [f"{capacity} GB" for capacity in capacities]
    lines = []
    needed = charts.card_needed_gb(rows, context_gb)
    full_size = _full_size(rows)
    ok = rows[(rows["status"] == "ok") & needed.notna() & full_size]
    for (method, backbone, pixels, precision), group in ok.groupby(["method", "backbone", "px", "precision"],
                                                                    sort=False, dropna=False):
        line = [method, _backbone_at(backbone, pixels), precision]
        for capacity in capacities:
            fitting = group[needed[group.index] <= capacity]["batch_size"]
            line.append(str(int(fitting.max())) if not fitting.empty else "—")
        lines.append(line)
    return columns, lines


def _lever_table(rows: pd.DataFrame, context_gb: float) -> tuple[list[str], list[list]]:
    """For each full-size method, backbone and batch size the results hold in more than one lever combination: the
    cheapest of those combinations (the advisor's order, cadbench.estimator.cheapest) that fits each card, as
    (levers, card needed), or "—". Takes the rows before their method column becomes a label."""
    from cadbench.estimator.cheapest import cheapness, describe_levers
    from cadbench.vocabulary.method_spec import method_label
    from cadbench.vocabulary.prompts import describe_prompts

    capacities = charts.GPU_CAPACITIES_GB
    columns = ["method", "backbone", "batch"] + [f"{capacity} GB" for capacity in capacities]
    needed = charts.card_needed_gb(rows, context_gb)
    full_size = _full_size(rows)
    groups: dict[tuple, dict[Cell, tuple[float, float | None]]] = {}
    for index, row in rows[(rows["status"] == "ok") & needed.notna() & full_size].iterrows():
        try:
            cell = Cell.from_row(row)
        except CadbenchError:  # a method or value this cadbench does not know: no advice from it
            continue
        flops = row.get("flops_per_step")
        # the objects per image are the task, never a lever: each value is a group of its own
        groups.setdefault((cell.method, cell.method_options, cell.prompts_per_image, cell.backbone, row["px"],
                           cell.batch_size), {})[cell] = (
            float(needed[index]), None if flops is None or pd.isna(flops) else float(flops))
    lines = []
    for (method, options, prompts, backbone, pixels, batch), found in groups.items():
        if len(found) < 2:
            continue
        plain = next(iter(found)).plain
        base = found.get(replace(plain, precision="fp32"), (None, None))[1]
        known = base is not None and all(flops is not None for _, flops in found.values())
        order = sorted(found, key=lambda cell: cheapness(cell, found[cell][1] / base if known else None))
        task = describe_prompts(prompts)
        line = [method_label(method, options) + (f" + {task}" if task else ""), _backbone_at(backbone, pixels),
                str(batch)]
        for capacity in capacities:
            cell = next((cell for cell in order if found[cell][0] <= capacity), None)
            line.append("—" if cell is None else (describe_levers(cell), f"{found[cell][0]:.1f} GB"))
        lines.append(line)
    return columns, lines


def _headlines(rows: pd.DataFrame, baseline: str | None) -> list[str]:
    if not baseline:
        return []
    lines = []
    ok = rows[(rows["status"] == "ok") & rows["peak_memory_bytes"].notna()]
    several_precisions = ok["precision"].nunique() > 1
    for (backbone, pixels, precision), group in ok.groupby(["backbone", "px", "precision"], sort=False, dropna=False):
        if BACKBONES.get(backbone) and BACKBONES[backbone].test_scale:
            continue  # a demo model's ratios are no headline
        with_baseline = group[group["method"] == baseline]["batch_size"]
        if with_baseline.empty:
            continue
        largest = with_baseline.max()  # the largest batch the baseline itself fits
        at = group[group["batch_size"] == largest].set_index("method")["peak_memory_bytes"]
        others = [f"{method} needs {at[method] / at[baseline]:.2f}×" for method in at.index if method != baseline]
        if others:
            source = ", ".join(sorted(set(group["memory_source"].dropna())))
            where = f"{_backbone_at(backbone, pixels)}, batch {largest}" + (f", {precision}" if several_precisions
                                                                             else "")
            lines.append(f"{where}: {baseline} peaks at {at[baseline] / GB:.1f} GB; "
                         f"{'; '.join(others)} of that ({source}).")
    return lines


def _estimate_notes(rows: pd.DataFrame) -> list[str]:
    """What the estimator models and leaves out (`MemoryEstimate.notes`), for the rows it estimated: its notes, and
    those of each allocator setting the rows were simulated under; none when no row was estimated."""
    estimated = rows[rows["memory_source"] == "estimated"]
    if estimated.empty:
        return []
    from cadbench.estimator import AllocatorConfig
    from cadbench.estimator.estimate import NOTES
    from cadbench.version import __version__

    notes = list(NOTES)
    for setting in sorted(set(estimated["alloc_conf"].dropna()) - {"default"}):
        try:
            notes.extend(AllocatorConfig.parse(setting).notes)
        except CadbenchError:  # a row from a cadbench that parsed settings this one refuses: nothing more to say
            pass
    older = sorted(set(estimated["cadbench_version"].dropna()) - {__version__})
    if older:
        notes.append(f"These notes are cadbench {__version__}'s; rows estimated by cadbench {', '.join(older)} may "
                     "have modelled less (their cadbench_version column says which made each).")
    return notes


def build_report(folders: list[str | Path], out_file: str | Path | None = None,
                 baseline_method: str | None = None, context_gb: float | None = None,
                 reference_root: str | Path | None = DEFAULT_REFERENCE_ROOT) -> Path:
    """Render one self-contained HTML file from the results in `folders`; returns its path. Estimates are shown
    with their measured error when `reference_root` holds GPU references for their cells (see report.reference)."""
    if context_gb is None:
        from cadbench.estimator import DEFAULT_CUDA_CONTEXT_BYTES

        context_gb = DEFAULT_CUDA_CONTEXT_BYTES / GB
    folders = [Path(folder) for folder in folders]
    for folder in folders:
        if not (folder / "results.json").is_file():
            raise CadbenchError(f"{folder} holds no results.json (not a cadbench result folder)")
    rows = pd.concat([load_results(folder) for folder in folders], ignore_index=True)
    rows["cell"] = [Cell.key_of(row) for _, row in rows.iterrows()]
    # the same cell in several folders: the folder named last wins
    rows = rows.drop_duplicates(subset="cell", keep="last")
    rows["px"] = _pixels(rows)
    lever_columns, lever_rows = _lever_table(rows, context_gb)
    rows["method_name"] = rows["method"]
    rows["method"] = method_labels(rows)  # shown as 'lora (rank 16)': a method with options is a method of its own
    if rows.empty:
        raise CadbenchError(f"{', '.join(map(str, folders))}: the results hold no rows")
    methods = list(dict.fromkeys(rows["method"]))
    baseline = choose_baseline(methods, baseline_method)
    references = choose_references(load_references(reference_root), rows) if reference_root else []
    timelines, curves = {}, {}
    for folder in folders:
        timelines.update(_read_json(folder / "timelines.json"))
        curves.update(_read_json(folder / "loss_curves.json"))

    sections = []
    # one section per backbone and, where the results hold several input sizes of it, per size: a chart never
    # mixes resolutions
    for (backbone, pixels), subset in rows.groupby(["backbone", "px"], sort=False, dropna=False):
        several = rows.loc[rows["backbone"] == backbone, "px"].nunique(dropna=False) > 1
        where = _where(backbone, pixels) if several else backbone
        sources = "/".join(sorted(set(subset["memory_source"].dropna()))) or "no data"
        columns, lines = _table(subset, baseline, references)
        section_charts = [charts.memory_vs_batch(subset, backbone, sources, context_gb, heading=where),
                          charts.throughput_vs_batch(subset, backbone, "/".join(
                              sorted(set(subset["throughput_source"].dropna()))), heading=where)]
        largest = int(subset["batch_size"].max())
        section_charts.append(charts.breakdown_bars(subset, backbone, largest, heading=where))
        at_largest = subset[subset["batch_size"] == largest]
        step_series = {method: timelines[key] for method, key in zip(at_largest["method"], at_largest["cell"])
                       if key in timelines}
        section_charts.append(charts.timelines(step_series, f"{where}, batch {largest}: live memory over one step"))
        checked = any(_is_pipeline_check(row) and not pd.isna(row["iou"]) for _, row in subset.iterrows())
        label = _label(backbone) + (f" at {pixels:.0f} px" if several and not pd.isna(pixels) else "")
        sections.append({"name": backbone, "label": label, "family": _family_label(backbone),
                         "columns": columns, "rows": lines,
                         "own_definitions": _own_definitions(subset["method_name"], backbone),
                         "charts": [chart for chart in section_charts if chart], "pipeline_check": checked,
                         "noisy": bool(subset["step_time_noisy"].eq(True).any())})

    # the tables grouped by model family (SAM, SAM 2.1, LiteMedSAM), families and their backbones in the order the
    # results first hold them (a `not_applicable` row, written before anything runs, does not count)
    ran = rows[rows["status"] != "not_applicable"]
    first = {backbone: index for index, backbone in enumerate(dict.fromkeys([*ran["backbone"], *rows["backbone"]]))}
    families = list(dict.fromkeys(_family_label(backbone) for backbone in first))
    sections.sort(key=lambda section: (families.index(section["family"]), first[section["name"]]))
    fit_columns, fit_rows = _fit_table(rows, context_gb)
    quality_sections, pipeline = _quality_sections(*_quality_inputs(folders))
    notes = sorted({f"{column}: {reason}" for reasons in rows["null_reasons"].dropna()
                    for column, reason in (reasons if isinstance(reasons, dict) else json.loads(reasons)).items()
                    if column not in ("error",)})
    environment = _environment(folders[0])
    template = jinja2.Environment(loader=jinja2.PackageLoader("cadbench.report", "templates"),
                                  autoescape=jinja2.select_autoescape(["html", "j2"]),
                                  undefined=jinja2.StrictUndefined).get_template("report.html.j2")
    html = template.render(
        generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), sources=[str(f) for f in folders],
        headlines=_headlines(rows, baseline), environment=environment,
        memory_sources=", ".join(sorted(set(rows["memory_source"].dropna()))) or "none",
        weights=", ".join(sorted(set(rows["weights"].dropna()))) or "unknown",
        backbones=sections, grouped_by_family=len(families) > 1, fit_columns=fit_columns, fit_rows=fit_rows, context_gb=context_gb,
        lever_columns=lever_columns, lever_rows=lever_rows,
        quality_sections=quality_sections, pipeline=pipeline, null_notes=notes, references=references,
        estimate_notes=_estimate_notes(rows),
        noisy_spread=NOISY_SPREAD,
    )
    target = Path(out_file) if out_file else folders[0] / "index.html"
    write_atomically(target, html)
    return target

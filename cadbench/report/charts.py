"""Charts as inline SVG strings (matplotlib, Agg): no files, no remote assets."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cadbench.cards import GPU_CAPACITIES_GB  # noqa: E402  (the cards `cadbench fit` answers for, too)

GB = 1e9
METHOD_COLORS = {"decoder_only": "#7f7f7f", "cad": "#2a9d8f", "sam_adapter": "#e76f51", "lora": "#457b9d",
                 "full": "#1d1d1d", "peft": "#9b5de5"}
BREAKDOWN = (("breakdown_parameters_bytes", "parameters", "#264653"),
             ("breakdown_gradients_bytes", "gradients", "#e9c46a"),
             ("breakdown_optimizer_states_bytes", "optimizer states", "#f4a261"),
             ("breakdown_activations_bytes", "activations (saved for backward)", "#e76f51"),
             ("breakdown_temporaries_bytes", "temporaries", "#a8dadc"))


def color(method: str, index: int) -> str:
    return METHOD_COLORS.get(method, plt.get_cmap("tab10")(index % 10))


def to_svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG sits inside HTML


def _lines_over_batch_size(data: pd.DataFrame, column: str, scale: float, height: float):
    """One line per method of `column` / `scale` over batch sizes (log 2 axis); returns figure, axes, top value."""
    figure, axes = plt.subplots(figsize=(6.4, height))
    top = 0.0
    for index, (method, group) in enumerate(data.groupby("method", sort=False)):
        group = group.sort_values("batch_size")
        values = group[column].astype(float) / scale
        top = max(top, values.max())
        axes.plot(group["batch_size"], values, marker="o", label=method, color=color(method, index))
    sizes = sorted(data["batch_size"].unique())
    axes.set_xscale("log", base=2)
    axes.set_xticks(sizes, labels=[str(size) for size in sizes])
    axes.set_xlabel("batch size")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    return figure, axes, top


def card_needed_gb(rows: pd.DataFrame, context_gb: float) -> pd.Series:
    """The smallest card (GB) each row's step runs on: the simulated OOM line (estimated rows, context included),
    else the measured reserved memory plus the CUDA context (GPU rows); NaN where neither is known."""
    oom = rows["oom_capacity_bytes"] if "oom_capacity_bytes" in rows else pd.Series(float("nan"), index=rows.index)
    measured = rows["reserved_memory_bytes"].astype(float) / GB + context_gb
    return (oom.astype(float) / GB).fillna(measured)


def memory_vs_batch(rows: pd.DataFrame, backbone: str, source_label: str, context_gb: float = 0.0,
                    heading: str | None = None) -> str:
    """Peak memory per method over batch sizes and, dashed, the card each needs (the simulated OOM line, or measured
    reserved memory plus the CUDA context); lines at the common GPU capacities the data comes near."""
    data = rows[(rows["backbone"] == backbone) & (rows["status"] == "ok")]
    figure, axes, top = _lines_over_batch_size(data, "peak_memory_bytes", GB, 3.8)
    needed = card_needed_gb(data, context_gb)
    labelled = False
    for index, (method, group) in enumerate(data.groupby("method", sort=False)):
        group_needed = needed[group.index]
        if group_needed.notna().any():
            order = group["batch_size"].argsort().to_numpy()
            axes.plot(group["batch_size"].to_numpy()[order], group_needed.to_numpy()[order], linestyle="--",
                      linewidth=1.0, color=color(method, index),
                      label=None if labelled else "card needed (OOM line, dashed)")
            labelled = True
            top = max(top, group_needed.max())
    shown = [capacity for capacity in GPU_CAPACITIES_GB if capacity <= top * 1.3]
    if top > 0:  # a chart with nothing drawn (every cell not applicable) keeps matplotlib's own limits
        axes.set_ylim(0, max([top, *shown]) * 1.08)
    for capacity in shown:
        axes.axhline(capacity, color="#999", linestyle="--", linewidth=0.8)
        axes.annotate(f"{capacity} GB GPU", xy=(1.0, capacity), xycoords=("axes fraction", "data"),
                      xytext=(3, 0), textcoords="offset points", va="center", fontsize=8, color="#555")
    axes.set_ylabel(f"GB, {source_label} (solid: peak; dashed: card needed)")
    axes.set_title(f"{heading or backbone}: peak training memory")
    _legend_below(axes)  # inside the axes it covers the GPU capacity lines and their labels
    return to_svg(figure)


def _legend_below(axes, **options) -> None:
    """The legend under the x axis, clear of the data and of labels at the axes' edges."""
    count = len(axes.get_legend_handles_labels()[1])
    if not count:  # nothing drawn (e.g. every cell of the backbone not applicable): no legend
        return
    axes.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=min(count, 4), fontsize=8,
                **options)


def throughput_vs_batch(rows: pd.DataFrame, backbone: str, source_label: str, heading: str | None = None
                        ) -> str | None:
    data = rows[(rows["backbone"] == backbone) & rows["throughput_img_s"].notna()]
    if data.empty:
        return None
    figure, axes, _ = _lines_over_batch_size(data, "throughput_img_s", 1.0, 3.4)
    axes.set_ylabel(f"images / s ({source_label})")
    axes.set_title(f"{heading or backbone}: training throughput")
    _legend_below(axes)
    return to_svg(figure)


def breakdown_bars(rows: pd.DataFrame, backbone: str, batch_size: int, heading: str | None = None) -> str | None:
    """Where the memory goes at the peak, stacked per method."""
    data = rows[(rows["backbone"] == backbone) & (rows["batch_size"] == batch_size) & (rows["status"] == "ok")]
    data = data[data["breakdown_parameters_bytes"].notna()]
    if data.empty:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 0.6 + 0.55 * len(data)))
    left = pd.Series(0.0, index=data.index)
    for column, label, fill in BREAKDOWN:
        values = data[column].astype(float) / GB
        axes.barh(data["method"], values, left=left, label=label, color=fill)
        left += values
    axes.set_xlabel("GB at the peak (estimated)")
    axes.set_title(f"{heading or backbone}, batch {batch_size}: memory at the peak")
    axes.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3)
    axes.grid(axis="x", alpha=0.3)
    return to_svg(figure)


PHASE_MARKERS = {"backward": "v", "optimizer": "D"}  # where each phase after the forward begins, on every line


def phase_starts(points: list) -> dict[str, int]:
    """The index of the first point of each phase after the first ('backward', 'optimizer'); points are (phase,
    live bytes) or (event number, phase, live bytes), as the estimator writes them."""
    starts: dict[str, int] = {}
    for position, point in enumerate(points):
        phase = point[-2]
        if phase in PHASE_MARKERS and phase not in starts:
            starts[phase] = position
    return starts


def timelines(series: dict[str, list[tuple[str, int]]], title: str) -> str | None:
    """Live memory over one training step, one line per method; on each line a marker where its backward pass and
    its optimizer step begin (the forward pass begins at 0)."""
    if not series:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 3.8))
    for index, (method, points) in enumerate(series.items()):
        if not points:
            continue
        # x is the share of the step done
        xs = [position / max(len(points) - 1, 1) for position in range(len(points))]
        ys = [point[-1] / GB for point in points]
        shade = color(method, index)
        axes.plot(xs, ys, label=method, color=shade, linewidth=1.2)
        for phase, position in phase_starts(points).items():
            axes.plot(xs[position], ys[position], marker=PHASE_MARKERS[phase], markersize=6, color=shade,
                      markeredgecolor="black", markeredgewidth=0.6, linestyle="none")
    for phase, marker in PHASE_MARKERS.items():  # legend entries for the marks, drawn in no method's colour
        axes.plot([], [], marker=marker, color="white", markeredgecolor="black", linestyle="none",
                  label=f"{phase} begins" if phase == "backward" else "optimizer step begins")
    axes.set_xlabel("progress through one training step (from the forward pass)")
    axes.set_ylabel("live memory (GB, estimated)")
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    _legend_below(axes)
    axes.grid(alpha=0.3)
    return to_svg(figure)


def quality_bars(rows: pd.DataFrame, title: str = "segmentation quality (test split)") -> str | None:
    """IoU and Dice per method (mean over the rows given: one protocol's). All-zero bars say why."""
    data = rows[rows["iou"].notna() & rows["dice"].notna()]
    if data.empty:
        return None
    data = data.groupby("method", sort=False)[["iou", "dice"]].mean()
    figure, axes = plt.subplots(figsize=(6.4, 3.2))
    positions = range(len(data))
    axes.bar([p - 0.2 for p in positions], data["iou"], width=0.4, label="IoU", color="#2a9d8f")
    axes.bar([p + 0.2 for p in positions], data["dice"], width=0.4, label="Dice", color="#e9c46a")
    axes.set_xticks(list(positions), labels=list(data.index))
    axes.set_ylim(0, 1)
    axes.set_title(title)
    if not (data[["iou", "dice"]] > 0).to_numpy().any():
        axes.text(0.5, 0.55, "IoU and Dice are 0 for every method:\nthe models predict background everywhere",
                  transform=axes.transAxes, ha="center", va="center", fontsize=9, color="#b42318")
    axes.legend(frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return to_svg(figure)


def validation_curves(records: dict[str, list[dict]], title: str = "validation after each epoch") -> str | None:
    """Validation IoU (solid) and Dice (dashed) after each epoch, one colour per cell; None where no cell was
    validated twice (a quick fine-tune scores once, at the end: its one point is the table's test score, no curve)."""
    series = {label: [r for r in epochs if r.get("validation_iou") is not None] for label, epochs in records.items()}
    series = {label: epochs for label, epochs in series.items() if epochs}
    if not any(len(epochs) > 1 for epochs in series.values()):
        return None
    figure, axes = plt.subplots(figsize=(6.4, 3.2))
    for index, (label, epochs) in enumerate(series.items()):
        shade = color(label.split("/")[0], index)
        xs = [r["epoch"] for r in epochs]
        axes.plot(xs, [r["validation_iou"] for r in epochs], marker="o", markersize=3, label=f"{label} IoU",
                  color=shade)
        axes.plot(xs, [r["validation_dice"] for r in epochs], linestyle="--", color=shade, linewidth=1)
    axes.set_xlabel("epoch")
    axes.set_ylabel("IoU (solid), Dice (dashed)")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(frameon=False, fontsize=7)
    axes.grid(alpha=0.3)
    return to_svg(figure)


def memory_vs_dice(rows: pd.DataFrame) -> str | None:
    data = rows[rows["dice"].notna() & rows["peak_memory_bytes"].notna()]
    if data.empty:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    for index, (method, group) in enumerate(data.groupby("method", sort=False)):
        axes.scatter(group["peak_memory_bytes"].astype(float) / GB, group["dice"], label=method,
                     color=color(method, index))
    axes.set_xlabel("peak memory (GB)")
    axes.set_ylabel("Dice")
    axes.set_title("the trade-off: memory vs quality")
    axes.legend(frameon=False)
    axes.grid(alpha=0.3)
    return to_svg(figure)


def loss_curves(curves: dict[str, list[float]], title: str = "fine-tuning loss") -> str | None:
    """Loss per training step: one small panel per method (shared axes), one line per cell of that method, so that
    no method's curves hide another's. `curves` is keyed by cell key ('cad/vit_b/4/fp32'); a line is labelled by
    the parts of its key that differ between the cells ('batch 4')."""
    curves = {key: losses for key, losses in curves.items() if losses}
    if not curves:
        return None
    labels = _varying_parts(list(curves))
    panels: dict[str, dict[str, list[float]]] = {}
    for key, losses in curves.items():
        panels.setdefault(key.split("/")[0], {})[labels[key]] = losses
    line_labels = list(dict.fromkeys(labels.values()))
    shades = {label: plt.get_cmap("viridis")(position / max(len(line_labels) - 1, 1) * 0.85)
              for position, label in enumerate(line_labels)}
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(6.4, 0.9 + 1.7 * rows), sharex=True, sharey=True,
                                squeeze=False)
    for axes, (method, lines) in zip(grid.flat, panels.items()):
        for label, losses in lines.items():
            axes.plot(range(1, len(losses) + 1), losses, color=shades[label], linewidth=1.0, label=label or method)
        axes.set_title(method, fontsize=9)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
    for axes in grid.flat[len(panels):]:
        axes.set_visible(False)
    for axes in grid[-1]:
        axes.set_xlabel("training step", fontsize=8)
    for axes in grid[:, 0]:
        axes.set_ylabel("loss", fontsize=8)
    figure.suptitle(f"{title} (BCE + soft IoU)", fontsize=10)
    if len(line_labels) > 1 or line_labels[0]:
        handles = [plt.Line2D([], [], color=shades[label]) for label in line_labels]
        figure.legend(handles, line_labels, frameon=False, fontsize=8, loc="lower center",
                      ncol=min(len(line_labels), 6), bbox_to_anchor=(0.5, -0.02))
        figure.tight_layout(rect=(0, 0.07, 1, 1))
    else:
        figure.tight_layout()
    return to_svg(figure)


def _varying_parts(keys: list[str]) -> dict[str, str]:
    """For cell keys, the parts after the method that differ between them: 'batch 4', 'vit_b batch 4', or ''."""
    split = {key: key.split("/")[1:] for key in keys}
    width = max(len(parts) for parts in split.values())
    varying = [position for position in range(width)
               if len({parts[position] if position < len(parts) else "" for parts in split.values()}) > 1]
    return {key: " ".join(f"batch {parts[position]}" if position == 1 else parts[position]
                          for position in varying if position < len(parts))
            for key, parts in split.items()}

"""The Python API behind `cadbench run` and `cadbench estimate`: `cadbench.run(...)` returns a DataFrame."""

from __future__ import annotations

import datetime
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch

from cadbench.backbones import (BACKBONES, build_sam, check_state_dict_matches, default_backbones,
    default_weights_label, file_sha256, get_backbone, left_out_notes, load_state_dict)
from cadbench.errors import CadbenchError
from cadbench.harness.cpu_share import LITEMEDSAM, TEST_SCALE, cpu_share
from cadbench.harness.environment import collect_environment
from cadbench.harness.grid import expand_grid
from cadbench.harness.launchers import launcher_for
from cadbench.harness.options import RunContext, RunOptions
from cadbench.harness.progress import sweep_progress
from cadbench.harness.results.rows import rows_to_frame
from cadbench.harness.results.store import ResultStore
from cadbench.harness.runner import sweep
from cadbench.registry import default_methods, parse_method_spec, unavailable_methods
from cadbench.report.terminal import blanks_explained, print_sweep_summary
from cadbench.vocabulary.cell import DEFAULT_BATCH_SIZES, Cell
from cadbench.vocabulary.modes import Device, Mode
from cadbench.vocabulary.precision import DEFAULT_PRECISIONS
from cadbench.vocabulary.prompts import WHOLE_IMAGE


def default_out_dir() -> Path:
    return Path("reports") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def mode_chooser(device: Device, estimate_only: bool, cuda: bool | None = None,
                 trains_on_cpu: Callable[[Cell], bool] | None = None) -> Callable[[Cell], Mode]:
    """How each cell is measured: on CUDA if there is one; without, full-size cells are estimated and test-scale
    cells (cheap enough) train for real on the CPU, as do the cells `trains_on_cpu` picks (the default run's CPU
    share, `cadbench.harness.cpu_share`); `--device cpu` trains every cell on the CPU. `cuda` says whether the
    cells' processes will have CUDA (a Slurm job with a GPU); None: as this process."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if device == "cuda" and not cuda:
        raise CadbenchError("--device cuda was asked for, but PyTorch sees no CUDA device here")
    if estimate_only:
        return lambda cell: "estimate"
    if device == "cuda" or (device == "auto" and cuda):
        return lambda cell: "cuda"
    if device == "cpu":
        return lambda cell: "cpu"
    picked = trains_on_cpu or (lambda cell: False)
    return lambda cell: "cpu" if get_backbone(cell.backbone).test_scale or picked(cell) else "estimate"


def resolve_checkpoints(checkpoint: str | Path | Mapping[str, str] | None, backbones: Sequence[str]) -> dict[str, str]:
    """One checkpoint path (one backbone only) or {backbone: path}, checked against each backbone up front. (The
    command line's `BACKBONE=PATH,...` text becomes such a mapping in `cadbench.commands.arguments`.)"""
    if not checkpoint:
        return {}
    if isinstance(checkpoint, (str, Path)):
        if len(backbones) != 1:
            raise CadbenchError(f"--checkpoint {checkpoint} fits one backbone, but {len(backbones)} were asked for "
                                f"({', '.join(backbones)}); use --checkpoint vit_b=PATH,vit_h=PATH")
        if "=" in str(checkpoint) and not Path(checkpoint).is_file():
            raise CadbenchError(f"checkpoint {checkpoint} does not exist or is not a file (a BACKBONE=PATH item names "
                                f"one of {', '.join(sorted(BACKBONES))})")
        mapping = {backbones[0]: str(checkpoint)}
    else:
        mapping = dict(checkpoint)
    for backbone, path in mapping.items():
        if backbone not in backbones:
            raise CadbenchError(f"--checkpoint names backbone {backbone!r}, which is not in --backbone "
                                f"({', '.join(backbones)})")
        spec = get_backbone(backbone)
        skeleton = build_sam(backbone, device="meta").sam
        check_state_dict_matches(skeleton, load_state_dict(path), spec, path)
    return mapping


def _check_estimable(cells: Iterable[Cell]) -> None:
    """Refuse up front, in one line, a cell the estimator will not replay (e.g. a batch size beyond its limit)."""
    from cadbench.estimator.cells import check_estimable

    for cell in cells:
        check_estimable(cell)


def _check_quality_setup(options: RunOptions, cells: list[Cell], mode_of: Callable[[Cell], Mode]) -> None:
    """Open the dataset's splits once up front, and check that some cell fine-tunes under the protocol, so that
    bad input is refused before any cell runs."""
    from cadbench.datasets import open_splits
    from cadbench.training.protocols import get_protocol

    trained = [cell for cell in cells if mode_of(cell) != "estimate"]
    objects = any(cell.prompts_per_image != WHOLE_IMAGE for cell in trained)  # masks read for their objects too
    open_splits(options.dataset, 128, layout=options.layout, seed=options.seed, test_fraction=options.test_fraction,
                val_fraction=options.val_fraction, objects=objects)
    protocol = get_protocol(options.protocol)
    if trained and all(protocol.trains_cell(cell.batch_size, cell.precision) for cell in trained):
        raise CadbenchError(f"--protocol {protocol.name} fine-tunes at batch size {protocol.batch_size} in "
                            f"{protocol.precision}, and no cell that trains has that; add {protocol.batch_size} to "
                            "--batch-sizes (or fp32 to --precision), or use --no-quality")


def run(
    methods: Iterable[str] | None = None,
    backbones: Iterable[str] | None = None,
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    precisions: Iterable[str] = DEFAULT_PRECISIONS,
    *,
    levers: Mapping[str, Iterable[Any]] | None = None,
    image_sizes: Iterable[int] | None = None,
    prompts_per_image: Iterable[str | int] = ("image",),
    checkpoint: str | Path | Mapping[str, str] | None = None,
    out: str | Path | None = None,
    baseline_method: str | None = None,
    show_progress: bool = True,
    print_summary: bool = True,
    launcher: str | Any = "local",
    **options: Any,
) -> pd.DataFrame:
    """Sweep methods x backbones x batch sizes x precisions; returns one row per cell (see results.contract_columns).

    On CUDA every cell trains for real in a fresh process. Without CUDA (or with `estimate_only`), peak memory comes
    from the GPU-free estimator and is marked `memory_source: estimated`; `device="cpu"` also times real CPU steps.

    Args:
        methods: method specs, 'cad' or 'lora:rank=16' (default: every registered method that can run here; one
            that cannot, e.g. peft without its package, is named on stderr and left out).
        backbones: backbone names (default: vit_b, vit_l, vit_h, SAM 2.1's sam2.1_hiera_t/s/b+/l where the `sam2`
            extra is installed, plus, when no GPU is used, a small model trained on the CPU:
            `cadbench.harness.cpu_share`).
        batch_sizes: batch sizes of the grid.
        precisions: "fp32", "bf16" and/or "fp16".
        levers: memory levers to cross with the grid, {lever name: values} (cadbench.vocabulary.levers declares
            them): checkpointing ("none", "encoder"),
            frozen_dtype ("fp32", "bf16"), micro_batch (0 for none, or images per micro-batch), lean_encoder
            ("off", "on"), encoder_chunk (images per lean-encoder forward). Default: the plain step. A lever that
            cannot apply to a method gives that cell a row with status "not_applicable" and the reason.
        image_sizes: input sides in pixels to cross with the grid, multiples of 16 up to 2048 (default: each
            backbone's native size; a cell at it keeps the key it had before image sizes). The encoder's position
            tables are resized to the new token grid (cadbench.backbones.resize_input); rows say the pixels in
            `image_px`.
        prompts_per_image: objects prompted per image: "image" (one box around the whole image, the default) and/or
            integers N from 1 to 256 (N boxes per image, one per object, decoded in one mask-decoder call).
        checkpoint: an official SAM checkpoint for the one backbone, or a dict {backbone: path}.
        out: output folder (default: reports/<timestamp>/); an existing one is resumed.
        baseline_method: memory ratios in the summary and report are against this method spec.
        show_progress: show the progress bar over cells.
        print_summary: print the comparison table at the end.
        launcher: where the cells run: "local" (default), "gpus", "slurm", or a config from
            `cadbench.harness.launchers` (`GpusConfig(gpus=(0, 1))`, `SlurmConfig(partition="gpu", ...)`).
        **options: any field of `cadbench.harness.options.RunOptions`, with its default when not given: steps,
            warmup, device ("auto" | "cuda" | "cpu"), seed, estimate_only, dataset ("synthetic", a folder, or None
            for no quality phase), layout, train_steps, protocol ("quick" | "cad-paper" | "sam-adapter-paper"),
            epochs, test_fraction, val_fraction, save_weights, alloc_conf (caching-allocator settings for the
            simulated reserved memory and OOM line, PYTORCH_CUDA_ALLOC_CONF syntax; default: the environment's).
    """
    unknown = sorted(set(options) - set(RunOptions.field_names()))
    if unknown:
        raise TypeError(f"run() got unexpected keyword arguments: {', '.join(unknown)}")
    given = set(options)
    options = RunOptions(**options)  # validated here
    launcher = launcher_for(launcher)
    cuda = launcher.cuda_where_cells_run()
    cuda = torch.cuda.is_available() if cuda is None else cuda
    methods_named = bool(methods)
    if methods_named:
        methods = list(methods)
    else:
        methods = default_methods()
        for name, reason in unavailable_methods().items():
            print(f"cadbench: note: method {name} is not in the grid: it {reason}", file=sys.stderr)
    share = None
    if not backbones:
        # Without a GPU no full-size model can be fine-tuned in minutes: a small model trains for real on the CPU
        # beside the estimated full-size cells (cadbench.harness.cpu_share: LiteMedSAM with real weights, else the
        # test-scale SAM), so that the default run still reports measured throughput and quality.
        no_gpu = not cuda and not options.estimate_only and options.device != "cuda"
        share = cpu_share(methods_named) if no_gpu else None
        for note in left_out_notes():
            if not (share and share.backbone == TEST_SCALE and note.startswith(f"backbone {LITEMEDSAM} ")):
                print(f"cadbench: note: {note}", file=sys.stderr)  # (LiteMedSAM's is said by the share's note)
        backbones = default_backbones()
    backbones = list(backbones)
    cells = expand_grid(methods, backbones, batch_sizes, precisions, levers, image_sizes=image_sizes,
                        prompts_per_image=prompts_per_image)
    if share is not None:
        print(f"cadbench: note: {share.note()}", file=sys.stderr)
        cells += share.cells(methods, batch_sizes, precisions, levers, image_sizes, prompts_per_image)
        backbones.append(share.backbone)
        options = replace(options, **share.options(given))
    if baseline_method is not None and parse_method_spec(baseline_method).text not in {c.method_spec for c in cells}:
        raise CadbenchError(f"--baseline-method {baseline_method!r} is not among --methods ({', '.join(methods)})")
    mode_of = mode_chooser(options.device, options.estimate_only, cuda, share.trains if share else None)
    _check_estimable([cell for cell in cells if mode_of(cell) in ("estimate", "cpu")])  # cpu cells estimate memory
    if options.estimate_only:
        options = replace(options, dataset=None)
    elif options.dataset:
        _check_quality_setup(options, cells, mode_of)
    checkpoints = resolve_checkpoints(checkpoint, backbones)
    weights = {backbone: f"sha256:{file_sha256(checkpoints[backbone])}" if backbone in checkpoints
               else default_weights_label(backbone) for backbone in backbones}
    launcher.check()  # e.g. a GPU that does not exist, Slurm missing: refused before the folder is touched

    store = ResultStore(out or default_out_dir())
    context = RunContext(checkpoints=checkpoints, weights=weights, state_dir=str(store.out_dir))
    environment = collect_environment()
    # the folder is this run's until the block ends
    with store.open({**options.resume_config(), **context.resume_config()}, environment):
        with sweep_progress(len(cells), enabled=show_progress,
                            modes={cell.key: mode_of(cell) for cell in cells}) as progress:
            outcome = sweep(cells, mode_of, options, context, store, environment, on_progress=progress.update,
                            launcher=launcher)
        if store.rows():  # a detached Slurm run may have no row yet
            _build_report(store, baseline_method)
    mode = "/".join(sorted({mode_of(cell) for cell in cells}))
    frame = rows_to_frame(outcome.rows)
    frame.attrs.update(out_dir=str(store.out_dir), mode=mode, ran=outcome.ran, skipped=outcome.skipped,
                       in_flight=outcome.in_flight)
    if print_summary:
        print_sweep_summary(frame, list(dict.fromkeys(cell.method_label for cell in cells)), baseline_method, mode,
                            store.out_dir, [mode_of(cell) for cell in outcome.ran_cells], outcome.skipped,
                            outcome.errored, outcome.notes, blanks_explained(cells, mode_of, options))
    return frame


def _build_report(store: ResultStore, baseline_method: str | None) -> None:
    """index.html is derived from the rows, which are safe whatever happens here: a failure is a warning."""
    from cadbench.files import warn
    from cadbench.report import build_report

    try:
        build_report([store.out_dir], baseline_method=baseline_method)
    except CadbenchError as exc:
        warn(f"index.html was not written ({exc}); the rows are safe, `cadbench report {store.out_dir}` "
             f"builds it again")

"""Measure one cell of the grid. Run as `python -m cadbench.harness.measure_cell SPEC_JSON RESULT_PATH` for a fresh process.

A cell is measured in one of three modes:
* `cuda`: real training steps on the GPU (memory, throughput), then fine-tune + evaluate for quality;
* `cpu`: real steps on the CPU (throughput marked cpu, memory from the estimator), then fine-tune + evaluate;
* `estimate`: no real step; peak memory, breakdown and FLOPs from the fake-tensor estimator.
The measurement functions receive a training step to run; only this module knows which method it builds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import torch

from cadbench.backbones import cell_pixels
from cadbench.errors import CadbenchError
from cadbench.harness.environment import EnvironmentColumns
from cadbench.harness.nulls import null_reasons
from cadbench.harness.options import RunContext, RunOptions
from cadbench.harness.results.rows import explain_nulls, identity_of, new_row, set_outcome
from cadbench.methods import Method
from cadbench.training.finetune import TrainingPlan
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.modes import Mode
from cadbench.vocabulary.outcomes import INFERENCE, TRAINING, RowPart, StepKind
from cadbench.vocabulary.prompts import objects_per_image


def measure_cell(cell: Cell, mode: Mode, options: RunOptions, environment: dict,
                 context: RunContext = RunContext()) -> dict:
    """The cell's result row. Out-of-memory and any other failure become the row's status, never an exception. The
    sweep decides, once per cell, whether its levers apply to its method: only cells where they do reach this
    function (`not_applicable_row` writes the others).

    Each measurement gives its part of the row (a `RowPart`: its columns, why any of them is null, its side data),
    merged as soon as it is measured, so a cell that fails part-way keeps what it measured before. Side data for
    the report travels in keys starting with '_' (`_timeline`, `_loss_curve`). `context` is what the run resolved
    (checkpoints, weights, its folder); the default is a cell measured outside a run: random weights, no folder.
    """
    row = _identity_row(cell, options, context, environment)
    known = EnvironmentColumns.of(environment).null_reasons()  # why a part left a column null
    if mode != "estimate":
        row["warmup_steps"], row["timed_steps"] = options.warmup, options.steps
    try:
        for part in _measured_parts(cell, mode, options, context):
            row.update(part.columns())
            row.update(part.side_data())
            known.update(part.null_reasons())
        set_outcome(row, "ok")
    except torch.cuda.OutOfMemoryError:
        set_outcome(row, "oom", f"CUDA out of memory at batch size {cell.batch_size}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except CadbenchError as exc:
        set_outcome(row, "error", str(exc))
    except Exception as exc:  # noqa: BLE001 — a cell's failure is a result; the sweep goes on
        set_outcome(row, "error", one_line(exc))
    return explain_nulls(row, known, null_reasons(row, mode, options))


def not_applicable_row(cell: Cell, reason: str, mode: Mode, options: RunOptions, context: RunContext,
                       environment: dict) -> dict:
    """The row of a cell whose lever cannot apply to its method (status `not_applicable`, `reason` as its error):
    measured in no mode."""
    row = _identity_row(cell, options, context, environment)
    set_outcome(row, "not_applicable", reason)
    return explain_nulls(row, EnvironmentColumns.of(environment).null_reasons(), null_reasons(row, mode, options))


def _identity_row(cell: Cell, options: RunOptions, context: RunContext, environment: dict) -> dict:
    """A new row with the cell, the environment and the run's settings that the row records."""
    row = new_row(identity_of(cell), environment)
    row["weights"] = context.weights_of(cell.backbone)
    row["step_kind"] = step_kind(cell)
    row["alloc_conf"] = options.alloc_conf or "default"  # the caching allocator's settings (real or simulated)
    row["protocol"] = options.protocol
    return row


def step_kind(cell: Cell) -> StepKind:
    """What the cell's step is, for the row (`step_kind`): 'training', or 'inference' for a method that does not
    train (`zero_shot`: its memory and throughput are an inference step's)."""
    from cadbench.registry import get_method

    return TRAINING if get_method(cell.method).trains else INFERENCE


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _measured_parts(cell: Cell, mode: Mode, options: RunOptions, context: RunContext) -> Iterator[RowPart]:
    """The parts of the cell's row, each as soon as it is measured: parameter counts, then by mode the CUDA
    measurement, or CPU timing and the estimate, or the estimate alone, then quality."""
    from cadbench.params import count_parameters

    yield count_parameters(cell.method_spec, cell.backbone, cell.image_size)
    if mode == "cuda":
        yield from _measure_on_cuda(cell, options, context)
    elif mode == "cpu":
        yield from _time_on_cpu(cell, options, context)
        yield _estimate_memory(cell, options)
    else:
        yield _estimate_memory(cell, options)
    if mode != "estimate" and options.dataset:
        yield from _measure_quality(cell, options, context, torch.device("cuda" if mode == "cuda" else "cpu"))


def _setup(cell: Cell, options: RunOptions, context: RunContext, device: torch.device):
    from cadbench.training.setup import make_training_setup

    return make_training_setup(cell, device=device, checkpoint=context.checkpoints.get(cell.backbone),
                               seed=options.seed)


def _measure_on_cuda(cell: Cell, options: RunOptions, context: RunContext) -> Iterator[RowPart]:
    """The GPU (read first: a lost device fails here), then the timed steps' memory and their times."""
    from cadbench.measure.cuda import measure_cuda_steps
    from cadbench.measure.device import describe_device

    device = torch.device("cuda", torch.cuda.current_device())
    yield describe_device(device)
    setup = _setup(cell, options, context, device)
    measured = measure_cuda_steps(setup.step, options.warmup, options.steps, device)
    yield measured
    yield measured.timing(cell.batch_size)
    del setup
    torch.cuda.empty_cache()


def _time_on_cpu(cell: Cell, options: RunOptions, context: RunContext) -> Iterator[RowPart]:
    from cadbench.measure.device import describe_device
    from cadbench.measure.timing import time_cpu_cell

    device = torch.device("cpu")
    yield describe_device(device)
    setup = _setup(cell, options, context, device)
    yield time_cpu_cell(setup.step, options.warmup, options.steps, cell.batch_size)


def _estimate_memory(cell: Cell, options: RunOptions) -> RowPart:
    from cadbench.estimator import AllocatorConfig, estimate_cell

    return estimate_cell(cell, alloc_conf=AllocatorConfig.parse(options.alloc_conf))


def _measure_quality(cell: Cell, options: RunOptions, context: RunContext, device: torch.device
                     ) -> Iterator[RowPart]:
    """Fine-tune a fresh copy of the method under the run's protocol on the train split, then score the test split.

    A paper protocol fixes batch size and precision: other cells get null quality with the reason. The fine-tune
    keeps an epoch checkpoint under --out while it runs, so that a rerun resumes it; with --save-weights its
    trainable weights are kept under --out/weights/.
    """
    from cadbench.datasets import open_splits
    from cadbench.training.finetune import TrainingPlan, fine_tune
    from cadbench.training.protocols import get_protocol
    from cadbench.training.quality import QualityElsewhere, QualityMeasurement, evaluate
    from cadbench.training.setup import prepare_cell

    protocol = get_protocol(options.protocol)
    elsewhere = protocol.trains_cell(cell.batch_size, cell.precision)
    if elsewhere:
        yield QualityElsewhere(elsewhere)
        return
    image_size = cell_pixels(cell)
    prompts = objects_per_image(cell.prompts_per_image)
    splits = open_splits(options.dataset, image_size, layout=options.layout,
                         seed=options.seed, test_fraction=options.test_fraction, val_fraction=options.val_fraction,
                         objects=prompts is not None)
    object_columns: dict = {}
    if prompts is not None:
        splits, object_columns, no_objects = _images_with_objects(splits)
        if no_objects:
            yield QualityElsewhere(no_objects)
            return
    plan = TrainingPlan.resolve(protocol, cell.batch_size, cell.precision, options.epochs, options.train_steps,
                                options.seed)
    # zero-shot (the backbone as built, no method) and box fill, on the same test objects; a cell that is the plain
    # backbone as built (zero_shot, no lever) shares its scores with the zero-shot reference, below: one scoring
    shares_zero_shot = prompts is not None and _is_the_zero_shot_reference(cell)
    if prompts is not None and not shares_zero_shot:
        object_columns["references"], _ = _reference_scores(cell, options, context, splits.test, protocol, device)
    torch.manual_seed(options.seed)
    trainee, step_plan = prepare_cell(cell, checkpoint=context.checkpoints.get(cell.backbone), device=device)

    def about_data() -> dict:  # what the row says of the data, whether or not the method trains
        return dict(protocol=protocol.name, dataset=splits.summary(), split=splits.split_description(),
                    empty_train_masks=splits.train.empty_masks, empty_test_masks=splits.test.empty_masks,
                    mask_grey_values=splits.grey_values, **object_columns)

    def score_test_split() -> dict:
        return evaluate(trainee.method, splits.test, batch_size=plan.batch_size, geometry=protocol.geometry,
                        objects=prompts is not None)

    if trainee.optimizer is None:  # a method that does not train (zero_shot) is scored as built
        scores = None
        if shares_zero_shot:  # kept by an earlier cell of the run, or scored here and kept for the later ones
            object_columns["references"], scores = _reference_scores(cell, options, context, splits.test, protocol,
                                                                     device, score_as_built=score_test_split)
        scores = scores if isinstance(scores, dict) else score_test_split()
        yield QualityMeasurement(scores=scores, train_steps=0, epochs=None, loss_curve={},
                                 untrained=f"{cell.method_label} does not train: the model is scored as built",
                                 **about_data())
        return
    state = _fine_tune_state(cell, context)
    validating_on_test = splits.validation is splits.test
    # A fine-tune counted in steps (the quick protocol) with no validation data of its own scores the test split
    # once, after it: a score half-way would only look at the test data early, for one point of the curve (on this
    # project's 2-core CPU, about 10 s of each LiteMedSAM cell). Paper protocols score it after every epoch, as their
    # authors' code does.
    validation = None if validating_on_test and plan.epochs is None else splits.validation
    history = fine_tune(trainee.method, splits.train, plan, validation=validation,
                        checkpoint=state, fingerprint=_fingerprint(cell, options, context), step=step_plan,
                        workers=min(8, os.cpu_count() or 1) if device.type == "cuda" else 0,
                        validate_last_epoch=not validating_on_test, objects=prompts)
    scores = score_test_split()
    if validating_on_test:
        history.set_last_validation(scores)  # the same weights on the same images: not scored twice
    yield QualityMeasurement(
        scores=scores, train_steps=len(history.losses), epochs=plan.epochs,
        loss_curve={"protocol": protocol.name, "plan": plan.describe(), **history.curve()}, **about_data())
    if options.save_weights:
        yield _save_trained_weights(cell, options, context, trainee.method, plan, len(history.losses), device)
    if state is not None:
        state.unlink(missing_ok=True)  # finished: nothing left to resume


def _reference_scores(cell: Cell, options: RunOptions, context: RunContext, test, protocol, device: torch.device,
                      score_as_built: Callable[[], dict] | None = None) -> tuple[dict, dict | None]:
    """Zero-shot and box fill on the test objects (`training.quality.reference_scores`), and the backbone's own test
    scores as built (every metric, what a zero_shot cell's row holds; None from a folder of an older cadbench).

    They depend on the backbone, its weights and input size, and the test split, not on the method: the first cell
    of a run that needs them keeps them under --out/references/, and the run's other cells read them there.
    `score_as_built` scores the backbone as built (a zero_shot cell's own scoring); by default a model is built
    for it, with random weights drawn from the run's seed as every cell's model is (`prepare_cell`), so that
    zero-shot is the model each method started from."""
    from cadbench.backbones import build_sam
    from cadbench.files import read_side_file, strict_json, write_atomically
    from cadbench.training.quality import reference_scores, zero_shot_scores

    depends_on = {"backbone": cell.backbone, "image_px": cell_pixels(cell),
                  "weights": context.weights_of(cell.backbone), "device": device.type, "protocol": protocol.name,
                  "test": test.summary(),
                  **{name: getattr(options, name) for name in ("dataset", "layout", "seed", "test_fraction")}}
    kept = None
    if context.state_dir is not None:
        digest = hashlib.sha256(json.dumps(depends_on, sort_keys=True).encode()).hexdigest()[:16]
        kept = Path(context.state_dir) / "references" / f"{cell.backbone}-{digest}.json"
        saved = read_side_file(kept, "zero-shot and box fill are scored again")  # {} when absent or damaged
        if saved.get("depends_on") == json.loads(json.dumps(depends_on)) and isinstance(saved.get("scores"), dict):
            return saved["scores"], saved.get("as_built")

    def build_and_score() -> dict:
        torch.manual_seed(options.seed)
        built = build_sam(cell.backbone, checkpoint=context.checkpoints.get(cell.backbone), device=device,
                          image_size=cell.image_size)
        return zero_shot_scores(built.sam, test, protocol.geometry)

    as_built = (score_as_built or build_and_score)()
    scores = reference_scores(as_built, test, protocol.geometry)
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(kept, strict_json({"depends_on": depends_on, "scores": scores, "as_built": as_built}))
    return scores, as_built


def _is_the_zero_shot_reference(cell: Cell) -> bool:
    """Whether the cell is the backbone as built with no lever (zero_shot's plain cell): its test scores are then
    the zero-shot reference's, so the two are scored once."""
    from cadbench.registry import get_method
    from cadbench.training.levers import levers_of

    method = get_method(cell.method)
    return method.is_backbone_as_built and not method.trains and not levers_of(cell)


def _images_with_objects(splits):
    """The object protocol's splits: each without its images that hold no object (skipped, and counted); the
    row's object columns; and why quality cannot be measured when a split is left with no image (else '')."""
    import numpy as np

    from cadbench.datasets.dataset import images_with_objects

    train, skipped_train = images_with_objects(splits.train)
    test, skipped_test = images_with_objects(splits.test)
    for name, part in (("train", train), ("test", test)):
        if len(part) == 0:
            return splits, {}, f"no image of the {name} split has an object to prompt (--prompts-per-image)"
    if splits.validation is splits.test:
        validation = test
    else:
        validation = images_with_objects(splits.validation)[0] if splits.validation is not None else None
        validation = validation if validation is not None and len(validation) else None
    counts = np.concatenate([train.object_counts(), test.object_counts()])
    columns = {"objects_per_image": float(counts.mean()), "images_without_objects": skipped_train + skipped_test}
    return replace(splits, train=train, test=test, validation=validation), columns, ""


def _save_trained_weights(cell: Cell, options: RunOptions, context: RunContext, method: Method, plan: TrainingPlan,
                          steps: int, device: torch.device) -> RowPart:
    """--save-weights: the method's trainable weights under --out/weights/, named in the row with their sha256.

    The metadata says what `cadbench evaluate` needs to rebuild the frozen base and score the same split."""
    from cadbench.training.weights import SavedWeights, base_fingerprint, save_weights

    if context.state_dir is None:
        raise ValueError("save_weights needs state_dir, the --out folder (cadbench.run sets it)")
    relative = Path("weights") / f"{_slug(cell)}.safetensors"
    sha256 = save_weights(method, Path(context.state_dir) / relative, {
        "method": cell.method_spec, "backbone": cell.backbone, "cell": cell.key, "protocol": plan.protocol.name,
        "image_size": str(cell_pixels(cell)),
        "epochs": str(plan.epochs), "train_steps": str(steps), "seed": str(options.seed),
        "base_weights": context.weights_of(cell.backbone), "base_fingerprint": base_fingerprint(method),
        "initialised_on": device.type, "dataset": str(options.dataset), "layout": str(options.layout),
        "test_fraction": str(options.test_fraction), "prompts_per_image": str(cell.prompts_per_image)})
    return SavedWeights(str(relative), sha256)


def _slug(cell: Cell) -> str:
    """The cell's key as a file name: 'cad/vit_b/4/fp32' -> 'cad-vit_b-4-fp32'."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", cell.key.replace(Cell.KEY_SEPARATOR, "-"))


def _fine_tune_state(cell: Cell, context: RunContext) -> Path | None:
    """Where an unfinished fine-tune of this cell keeps its epoch checkpoint (None outside a run with --out)."""
    if context.state_dir is None:
        return None
    return Path(context.state_dir) / "fine-tunes" / f"{_slug(cell)}.pt"


def _fingerprint(cell: Cell, options: RunOptions, context: RunContext) -> str:
    """What an epoch checkpoint must match to be resumed: the cell and every setting its fine-tune depends on."""
    settings = {name: getattr(options, name) for name in (
        "seed", "dataset", "layout", "train_steps", "protocol", "epochs", "test_fraction", "val_fraction")}
    return json.dumps({"cell": cell.key, "weights": context.weights_of(cell.backbone), **settings},
                      sort_keys=True)


def main(argv: list[str]) -> int:
    from cadbench.files import strict_json, write_atomically
    from cadbench.harness.processes import die_with_parent
    from cadbench.harness.results.rows import finite_row

    die_with_parent()  # a cell process never outlives its run, even one killed with kill -9
    spec = json.loads(argv[0])
    alloc_conf = spec["options"].get("alloc_conf")
    if spec["mode"] == "cuda" and alloc_conf:  # this fresh process has not started CUDA: its allocator reads this
        os.environ["PYTORCH_ALLOC_CONF"] = alloc_conf
    environment = spec["environment"]
    if environment is None:  # run where the submitting process is not (a Slurm node): describe this machine
        from cadbench.harness.environment import collect_environment

        environment = collect_environment()
    row = measure_cell(Cell(**spec["cell"]), spec["mode"], RunOptions(**spec["options"]), environment,
                       RunContext(**spec["context"]))
    write_atomically(Path(argv[1]), strict_json(finite_row(row)))  # whole or absent, strict JSON
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

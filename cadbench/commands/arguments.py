"""Argument types and argument groups shared by several commands. Values are only parsed here (text to int, to a
list); what they mean is checked once, where they become typed objects (`Cell`, `RunOptions`)."""

from __future__ import annotations

import argparse

from cadbench.errors import CadbenchError
from cadbench.harness.options import DEFAULTS
from cadbench.vocabulary.cell import DEFAULT_BATCH_SIZES
from cadbench.vocabulary.levers import LeverDeclaration, declared_levers
from cadbench.vocabulary.precision import DEFAULT_PRECISIONS, PRECISIONS
from cadbench.vocabulary.prompts import check_prompts_per_image
from cadbench.vocabulary.resolution import IMAGE_SIZE_FLAG, IMAGE_SIZE_RULE, check_image_size


def comma_list(text: str) -> list[str]:
    """'a,b' -> ['a', 'b']. An empty item ('1,,2', '1,2,') is refused rather than dropped: it is a typo whose
    meaning cannot be known (a missing value, or a stray comma)."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    if not all(items):
        raise argparse.ArgumentTypeError(f"empty item in {text!r}; give values separated by single commas")
    return items


def int_list(text: str) -> list[int]:
    values = []
    for item in comma_list(text):
        try:
            values.append(int(item))
        except ValueError:
            raise argparse.ArgumentTypeError(f"batch sizes must be integers, got {item!r}") from None
    return values


def image_size_list(text: str) -> list[int]:
    """'512,1024' -> [512, 1024]; each checked against the rule (cadbench.vocabulary.resolution), so that a bad size
    is refused in one line naming --image-size before anything runs."""
    values = []
    for item in comma_list(text):
        try:
            values.append(check_image_size(int(item), native_allowed=False))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: the image size must be {IMAGE_SIZE_RULE}") from None
        except CadbenchError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{IMAGE_SIZE_FLAG} ")) from None
    return values


def add_image_size(parser: argparse.ArgumentParser, help: str = "") -> None:
    """--image-size: the input sides in pixels to cross with the grid (default: each backbone's native size)."""
    parser.add_argument("--image-size", "--image-sizes", dest="image_size", type=image_size_list, default=None,
                        help=f"comma-separated input sides in pixels, multiples of 16 up to 2048, e.g. 512,1024; the "
                             f"encoder's position tables are resized to the new token grid{help} (default: each "
                             f"backbone's native size, 1024 for SAM, 128 for test_scale)")


def prompts_list(text: str) -> list:
    """--prompts-per-image's text: 'image,8' -> ['image', 8], each checked (cadbench.vocabulary.prompts)."""
    try:
        return [check_prompts_per_image(item) for item in comma_list(text)]
    except CadbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--prompts-per-image ")) from None


def add_prompts_per_image(parser: argparse.ArgumentParser) -> None:
    """--prompts-per-image: objects prompted per image, a grid dimension that changes the task (not a lever)."""
    parser.add_argument("--prompts-per-image", dest="prompts_per_image", type=prompts_list, default=["image"],
                        help="comma-separated: 'image' (one box around the whole image, the binary mask as target) "
                             "and/or N from 1 to 256 (N boxes per image, one per object, decoded in one mask-decoder "
                             "call; objects: README) (default: image)")


def joined(values) -> str:
    return ",".join(str(value) for value in values)


UNITS = {"gb": 10**9, "gib": 2**30, "mb": 10**6, "mib": 2**20}


def memory_size(text: str) -> int:
    """'24GB' (10^9 bytes), '80GiB' (2^30), '512MiB', or plain bytes."""
    lowered = text.strip().lower()
    for unit in sorted(UNITS, key=len, reverse=True):
        if lowered.endswith(unit):
            try:
                return int(float(lowered[: -len(unit)]) * UNITS[unit])
            except ValueError:
                break
    try:
        return int(lowered)
    except ValueError:
        raise argparse.ArgumentTypeError(f"memory sizes look like 24GB, 80GiB or 512MiB, got {text!r}") from None


def method_list(text: str) -> list[str]:
    """'lora:rank=16,lora,cad' -> ['lora:rank=16', 'lora', 'cad'] (the rule: cadbench.vocabulary.method_spec)."""
    from cadbench.vocabulary.method_spec import split_method_list

    return split_method_list(text)


def add_cell_selection(parser: argparse.ArgumentParser) -> None:
    """--methods and --backbone: which methods and backbones (default: all methods, the full-size backbones)."""
    parser.add_argument("--methods", type=method_list,
                        help="comma-separated method specs, NAME or NAME:OPTION=VALUE,... e.g. lora:rank=16,lora,cad "
                             "(an item with = but no : is one more option of the method before it; list values join "
                             "their items with +; `cadbench list` shows each method's options) (default: all)")
    parser.add_argument("--backbone", "--backbones", dest="backbone", type=comma_list,
                        help="comma-separated backbones (default: vit_b,vit_l,vit_h, and sam2.1_hiera_t,s,b+,l with "
                             "the sam2 extra; also test_scale, sam2_test_scale, litemedsam)")


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """The grid and the output folder, shared by run, estimate and validate."""
    add_cell_selection(parser)
    parser.add_argument("--batch-sizes", type=int_list, default=list(DEFAULT_BATCH_SIZES),
                        help=f"comma-separated batch sizes (default: {joined(DEFAULT_BATCH_SIZES)})")
    add_precision(parser)
    add_image_size(parser)
    add_prompts_per_image(parser)
    add_levers(parser)
    add_option(parser, "--seed", type=int)
    parser.add_argument("--checkpoint", help="official SAM .pth for the one backbone, or BACKBONE=PATH,...")
    parser.add_argument("--out", help="output folder (default: reports/<timestamp>/); rerun with it to resume")
    parser.add_argument("--baseline-method",
                        help="memory ratios relative to this method spec, e.g. lora:rank=16 (default: sam_adapter)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (on a terminal) and no progress lines (off one: logs, pipes)")


ALLOC_CONF_HELP = ("CUDA caching-allocator settings for the simulated reserved memory and OOM line, in "
                   "PYTORCH_CUDA_ALLOC_CONF syntax, e.g. expandable_segments:True or max_split_size_mb:128 (default: "
                   "PYTORCH_ALLOC_CONF or PYTORCH_CUDA_ALLOC_CONF, else PyTorch's defaults)")


def add_alloc_conf(parser: argparse.ArgumentParser) -> None:
    """--alloc-conf: the `RunOptions.alloc_conf` field (its default is read from the environment)."""
    parser.add_argument("--alloc-conf", dest="alloc_conf", default=argparse.SUPPRESS, help=ALLOC_CONF_HELP)


def add_precision(parser: argparse.ArgumentParser, default: list[str] | None = None, help: str = "") -> None:
    default = list(DEFAULT_PRECISIONS) if default is None else default
    parser.add_argument("--precision", type=comma_list, default=default,
                        help=f"comma-separated, of {', '.join(PRECISIONS)}{help} (default: {joined(default)}; fp16 "
                             f"scales the loss with a GradScaler)")


def lever_value_list(lever: LeverDeclaration):
    """The argument type of a lever flag: comma-separated values, each read by the lever's declaration."""

    def parse(text: str) -> list:
        try:
            return [lever.parse_word(item) for item in comma_list(text)]
        except CadbenchError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def add_levers(parser: argparse.ArgumentParser, defaults: dict[str, list] | None = None, suffix: str = "") -> None:
    """One flag per declared memory lever (cadbench.vocabulary.levers): comma-separated values, each crossed with
    the rest of the grid. `defaults` (e.g. fit's: every value) replaces the default of the plain step."""
    defaults = defaults or {}
    for lever in declared_levers():
        default = defaults.get(lever.name, [lever.default])
        parser.add_argument(lever.flag, dest=lever.name, type=lever_value_list(lever), default=default,
                            help=f"{lever.help}{suffix} (default: {joined(lever.show(value) for value in default)})")


def lever_arguments(args: argparse.Namespace) -> dict[str, list]:
    """The lever flags' values: {lever name: [values]}."""
    return {lever.name: getattr(args, lever.name) for lever in declared_levers() if hasattr(args, lever.name)}


def checkpoint_argument(text: str | None) -> str | dict[str, str] | None:
    """--checkpoint's text: `PATH` (for the one backbone; returned as it is) or `BACKBONE=PATH,...` (a dict). An
    `=` separates only when the text before it is a backbone name, so `runs/lr=1e-4/sam.pth` is a path; a text
    without any `backbone=` item is one path, commas included."""
    from cadbench.backbones import BACKBONES  # here, not above: `cadbench --help` must not import torch

    if not text:
        return None

    def named(item: str) -> str | None:
        name, separator, _ = item.partition("=")
        return name.strip() if separator and name.strip() in BACKBONES else None

    items = text.split(",")
    if not any(named(item) for item in items):
        return text
    mapping: dict[str, str] = {}
    for item in items:
        if not item.strip():
            raise CadbenchError(f"--checkpoint {text}: empty item; give BACKBONE=PATH items separated by single "
                                f"commas")
        backbone = named(item)
        if backbone is None:
            raise CadbenchError(f"--checkpoint item {item!r} is not BACKBONE=PATH (backbones: "
                                f"{', '.join(sorted(BACKBONES))})")
        if backbone in mapping:
            raise CadbenchError(f"--checkpoint names backbone {backbone!r} twice")
        mapping[backbone] = item.split("=", 1)[1]
    return mapping


def add_option(parser: argparse.ArgumentParser, flag: str, help: str = "", **kwargs) -> None:
    """A flag for a `RunOptions` field: absent from the namespace unless given, so the default is RunOptions'."""
    name = flag.lstrip("-").replace("-", "_")
    default = getattr(DEFAULTS, name)
    parser.add_argument(flag, dest=name, default=argparse.SUPPRESS,
                        help=f"{help} (default: {default})".strip() if help else f"(default: {default})", **kwargs)


def run_options(args: argparse.Namespace) -> dict:
    """The `RunOptions` fields the user gave on the command line."""
    from cadbench.harness.options import RunOptions

    return {name: getattr(args, name) for name in RunOptions.field_names() if hasattr(args, name)}


__all__ = ["add_alloc_conf", "add_cell_selection", "add_grid_arguments", "add_image_size", "add_levers", "add_option",
           "add_precision", "checkpoint_argument", "comma_list", "image_size_list", "int_list", "lever_arguments",
           "memory_size", "method_list", "run_options"]

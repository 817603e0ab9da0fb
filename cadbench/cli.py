"""The `cadbench` command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import pandas as pd

from cadbench.backbones import BACKBONES, FULL_SIZE_BACKBONES, get_backbone
from cadbench.errors import CadbenchError
from cadbench.params import count_parameters
from cadbench.registry import available_methods, get_method


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other cadbench error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CadbenchError(message)


def comma_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def _resolve_methods(names: list[str] | None) -> list[str]:
    names = names or sorted(available_methods())
    for name in names:
        get_method(name)
    return names


def _resolve_backbones(names: list[str] | None) -> list[str]:
    names = names or list(FULL_SIZE_BACKBONES)
    for name in names:
        get_backbone(name)
    return names


def cmd_list(args: argparse.Namespace) -> int:
    methods = _resolve_methods(args.methods)
    backbones = _resolve_backbones(args.backbone)
    counts = [count_parameters(method, backbone) for backbone in backbones for method in methods]
    if args.json:
        print(json.dumps([count.as_dict() for count in counts], indent=2))
        return 0
    print("Methods:")
    for name in methods:
        print(f"  {name:<14} {get_method(name).summary}")
    print("\nBackbones:")
    for name in backbones:
        spec = BACKBONES[name]
        print(f"  {spec.label:<22} embed {spec.embed_dim}, depth {spec.depth}, heads {spec.num_heads}, "
              f"global attention in blocks {', '.join(map(str, spec.global_attn_indexes))}, input {spec.image_size} px")
    table = pd.DataFrame([count.as_dict() for count in counts])
    table["backbone"] = [BACKBONES[name].label for name in table["backbone"]]
    table["trainable_%"] = (100 * table["trainable_params"] / table["total_params"]).round(2)
    print("\nParameters (counted on the meta device, nothing allocated):")
    print(table.drop(columns="test_scale").to_string(index=False, formatters={
        "trainable_params": "{:,}".format, "total_params": "{:,}".format}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cadbench", description="Benchmark fine-tuning methods for Segment Anything.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    list_parser = commands.add_parser("list", help="methods and backbones with trainable/total parameter counts")
    list_parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of tables")
    list_parser.add_argument("--methods", type=comma_list, help="comma-separated methods (default: all)")
    list_parser.add_argument("--backbone", type=comma_list,
                             help=f"comma-separated backbones (default: {','.join(FULL_SIZE_BACKBONES)}; "
                                  f"also: test_scale)")
    list_parser.set_defaults(handler=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except CadbenchError as exc:
        print(f"cadbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cadbench: interrupted", file=sys.stderr)
        return 130

"""`cadbench list`: methods and backbones with trainable and total parameter counts (meta device)."""

from __future__ import annotations

import argparse
import json

from cadbench.commands.arguments import add_cell_selection


def register(commands) -> None:
    parser = commands.add_parser("list", help="methods and backbones with trainable/total parameter counts")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of tables")
    add_cell_selection(parser)
    parser.set_defaults(handler=run)


def resolve_methods(names: list[str] | None) -> list[str]:
    from cadbench.registry import available_methods, get_method

    names = names or sorted(available_methods())
    for name in names:
        get_method(name)
    return names


def resolve_backbones(names: list[str] | None) -> list[str]:
    from cadbench.backbones import FULL_SIZE_BACKBONES, get_backbone

    names = names or list(FULL_SIZE_BACKBONES)
    for name in names:
        get_backbone(name)
    return names


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from cadbench.backbones import BACKBONES
    from cadbench.params import count_parameters
    from cadbench.registry import get_method

    methods = resolve_methods(args.methods)
    backbones = resolve_backbones(args.backbone)
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

"""`cadbench validate`: the estimator against CUDA's max_memory_allocated, cell by cell (needs a GPU)."""

from __future__ import annotations

import argparse

from cadbench.commands.arguments import add_grid_arguments


def register(commands) -> None:
    parser = commands.add_parser("validate", help="estimator vs CUDA measurement, per cell (needs a GPU)")
    add_grid_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cadbench.commands.listing import resolve_backbones, resolve_methods
    from cadbench.harness.validate import TARGET_ERROR, format_validation, validate

    table = validate(resolve_methods(args.methods), resolve_backbones(args.backbone), args.batch_sizes,
                     args.precision, out=args.out)
    print(format_validation(table))
    errors = table["error"].dropna().abs() if "error" in table else []
    return 0 if len(errors) and (errors <= TARGET_ERROR).all() else 1

"""`cadbench validate [--reference]`: the estimator against CUDA's measurements, cell by cell (needs a GPU)."""

from __future__ import annotations

import argparse
import shlex

from cadbench.commands.arguments import (add_grid_arguments, add_option, checkpoint_argument, lever_arguments,
                                         run_options)


def register(commands) -> None:
    parser = commands.add_parser("validate", help="estimator vs CUDA measurement, per cell (needs a GPU)")
    add_grid_arguments(parser)
    add_option(parser, "--steps", type=int, help="timed training steps per cell")
    add_option(parser, "--warmup", type=int, help="untimed steps before measuring")
    parser.add_argument("--reference", action="store_true",
                        help="every method x vit_b,vit_l,vit_h x batch 1,2,4 (unless narrowed by the grid flags), "
                             "written as a folder to commit: reports/reference/<gpu>-<date>/ (or --out)")
    parser.set_defaults(handler=run, batch_sizes=None)  # None: the default of plain validate or of --reference


def run(args: argparse.Namespace) -> int:
    from cadbench.commands.listing import resolve_backbones, resolve_methods
    from cadbench.vocabulary.cell import DEFAULT_BATCH_SIZES
    from cadbench.validation import (REFERENCE_BATCH_SIZES, format_validation, reference_folder,
                                           require_cuda, validate, within_target, write_reference)

    require_cuda()  # first: without a GPU there is nothing to do, and nothing is written
    methods, backbones = resolve_methods(args.methods), resolve_backbones(args.backbone)
    batch_sizes = args.batch_sizes or list(REFERENCE_BATCH_SIZES if args.reference else DEFAULT_BATCH_SIZES)
    out = args.out
    if args.reference and not out:
        import torch

        out = reference_folder(torch.cuda.get_device_name(torch.cuda.current_device()))
    table = validate(methods, backbones, batch_sizes, args.precision, out=out,
                     checkpoint=checkpoint_argument(args.checkpoint),
                     levers=lever_arguments(args), image_sizes=args.image_size,
                     prompts_per_image=args.prompts_per_image, show_progress=not args.no_progress,
                     **run_options(args))
    print(format_validation(table))
    if args.reference:
        command = shlex.join(["cadbench", *getattr(args, "argv", ["validate", "--reference"])])
        write_reference(table.attrs["out_dir"], table, command)
        print(f"reference written to {table.attrs['out_dir']}/: see its README.md to contribute it back")
    else:
        print(f"written to {table.attrs['out_dir']}/validation.csv")
    return 0 if within_target(table) else 1

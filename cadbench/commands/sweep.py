"""`cadbench run` (real steps where a device allows, estimates elsewhere) and `cadbench estimate` (memory only)."""

from __future__ import annotations

import argparse

from cadbench.commands.arguments import (add_alloc_conf, add_grid_arguments, add_option, checkpoint_argument,
                                         lever_arguments, run_options)
from cadbench.commands.launcher_arguments import add_jobs, add_launcher_arguments, launcher_config
from cadbench.vocabulary.modes import DEVICES


def register(commands) -> None:
    run_parser = commands.add_parser("run", help="train every cell of the grid and record memory and throughput")
    add_grid_arguments(run_parser)
    add_option(run_parser, "--steps", type=int,
               help="timed training steps per cell (without a GPU, the default run's LiteMedSAM cells: 5)")
    add_option(run_parser, "--warmup", type=int,
               help="untimed steps before measuring (without a GPU, the default run's LiteMedSAM cells: 2)")
    add_option(run_parser, "--device", choices=DEVICES,
               help="auto: CUDA if present, else estimate memory without running steps; cpu: also time real steps "
                    "on the CPU")
    add_option(run_parser, "--dataset",
               help="'synthetic' (the embedded default, generated from --seed), 'nuclei-sample' (real fluorescence "
                    "nuclei, bundled; 256-px tiles, split by tile) or a folder with images/ and masks/ "
                    "(or a COD10K, CAMO, SINet, ISTD, Kvasir-SEG or ISIC 2018 layout)")
    add_option(run_parser, "--layout", help="force a dataset layout instead of detecting it")
    add_option(run_parser, "--train-steps", type=int, help="fine-tuning steps per cell before evaluating quality")
    add_alloc_conf(run_parser)
    add_option(run_parser, "--protocol",
               help="how quality is fine-tuned and scored: quick (a short check), cad-paper or sam-adapter-paper "
                    "(the reference codes' training and evaluation; docs/protocols.md)")
    add_option(run_parser, "--epochs", type=int,
               help="fine-tuning epochs, instead of the protocol's own (quick has none: it trains --train-steps steps)")
    add_option(run_parser, "--test-fraction", type=float,
               help="share of a dataset without a test split held out (by --seed) as its test split")
    add_option(run_parser, "--val-fraction", type=float,
               help="share of train held out to validate on after each epoch (0: the dataset's validation split, "
                    "else its test split)")
    run_parser.add_argument("--save-weights", action="store_true", default=argparse.SUPPRESS,
                            help="save each fine-tuned cell's trainable weights (adapter + mask decoder) as "
                                 "safetensors under --out/weights/; the row holds their sha256")
    run_parser.add_argument("--no-quality", dest="dataset", action="store_const", const=None,
                            default=argparse.SUPPRESS, help="skip fine-tuning and evaluation")
    add_launcher_arguments(run_parser)
    run_parser.set_defaults(handler=run_command)

    estimate_parser = commands.add_parser("estimate", help="peak GPU memory of every cell, without a GPU")
    add_grid_arguments(estimate_parser)
    add_alloc_conf(estimate_parser)
    add_jobs(estimate_parser)
    estimate_parser.set_defaults(handler=estimate_command)


def sweep(args: argparse.Namespace, **options) -> int:
    from cadbench.api import run

    frame = run(methods=args.methods, backbones=args.backbone, batch_sizes=args.batch_sizes,
                precisions=args.precision, levers=lever_arguments(args), image_sizes=args.image_size,
                prompts_per_image=args.prompts_per_image,
                checkpoint=checkpoint_argument(args.checkpoint), out=args.out,
                baseline_method=args.baseline_method, show_progress=not args.no_progress,
                **run_options(args), **options)
    return 1 if (frame["status"] == "error").any() else 0


def run_command(args: argparse.Namespace) -> int:
    return sweep(args, launcher=launcher_config(args))


def estimate_command(args: argparse.Namespace) -> int:
    from cadbench.harness.launchers import LocalConfig

    return sweep(args, estimate_only=True, launcher=LocalConfig(jobs=args.jobs))

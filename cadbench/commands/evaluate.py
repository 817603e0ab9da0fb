"""`cadbench evaluate --weights FILE --dataset PATH`: score saved fine-tuned weights without training."""

from __future__ import annotations

import argparse
import json

from cadbench.commands.arguments import add_option
from cadbench.vocabulary.modes import DEVICES


def register(commands) -> None:
    parser = commands.add_parser("evaluate", help="score weights saved by `cadbench run --save-weights` on a dataset")
    parser.add_argument("--weights", required=True, help="a .safetensors file from --out/weights/")
    add_option(parser, "--dataset",
               help="'synthetic', 'nuclei-sample' or a dataset folder (any layout `cadbench run` reads)")
    parser.add_argument("--split", default="test", help="the split to score (default: test)")
    add_option(parser, "--layout", help="force a dataset layout instead of detecting it")
    parser.add_argument("--checkpoint", help="the official SAM .pth the weights were fine-tuned on (not needed for "
                                             "weights fine-tuned on random ones)")
    parser.add_argument("--protocol", help="score in this protocol's geometry (default: the one the weights were "
                                           "trained with)")
    parser.add_argument("--seed", type=int, help="seed of a held-out test split (default: the run's)")
    parser.add_argument("--test-fraction", type=float, help="share held out as the test split of a dataset without "
                                                            "one (default: the run's)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="default: auto (CUDA if present)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    from cadbench.harness.options import DEFAULTS
    from cadbench.training.rescore import rescore
    from cadbench.vocabulary.cell import check_batch_size

    check_batch_size(args.batch_size)
    result = rescore(args.weights, getattr(args, "dataset", DEFAULTS.dataset), split=args.split,
                     checkpoint=args.checkpoint, layout=getattr(args, "layout", None), protocol=args.protocol,
                     seed=args.seed, test_fraction=args.test_fraction, device=args.device, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(f"{result.metadata['method']} · {result.metadata['backbone']} · protocol {result.protocol} · "
          f"weights sha256:{result.weights_sha256[:12]}…")
    print(f"scored on {result.dataset.summary()}")
    for name in ("iou", "dice", "s_measure", "mean_e_measure", "weighted_f_measure", "mae", "ber"):
        print(f"  {name:20s} {result.scores[name]:.4f}")
    return 0

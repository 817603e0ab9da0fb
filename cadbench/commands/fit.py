"""`cadbench fit`: the largest batch size per method and backbone whose simulated OOM line fits each GPU."""

from __future__ import annotations

import argparse
import json

from cadbench.commands.arguments import add_alloc_conf, add_cell_selection, add_precision, comma_list, memory_size
from cadbench.errors import CadbenchError

DEFAULT_GPU_MEMORY = "24GB,40GB,80GB"
DEFAULT_MAX_BATCH = 64


def register(commands) -> None:
    parser = commands.add_parser("fit", help="largest batch size per method and backbone that fits each GPU")
    parser.add_argument("--gpu-memory", default=DEFAULT_GPU_MEMORY,
                        help=f"comma-separated capacities, e.g. 24GB,40GB,80GiB (default: {DEFAULT_GPU_MEMORY})")
    add_cell_selection(parser)
    add_precision(parser)
    parser.add_argument("--cuda-context", type=memory_size, default=None,
                        help="memory the CUDA context takes outside PyTorch's allocator (default: the estimator's "
                             "stated figure)")
    add_alloc_conf(parser)
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"largest batch size searched (default: {DEFAULT_MAX_BATCH})")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from cadbench.commands.listing import resolve_backbones, resolve_methods
    from cadbench.estimator import DEFAULT_CUDA_CONTEXT_BYTES, AllocatorConfig, fit_table
    from cadbench.estimator.alloc_conf import resolve
    from cadbench.harness.grid import expand_grid
    from cadbench.report.terminal import method_labels

    try:
        capacities = [memory_size(item) for item in comma_list(args.gpu_memory)]
    except argparse.ArgumentTypeError as exc:
        raise CadbenchError(f"--gpu-memory: {exc}") from None
    if args.max_batch < 1:
        raise CadbenchError(f"--max-batch must be at least 1, got {args.max_batch}")
    context = DEFAULT_CUDA_CONTEXT_BYTES if args.cuda_context is None else args.cuda_context
    alloc_conf = AllocatorConfig.parse(resolve(getattr(args, "alloc_conf", None)))
    cells = expand_grid(resolve_methods(args.methods), resolve_backbones(args.backbone), [1], args.precision)
    cells.sort(key=lambda cell: cell.precision != args.precision[0])  # precision-major, as the table shows it
    rows = [row.as_dict() for row in fit_table(cells, capacities, context, args.max_batch, alloc_conf)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    capacity_names = dict(zip(capacities, comma_list(args.gpu_memory)))
    table = pd.DataFrame(rows)
    table["method"] = method_labels(table)  # 'lora (rank 16)' beside 'lora'
    table["GPU"] = table["capacity_bytes"].map(capacity_names)
    table["largest batch"] = table["largest_batch"].map(
        lambda b: "none" if b == 0 else f"{b}+" if b >= args.max_batch else str(b))
    shown = table.pivot_table(index=["method", "backbone", "precision"], columns="GPU", values="largest batch",
                              aggfunc="first", sort=False)[list(capacity_names.values())]
    print(f"Largest batch size that fits (simulated caching-allocator OOM line, allocator settings "
          f"{alloc_conf.label}, + {context / 1e9:.2f} GB CUDA context; searched up to {args.max_batch}):")
    print(shown.to_string())
    return 0

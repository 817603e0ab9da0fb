"""The `cadbench` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
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


def positive_int_list(text: str) -> list[int]:
    values = []
    for item in comma_list(text):
        try:
            value = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"batch sizes must be integers, got {item!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {value}")
        values.append(value)
    return values


def _add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", type=comma_list, help="comma-separated methods (default: all)")
    parser.add_argument("--backbone", "--backbones", dest="backbone", type=comma_list,
                        help=f"comma-separated backbones (default: {','.join(FULL_SIZE_BACKBONES)})")
    parser.add_argument("--batch-sizes", type=positive_int_list, default=[1, 2, 4, 8],
                        help="comma-separated batch sizes (default: 1,2,4,8)")
    parser.add_argument("--precision", type=comma_list, default=["fp32"], help="fp32 and/or bf16 (default: fp32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="official SAM .pth for the one backbone, or BACKBONE=PATH,...")
    parser.add_argument("--out", help="output folder (default: reports/<timestamp>/); rerun with it to resume")
    parser.add_argument("--baseline-method", help="memory ratios relative to this method (default: sam_adapter)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sweep(args: argparse.Namespace, estimate_only: bool) -> int:
    from cadbench.api import run

    frame = run(methods=args.methods, backbones=args.backbone, batch_sizes=args.batch_sizes,
                precisions=args.precision, steps=getattr(args, "steps", 10), warmup=getattr(args, "warmup", 3),
                device=getattr(args, "device", "auto"), seed=args.seed, checkpoint=args.checkpoint, out=args.out,
                baseline_method=args.baseline_method, estimate_only=estimate_only,
                dataset=None if getattr(args, "no_quality", False) else getattr(args, "dataset", None),
                layout=getattr(args, "layout", None), train_steps=getattr(args, "train_steps", 50),
                show_progress=not args.no_progress)
    return 1 if (frame["status"] == "error").any() else 0


def cmd_run(args: argparse.Namespace) -> int:
    return _sweep(args, estimate_only=False)


def cmd_estimate(args: argparse.Namespace) -> int:
    return _sweep(args, estimate_only=True)


def cmd_report(args: argparse.Namespace) -> int:
    from cadbench.report import build_report

    target = build_report(args.folders, out_file=args.output, baseline_method=args.baseline_method)
    print(f"report written to {target}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from cadbench.report.compare import compare_results, format_table, write_compare_html

    table = compare_results(args.first, args.second)
    print(format_table(table).to_string(index=False))
    target = Path(args.output) if args.output else Path(args.second) / "compare.html"
    write_compare_html(table, args.first, args.second, target)
    print(f"written to {target}")
    return 0


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


def memory_size_list(text: str) -> list[int]:
    return [memory_size(item) for item in comma_list(text)]


def cmd_fit(args: argparse.Namespace) -> int:
    from cadbench.estimator import fit_table

    methods, backbones = _resolve_methods(args.methods), _resolve_backbones(args.backbone)
    capacity_names = dict(zip(args.gpu_memory, comma_list(args.gpu_memory_text)))
    rows = []
    for precision in args.precision:
        rows += [row.as_dict() for row in fit_table(methods, backbones, args.gpu_memory, precision,
                                                     args.cuda_context, args.max_batch)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = pd.DataFrame(rows)
    table["GPU"] = table["capacity_bytes"].map(capacity_names)
    table["largest batch"] = table["largest_batch"].map(
        lambda b: "none" if b == 0 else f"{b}+" if b >= args.max_batch else str(b))
    shown = table.pivot_table(index=["method", "backbone", "precision"], columns="GPU", values="largest batch",
                              aggfunc="first", sort=False)[list(capacity_names.values())]
    print(f"Largest batch size that fits (estimated peak + {args.cuda_context / 1e9:.2f} GB CUDA context; "
          f"searched up to {args.max_batch}):")
    print(shown.to_string())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from cadbench.harness.validate import TARGET_ERROR, format_validation, validate

    table = validate(_resolve_methods(args.methods), _resolve_backbones(args.backbone), args.batch_sizes,
                     args.precision, out=args.out)
    print(format_validation(table))
    errors = table["error"].dropna().abs() if "error" in table else []
    return 0 if len(errors) and (errors <= TARGET_ERROR).all() else 1


def cmd_check(args: argparse.Namespace) -> int:
    from cadbench.report.check import compare, parse_tolerance, read_result_document

    tolerance = parse_tolerance(args.tolerance)
    throughput_tolerance = parse_tolerance(args.throughput_tolerance) if args.throughput_tolerance else None
    results = read_result_document(args.results, "results")
    baseline = read_result_document(args.baseline, "baseline")
    findings = compare(results, baseline, tolerance, throughput_tolerance)
    checked = sum(1 for row in baseline["rows"] if row["status"] == "ok")
    if findings:
        print(f"FAIL: {len(findings)} of {checked} baseline cells regressed (memory tolerance {tolerance:.1%}):")
        for finding in findings:
            print(f"  {finding.describe()}")
        return 1
    print(f"OK: {checked} cells within {tolerance:.1%} of the baseline {baseline['path']}")
    return 0


def cmd_baseline_update(args: argparse.Namespace) -> int:
    from cadbench.report.check import baseline_document, read_result_document
    from cadbench.harness.results import write_atomically

    results = read_result_document(args.results, "results")
    target = Path(args.baseline)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, json.dumps(baseline_document(results), indent=2) + "\n")
    print(f"baseline {target} now holds {len(results['rows'])} cells from {results['path']}")
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

    run_parser = commands.add_parser("run", help="train every cell of the grid and record memory and throughput")
    _add_grid_arguments(run_parser)
    run_parser.add_argument("--steps", type=int, default=10, help="timed training steps per cell (default: 10)")
    run_parser.add_argument("--warmup", type=int, default=3, help="untimed steps before measuring (default: 3)")
    run_parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                            help="auto: CUDA if present, else estimate memory without running steps; "
                                 "cpu: also time real steps on the CPU")
    run_parser.add_argument("--dataset", default="synthetic",
                            help="'synthetic' (the embedded default, generated from --seed) or a folder with "
                                 "images/ and masks/ (or a COD10K, CAMO, SINet or ISTD layout)")
    run_parser.add_argument("--layout", help="force a dataset layout instead of detecting it")
    run_parser.add_argument("--train-steps", type=int, default=50,
                            help="fine-tuning steps per cell before evaluating quality (default: 50)")
    run_parser.add_argument("--no-quality", action="store_true", help="skip fine-tuning and evaluation")
    run_parser.set_defaults(handler=cmd_run)

    estimate_parser = commands.add_parser("estimate", help="peak GPU memory of every cell, without a GPU")
    _add_grid_arguments(estimate_parser)
    estimate_parser.set_defaults(handler=cmd_estimate)

    fit_parser = commands.add_parser("fit", help="largest batch size per method and backbone that fits each GPU")
    fit_parser.add_argument("--gpu-memory", default="24GB,40GB,80GB",
                            help="comma-separated capacities, e.g. 24GB,40GB,80GiB (default: 24GB,40GB,80GB)")
    fit_parser.add_argument("--methods", type=comma_list, help="comma-separated methods (default: all)")
    fit_parser.add_argument("--backbone", "--backbones", dest="backbone", type=comma_list,
                            help=f"comma-separated backbones (default: {','.join(FULL_SIZE_BACKBONES)})")
    fit_parser.add_argument("--precision", type=comma_list, default=["fp32"], help="fp32 and/or bf16")
    fit_parser.add_argument("--cuda-context", type=memory_size, default=None,
                            help="memory the CUDA context takes outside PyTorch's allocator (default: the "
                                 "estimator's stated figure)")
    fit_parser.add_argument("--max-batch", type=int, default=64, help="largest batch size searched (default: 64)")
    fit_parser.add_argument("--json", action="store_true")
    fit_parser.set_defaults(handler=cmd_fit)

    validate_parser = commands.add_parser("validate", help="estimator vs CUDA measurement, per cell (needs a GPU)")
    _add_grid_arguments(validate_parser)
    validate_parser.set_defaults(handler=cmd_validate)

    report_parser = commands.add_parser("report", help="(re)build the HTML report from one or more result folders")
    report_parser.add_argument("folders", nargs="+", help="result folders (each with results.json)")
    report_parser.add_argument("--output", "-o", help="HTML file to write (default: FIRST_FOLDER/index.html)")
    report_parser.add_argument("--baseline-method", help="memory ratios relative to this method")
    report_parser.set_defaults(handler=cmd_report)

    compare_parser = commands.add_parser("compare", help="per-cell differences between two result sets")
    compare_parser.add_argument("first", help="result folder or results.json (A)")
    compare_parser.add_argument("second", help="result folder or results.json (B)")
    compare_parser.add_argument("--output", "-o", help="HTML file to write (default: B/compare.html)")
    compare_parser.set_defaults(handler=cmd_compare)

    check_parser = commands.add_parser("check", help="CI gate: fail when peak memory grew against a baseline")
    check_parser.add_argument("results", help="a results.json or the folder holding it")
    check_parser.add_argument("--baseline", required=True, help="baseline results.json (e.g. reports/baselines/...)")
    check_parser.add_argument("--tolerance", default="5%", help="allowed growth of peak memory (default: 5%%)")
    check_parser.add_argument("--throughput-tolerance",
                              help="also fail when images/s fell by more than this (CUDA, same GPU model only)")
    check_parser.set_defaults(handler=cmd_check)

    baseline_parser = commands.add_parser("baseline", help="manage memory baselines")
    baseline_commands = baseline_parser.add_subparsers(dest="baseline_command", required=True, parser_class=_Parser)
    update_parser = baseline_commands.add_parser("update", help="rewrite a baseline from a result set, on purpose")
    update_parser.add_argument("results", help="a results.json or the folder holding it")
    update_parser.add_argument("--baseline", required=True, help="baseline file to (re)write")
    update_parser.set_defaults(handler=cmd_baseline_update)
    return parser


def _finish_fit_arguments(args: argparse.Namespace) -> None:
    if getattr(args, "handler", None) is not cmd_fit:
        return
    from cadbench.estimator import DEFAULT_CUDA_CONTEXT_BYTES
    from cadbench.training.step import check_precision

    args.gpu_memory_text = args.gpu_memory
    try:
        args.gpu_memory = memory_size_list(args.gpu_memory)
    except argparse.ArgumentTypeError as exc:
        raise CadbenchError(f"--gpu-memory: {exc}") from None
    if args.cuda_context is None:
        args.cuda_context = DEFAULT_CUDA_CONTEXT_BYTES
    if args.max_batch < 1:
        raise CadbenchError(f"--max-batch must be at least 1, got {args.max_batch}")
    for precision in args.precision:
        check_precision(precision)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _finish_fit_arguments(args)
        return args.handler(args)
    except CadbenchError as exc:
        print(f"cadbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cadbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

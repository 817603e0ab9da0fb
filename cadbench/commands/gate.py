"""`cadbench check` (the CI memory gate: exit 0 pass, 1 regression or missing cell, 2 bad input) and
`cadbench baseline update` (rewrite a baseline on purpose)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TOLERANCE = "5%"


def register(commands) -> None:
    check_parser = commands.add_parser("check", help="CI gate: fail when peak memory grew against a baseline")
    check_parser.add_argument("results", help="a results.json or the folder holding it")
    check_parser.add_argument("--baseline", required=True, help="baseline results.json (e.g. reports/baselines/...)")
    check_parser.add_argument("--tolerance", default=DEFAULT_TOLERANCE,
                              help=f"allowed growth of peak memory (default: {DEFAULT_TOLERANCE.replace('%', '%%')})")
    check_parser.add_argument("--throughput-tolerance",
                              help="also fail when images/s fell by more than this (CUDA, same GPU model only)")
    check_parser.set_defaults(handler=check)

    baseline_parser = commands.add_parser("baseline", help="manage memory baselines")
    baseline_commands = baseline_parser.add_subparsers(dest="baseline_command", required=True,
                                                       parser_class=type(baseline_parser))
    update_parser = baseline_commands.add_parser("update", help="rewrite a baseline from a result set, on purpose")
    update_parser.add_argument("results", help="a results.json or the folder holding it")
    update_parser.add_argument("--baseline", required=True, help="baseline file to (re)write")
    update_parser.set_defaults(handler=baseline_update)


def check(args: argparse.Namespace) -> int:
    from cadbench.report.check import checked_cells, compare, parse_tolerance, read_result_document

    tolerance = parse_tolerance(args.tolerance)
    throughput_tolerance = (parse_tolerance(args.throughput_tolerance, "--throughput-tolerance")
                            if args.throughput_tolerance is not None else None)
    results = read_result_document(args.results, "results")
    baseline = read_result_document(args.baseline, "baseline")
    checked = checked_cells(baseline)
    findings = compare(results, baseline, tolerance, throughput_tolerance)
    if findings:
        print(f"FAIL: {len(findings)} of {checked} baseline cells regressed (memory tolerance {tolerance:.1%}):")
        for finding in findings:
            print(f"  {finding.describe()}")
        return 1
    print(f"OK: {checked} cells within {tolerance:.1%} of the baseline {baseline['path']}")
    return 0


def baseline_update(args: argparse.Namespace) -> int:
    from cadbench.errors import CadbenchError
    from cadbench.files import check_writable_target, strict_json, write_atomically
    from cadbench.report.check import baseline_document, read_result_document

    target = Path(args.baseline)
    if target.is_dir():
        check_writable_target(target)  # one line: it is a folder
    results = read_result_document(args.results, "results")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CadbenchError(f"cannot write {target}: cannot create folder {target.parent}: "
                            f"{exc.strerror or exc}") from None
    write_atomically(target, strict_json(baseline_document(results), indent=2) + "\n")
    print(f"baseline {target} now holds {len(results['rows'])} cells from {results['path']}")
    return 0

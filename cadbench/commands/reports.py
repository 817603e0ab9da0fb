"""`cadbench report` (the HTML report from result folders) and `cadbench compare A B`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    report_parser = commands.add_parser("report", help="(re)build the HTML report from one or more result folders")
    report_parser.add_argument("folders", nargs="+", help="result folders (each with results.json)")
    report_parser.add_argument("--output", "-o", help="HTML file to write (default: FIRST_FOLDER/index.html)")
    report_parser.add_argument("--baseline-method", help="memory ratios relative to this method")
    report_parser.add_argument("--references", default="reports/reference",
                               help="GPU reference folders (cadbench validate --reference): estimates are shown with "
                                    "their measured error there (default: reports/reference)")
    report_parser.set_defaults(handler=report)

    compare_parser = commands.add_parser("compare", help="per-cell differences between two result sets")
    compare_parser.add_argument("first", help="result folder, results.json or results.csv (A)")
    compare_parser.add_argument("second", help="result folder, results.json or results.csv (B)")
    compare_parser.add_argument("--output", "-o",
                                help="HTML file to write (default: compare.html in B's folder)")
    compare_parser.set_defaults(handler=compare)


def report(args: argparse.Namespace) -> int:
    from cadbench.files import check_writable_target
    from cadbench.report import build_report

    if args.output:
        check_writable_target(args.output)  # before the work, not after it
    target = build_report(args.folders, out_file=args.output, baseline_method=args.baseline_method,
                          reference_root=args.references)
    print(f"report written to {target}")
    return 0


def compare(args: argparse.Namespace) -> int:
    from cadbench.files import check_writable_target
    from cadbench.report.compare import compare_results, format_table, write_compare_html

    second = Path(args.second)
    # beside B: in B's folder, or in the folder of B's results.json / results.csv
    target = check_writable_target(args.output or (second if second.is_dir() else second.parent) / "compare.html")
    table = compare_results(args.first, args.second)
    print(format_table(table).to_string(index=False))
    write_compare_html(table, args.first, args.second, target)
    print(f"written to {target}")
    return 0

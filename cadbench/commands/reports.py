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
    compare_parser.add_argument("first", help="result folder or results.json (A)")
    compare_parser.add_argument("second", help="result folder or results.json (B)")
    compare_parser.add_argument("--output", "-o", help="HTML file to write (default: B/compare.html)")
    compare_parser.set_defaults(handler=compare)


def report(args: argparse.Namespace) -> int:
    from cadbench.report import build_report

    target = build_report(args.folders, out_file=args.output, baseline_method=args.baseline_method,
                          reference_root=args.references)
    print(f"report written to {target}")
    return 0


def compare(args: argparse.Namespace) -> int:
    from cadbench.report.compare import compare_results, format_table, write_compare_html

    table = compare_results(args.first, args.second)
    print(format_table(table).to_string(index=False))
    target = Path(args.output) if args.output else Path(args.second) / "compare.html"
    write_compare_html(table, args.first, args.second, target)
    print(f"written to {target}")
    return 0

"""`cadbench merge OUT DIR [DIR ...]`: result folders measured on several machines, as one folder for `report` and
`check`."""

from __future__ import annotations

import argparse


def register(commands) -> None:
    parser = commands.add_parser(
        "merge", help="merge result folders measured alike (e.g. on several machines) into one folder")
    parser.add_argument("out", help="the merged folder (created, or added to)")
    parser.add_argument("folders", nargs="+", metavar="DIR", help="result folders to merge")
    parser.set_defaults(handler=merge_command)


def merge_command(args: argparse.Namespace) -> int:
    from cadbench.harness.merge import merge_folders
    from cadbench.report import build_report
    from cadbench.errors import CadbenchError
    from cadbench.files import warn

    outcome = merge_folders(args.out, args.folders)
    try:
        build_report([outcome.out_dir])
    except CadbenchError as exc:
        warn(f"index.html was not written ({exc}); `cadbench report {outcome.out_dir}` builds it again")
    print(f"merged {len(set(args.folders))} folders into {outcome.out_dir}/: {outcome.rows} cells "
          f"({outcome.added} rows added)")
    return 0

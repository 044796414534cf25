"""The ``zenstore`` command line (a thin shell over the library)."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import ZenstoreError
from .store import Store


def _cmd_stats(args) -> int:
    with Store.open(args.store, readonly=True) as store:
        stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for key, value in stats.items():
            if key not in ("config",):
                print(f"{key:>24}: {value}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import format_report, run_demo

    report = run_demo(args.path, dim=args.dim, docs=args.docs, queries=args.queries)
    print(format_report(report))
    return 0 if report.identical_after_reopen else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zenstore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"zenstore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stats", help="counts and bytes of a store")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_stats)
    p = sub.add_parser("demo", help="build and search a small synthetic store, print a report")
    p.add_argument("--path", default=None, help="where to build the store (default: a temp dir)")
    p.add_argument("--dim", type=int, default=7680)
    p.add_argument("--docs", type=int, default=5000)
    p.add_argument("--queries", type=int, default=100)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZenstoreError as exc:
        print(f"zenstore: error: {exc}", file=sys.stderr)
        return 1

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zenstore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"zenstore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stats", help="counts and bytes of a store")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_stats)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZenstoreError as exc:
        print(f"zenstore: error: {exc}", file=sys.stderr)
        return 1

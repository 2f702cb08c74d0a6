"""``msrn models``: list the registered MSRN architectures."""

import argparse

from ..models import list_models

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser("models", help="list the registered MSRN architectures")
    parser.add_argument("pattern", nargs="?", default="msrn*", help="shell-style filter (default: msrn*)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in list_models(args.pattern):
        print(name)
    return 0

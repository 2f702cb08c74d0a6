"""The ``msrn`` command. Each sub-command lives in its own module of this package and exposes
``register(subparsers)``; user mistakes end with a one-line message and exit code 2, no traceback."""
import argparse
import importlib
import logging
import sys

from ..version import __version__

__all__ = ["main", "CommandError"]

# Modules of msrn.cli that provide sub-commands, in the order `msrn --help` lists them.
_COMMAND_MODULES = ("models", "train", "predict", "evaluate", "export", "convert")


class CommandError(Exception):
    """A mistake in the command line or its inputs; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msrn", description="MSRN multi-label image classification.")
    parser.add_argument("--version", action="version", version=f"msrn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CommandError, ValueError, FileNotFoundError) as error:
        print(f"msrn {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2


def _one_line(error: BaseException) -> str:
    text = str(error)
    # An error re-raised from a DataLoader worker carries the worker's traceback in its message; its
    # last line is the original "module.Type: message".
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

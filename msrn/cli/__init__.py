"""The ``msrn`` command. Its interface is the command line, documented by ``msrn --help``,
``msrn COMMAND --help`` and the guides (training.md, predict.md, export.md, convert.md); from Python,
only :func:`main` (run a command in-process) and :func:`build_parser` (the parser of every command)
are API. The other names (``CommandError``, ``OneLineErrorParser``, ``check_threshold``, ``one_line``,
``warnings_in_the_log``) are what the sub-commands share, not API.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``; user
mistakes end with a one-line message and exit code 2, no traceback."""

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from .._warnings import MSRNWarning
from ..backends import BackendUnavailableError
from ..version import __version__

__all__ = ["main", "build_parser"]

# Modules of msrn.cli that provide sub-commands, in the order `msrn --help` lists them.
_COMMAND_MODULES = ("models", "train", "predict", "evaluate", "export", "convert")


class CommandError(Exception):
    """A mistake in the command line or its inputs; printed without a traceback."""


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (with where to read more), like the
    commands' own errors."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_threshold(value: float) -> None:
    """Refuse a ``--threshold`` that is not a probability strictly between 0 and 1."""
    if not 0.0 < value < 1.0:
        raise CommandError(f"--threshold must be between 0 and 1 (exclusive), got {value}.")


@contextlib.contextmanager
def warnings_in_the_log() -> Iterator[None]:
    """Within: msrn's warnings are shown by the log only (each :class:`msrn.MSRNWarning` is also
    logged), not a second time by Python's ``warnings``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MSRNWarning)
        yield


def build_parser() -> argparse.ArgumentParser:
    """The ``msrn`` parser with every sub-command (``models``, ``train``, ``predict``, ``evaluate``,
    ``export``, ``convert-official``): ``build_parser().parse_args(["train", "--epochs", "3"])``."""
    parser = OneLineErrorParser(prog="msrn", description="MSRN multi-label image classification.")
    parser.add_argument("--version", action="version", version=f"msrn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``msrn`` with ``argv`` (default: ``sys.argv[1:]``) in this process and return its exit
    code: 0 on success, 2 for a user mistake (one line on stderr, no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings_in_the_log():
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`msrn predict ... | head -1`): stop quietly. Python would report the
        # pipe again when it flushes stdout at exit, so stdout now goes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except (CommandError, ValueError, OSError, BackendUnavailableError) as error:
        # OSError: a full disk or a missing permission while writing; the message names the file.
        # BackendUnavailableError: --backend onnxruntime without the onnxruntime package.
        print(f"msrn {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line."""
    text = str(error)
    # An error re-raised from a DataLoader worker carries the worker's traceback in its message; its
    # last line is the original "module.Type: message".
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The options that ``msrn predict`` and ``msrn evaluate`` share for what runs the model."""

import argparse
import logging
import pathlib

from ..backends import BACKENDS, PRECISIONS
from ..data.image import IMAGE_SUFFIXES, find_image_files
from ..engine.memory import keep_freed_memory
from . import CommandError

__all__ = ["add_backend_options", "calibration_files", "keep_freed_memory_unless_refused"]

_logger = logging.getLogger(__name__)

# The most calibration images int8 quantization runs (one float forward pass each).
MAX_CALIBRATION_IMAGES = 256


def add_backend_options(parser: argparse.ArgumentParser, default_calibration: str | None) -> None:
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="what runs the model: torch, or onnxruntime (exported once to ONNX and cached in "
        "$MSRN_CACHE/onnx, CPU only); default auto: onnxruntime when it is installed and the device is "
        "the CPU without --amp, else torch",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (default), or int8: the onnxruntime model statically quantized, calibrated on "
        "--calibration (see docs/predict.md for its accuracy cost)",
    )
    where = f"default: {default_calibration}" if default_calibration else "required with --precision int8"
    parser.add_argument(
        "--calibration",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help=f"images that set the int8 model's activation ranges, a few dozen like the images to label "
        f"(at most {MAX_CALIBRATION_IMAGES} are used; {where})",
    )
    parser.add_argument(
        "--no-keep-freed-memory",
        dest="keep_freed_memory",
        action="store_false",
        help="let malloc return freed memory to the system (by default this process keeps it, which "
        "avoids page faults in every batch; see docs/performance.md)",
    )


def calibration_files(
    args: argparse.Namespace, default: list[pathlib.Path] | None
) -> list[pathlib.Path] | None:
    """The calibration images of ``--calibration`` (folders searched), or ``default``; ``None`` unless
    ``--precision int8``."""
    if args.precision != "int8":
        if args.calibration:
            raise CommandError("--calibration goes with --precision int8.")
        return None
    if not args.calibration:
        if default is None:
            raise CommandError(
                "--precision int8 needs --calibration IMAGE_OR_FOLDER: a few dozen images like the test "
                "images (e.g. from the training split)."
            )
        return default
    files: list[pathlib.Path] = []
    for name in args.calibration:
        path = pathlib.Path(name)
        if path.is_dir():
            found = find_image_files(path)
            if not found:
                raise CommandError(
                    f"--calibration folder {path} has no image files ({', '.join(IMAGE_SUFFIXES)})."
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f"--calibration {path} does not exist.")
    if len(files) > MAX_CALIBRATION_IMAGES:
        # Each calibration image is one forward pass of the float model: a big folder would take long
        # and add little. An even spread keeps the mix of a folder sorted by kind.
        given = len(files)
        files = [files[k * given // MAX_CALIBRATION_IMAGES] for k in range(MAX_CALIBRATION_IMAGES)]
        _logger.warning(
            "--calibration: using %d of the %d images given, spread evenly over them.",
            MAX_CALIBRATION_IMAGES,
            given,
        )
    return files


def keep_freed_memory_unless_refused(args: argparse.Namespace) -> None:
    """This command is a process of its own: keep freed memory in it (msrn.engine.keep_freed_memory),
    unless ``--no-keep-freed-memory``."""
    if args.keep_freed_memory:
        keep_freed_memory()

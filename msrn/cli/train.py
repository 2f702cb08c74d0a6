"""``msrn train``: train and evaluate MSRN on PASCAL VOC 2007, MS-COCO or a CSV data set.

The options are the fields of :class:`msrn.engine.TrainConfig`, generated from it (help text and
``--help`` groups come from the fields' metadata). ``examples/train_voc.py`` runs :func:`main`.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from typing import Any

from ..engine import (
    NonFiniteLossError,
    StoppedWithMainProcess,
    TrainConfig,
    cpu_config,
    format_metrics_table,
    paper_config,
    resume_config,
    train,
)
from ..engine.builders import PretrainedWeightsUnavailable
from . import OneLineErrorParser, one_line, warnings_in_the_log

__all__ = ["register", "add_train_arguments", "config_from_args", "run", "build_parser", "main"]

DESCRIPTION = """\
Train and evaluate MSRN on PASCAL VOC 2007 (or COCO, or a CSV data set).

Without --data a VOC-format data set is generated into a cache folder and a CPU-sized profile is
used; with --data the defaults are the paper's (see docs/training.md). Every default can be overridden.
An output folder that holds a run is refused: --resume continues it (with its saved settings),
--overwrite replaces it.
"""


def _argument_type(annotation: Any) -> Any:
    """The value type of a field: ``X | None`` is ``X``, ``tuple[X, ...]`` is ``X``, a dict is JSON."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is dict:
        return json.loads
    return annotation


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per :class:`TrainConfig` field, in the field's group. Every option defaults to
    ``None`` ("not given"), so that :func:`config_from_args` applies only what the user typed."""
    groups: dict[str, Any] = {}
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        metadata = dict(field.metadata)
        group_name = metadata.pop("group")
        group = groups.get(group_name) or groups.setdefault(group_name, parser.add_argument_group(group_name))
        flag = "--" + field.name.replace("_", "-")
        help_text = metadata.pop("help") or None
        if hints[field.name] is bool:
            negation = metadata.pop("negation", None)
            if help_text:
                group.add_argument(flag, dest=field.name, action="store_true", default=None, help=help_text)
            if negation:
                group.add_argument(
                    "--no-" + flag[2:], dest=field.name, action="store_false", default=None, help=negation
                )
            continue
        if typing.get_origin(hints[field.name]) is tuple:
            metadata.setdefault("nargs", "+")
        group.add_argument(
            flag,
            dest=field.name,
            type=_argument_type(hints[field.name]),
            default=None,
            help=help_text,
            **metadata,
        )


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields the user typed (lists as tuples)."""
    given = {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            given[field.name] = tuple(value) if isinstance(value, list) else value
    return given


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run the options describe: with ``--resume DIR``, that run's saved settings with the given
    options applied where a run may change (others are refused); else the paper's recipe with
    ``--data``, or the CPU profile on the generated set, with every given option applied."""
    overrides = _given_options(args)
    if overrides.get("resume"):
        return resume_config(overrides.pop("resume"), **overrides)
    return paper_config(**overrides) if overrides.get("data") else cpu_config(**overrides)


def _report(config: TrainConfig, record: dict[str, Any]) -> None:
    print(
        f"\nepoch {record['epoch']}/{config.epochs}  loss {record['train_loss']:.4f}  "
        f"lr {record['lr']:.4g}  {record['images_per_s']:.1f} img/s  test images {record['test_images']}"
    )
    print(format_metrics_table(record))
    if "val_mAP" in record:
        print(
            f"validation mAP {record['val_mAP']:.2f} ({record['val_images']} images); test at thresholds "
            f"fitted on it: CF1 {record['fitted_CF1']:.2f}  OF1 {record['fitted_OF1']:.2f} "
            f"(at 0.5: {record['CF1']:.2f}  {record['OF1']:.2f})"
        )
        print(
            f"best validation mAP {record['best_val_mAP']:.2f} at epoch {record['best_epoch']} "
            f"(its test mAP {record['best_mAP']:.2f})",
            flush=True,
        )
    else:
        print(f"best mAP {record['best_mAP']:.2f}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` say; 0 when done, 1 when the loss diverged, 2 on a user error.

    Under ``torchrun`` only rank 0 prints; another process prints only an error of its own. A stop
    that rank 0 shares (its refusal to start, a diverged loss) ends the other processes with 0: the
    job's status is rank 0's, and a follower that failed first would make torchrun kill rank 0
    before it had said why."""
    prefix = getattr(args, "error_prefix", "msrn train")
    rank = int(os.environ.get("RANK", "0"))
    for name in ("msrn.engine.trainer", "msrn.engine.builders"):
        run_logger = logging.getLogger(name)
        if rank == 0 and run_logger.getEffectiveLevel() > logging.INFO:
            # The run's summary (model, label features, graph edges, validation split, resumed
            # settings) belongs to what `msrn train` reports, not to the details behind -v.
            run_logger.setLevel(logging.INFO)
    if rank != 0:  # rank 0 reports the run, warnings included; the others report only their errors
        logging.getLogger("msrn").setLevel(logging.ERROR)
    try:
        config = config_from_args(args)
        last = train(config, on_epoch_end=lambda record: _report(config, record))
    except NonFiniteLossError as error:  # raised on every process at once
        if rank != 0:
            return 0
        print(f"{prefix}: stopped: {error}", file=sys.stderr)
        return 1
    except StoppedWithMainProcess:  # rank 0 prints the reason and fails the job
        return 0
    except (ValueError, TypeError, OSError, PretrainedWeightsUnavailable) as error:
        where = f" (rank {rank})" if rank else ""
        print(f"{prefix}{where}: error: {one_line(error)}", file=sys.stderr)
        return 2
    if last:
        chosen = f"best/: epoch {last['best_epoch']}, test mAP {last['best_mAP']:.2f}"
        if "best_val_mAP" in last:
            chosen += f", validation mAP {last['best_val_mAP']:.2f}"
        print(f"\nfinished: test mAP {last['mAP']:.2f} ({chosen}); checkpoints in {config.output_dir}")
    return 0


def register(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser(
        "train",
        help="train and evaluate MSRN (VOC 2007, COCO or CSV; the generated set by default)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser)
    parser.set_defaults(func=run)


def build_parser(prog: str | None = None, description: str = DESCRIPTION) -> argparse.ArgumentParser:
    """A stand-alone parser with the options of ``msrn train`` and a ``-v`` flag of its own."""
    parser = OneLineErrorParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_train_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None, description: str = DESCRIPTION) -> int:
    """``msrn train`` as a program of its own (what ``examples/train_voc.py`` runs)."""
    parser = build_parser(prog, description)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    args.error_prefix = parser.prog.removesuffix(".py")
    with warnings_in_the_log():
        return run(args)

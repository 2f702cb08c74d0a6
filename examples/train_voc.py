#!/usr/bin/env python
"""Train and evaluate MSRN on PASCAL VOC 2007 (or COCO, or a CSV data set).

    python examples/train_voc.py                          # generated VOC-format set, CPU profile
    python examples/train_voc.py --data ~/VOCdevkit       # the paper's recipe on VOC 2007
    torchrun --nproc_per_node=4 examples/train_voc.py --data ~/VOCdevkit
    python examples/train_voc.py --data ~/VOCdevkit --resume output/train_voc

Without --data a VOC-format data set is generated into a cache folder and a CPU-sized profile is
used; with --data the defaults are the paper's (see docs/training.md). Every default can be overridden.
The options are those of ``msrn train`` (``msrn.cli.train``).
"""

import argparse
import sys

try:
    import msrn  # noqa: F401
except ImportError:  # running from a checkout without installing: use the repository's package
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msrn.cli import train as train_command


def build_parser() -> argparse.ArgumentParser:
    return train_command.build_parser(prog="train_voc", description=__doc__)


def main(argv: list[str] | None = None) -> int:
    return train_command.main(argv, prog="train_voc", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())

"""``msrn evaluate``: score a trained checkpoint on a test set; print the metrics and per-class AP."""

import argparse
import logging
import os
import pathlib
from typing import Any

from .._io import to_json
from ..data import DATASET_KINDS
from ..engine import evaluate_checkpoint, format_class_ap_table, format_metrics_table, run_test_data
from ..engine.loop import AMP_MODES
from . import CommandError, check_threshold
from ._backend_options import add_backend_options, calibration_files, keep_freed_memory_unless_refused

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint of examples/train_voc.py on a test set",
        description="Load a model folder written by the trainer (best/ or last/, or any save_pretrained "
        "folder) and print mAP, CP, CR, CF1, OP, OR, OF1 (and top-3) and the AP of each class.",
    )
    parser.add_argument(
        "checkpoint", help="the best/ or last/ folder of a training run, or any save_pretrained folder"
    )
    parser.add_argument(
        "--data",
        help="VOCdevkit folder, COCO root, NUS-WIDE folder, Apparel folder, Open Images folder, or test CSV "
        "file (default: the test split the checkpoint's training run was scored on, from the run's "
        "train_config.json)",
    )
    parser.add_argument("--dataset", choices=DATASET_KINDS, help="format of --data (default: voc)")
    parser.add_argument(
        "--split",
        help="voc, nuswide, apparel, openimages: test (default); coco: val (default); openimages also "
        "validation",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="test resize (default: the size the model was trained at)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--amp", default="none", choices=AMP_MODES)
    add_backend_options(parser, None)
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="probability threshold of CP/CR/..., in (0, 1), for every class (default: the model's "
        "per-label thresholds when it has them, else 0.5; the paper's tables use 0.5)",
    )
    parser.add_argument("--skip-bad-images", action="store_true", help="leave out unreadable images")
    parser.add_argument(
        "--skip-missing-images",
        action="store_true",
        help="nuswide, apparel, openimages: leave out listed images that are not on disk",
    )
    parser.add_argument(
        "--unknown-as-negative",
        action="store_true",
        help="openimages: the labels an image's file does not list count as absent instead of being left "
        "out of the metrics (default: the training run's setting)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of tables (null for the AP of a class without positives)",
    )
    parser.set_defaults(func=run)


_THRESHOLD_NOTES = {
    "override": "CP, CR, F1 at --threshold {threshold:g}",
    "model": "CP, CR, F1 at the model's per-label thresholds (--threshold T for one threshold)",
    "default": "CP, CR, F1 at threshold 0.5",
}


def _test_data(args: argparse.Namespace) -> dict[str, Any]:
    """``data, dataset, split`` and the skip options: from the command line, or without ``--data``
    from the training run whose ``best/`` or ``last/`` folder is evaluated."""
    if args.data is not None:
        return {
            "data": args.data,
            "dataset": args.dataset or "voc",
            "split": args.split,
            "skip_bad_images": args.skip_bad_images,
            "skip_missing_images": args.skip_missing_images,
            **({"unknown_as_negative": True} if args.unknown_as_negative else {}),
        }
    if args.dataset is not None:
        raise CommandError(f"--dataset {args.dataset} describes --data: pass --data too.")
    run_folder = pathlib.Path(args.checkpoint).resolve().parent
    try:
        test_data = run_test_data(run_folder)
    except FileNotFoundError:
        raise CommandError(
            f"{args.checkpoint} is not in the folder of a training run (no train_config.json in "
            f"{run_folder}); pass the test data with --data (and --dataset)."
        ) from None
    if args.split is not None and args.split != test_data["split"]:
        test_data["split"], test_data["fingerprint"] = args.split, None  # another split than the run's
    elif test_data["fingerprint"] is None:
        logging.getLogger(__name__).warning(
            "%s records no fingerprint of its test split (made before msrn recorded them): the test data "
            "are not checked to be the ones the run was scored on",
            run_folder,
        )
    test_data["skip_bad_images"] |= args.skip_bad_images
    test_data["skip_missing_images"] |= args.skip_missing_images
    if args.unknown_as_negative:
        test_data["unknown_as_negative"] = True
    return test_data


def run(args: argparse.Namespace) -> int:
    if args.threshold is not None:
        check_threshold(args.threshold)
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.workers < 0:
        raise CommandError(
            f"--workers must be 0 or more (0 reads images in this process), got {args.workers}."
        )
    if args.image_size is not None and args.image_size < 1:
        raise CommandError(f"--image-size must be a positive number of pixels, got {args.image_size}.")
    if not os.path.isfile(os.path.join(args.checkpoint, "config.json")):
        raise CommandError(
            f"no saved model in {args.checkpoint}: pass the best/ or last/ folder of a training run"
        )
    test_data = _test_data(args)
    calibration = calibration_files(args, default=None)
    keep_freed_memory_unless_refused(args)
    result = evaluate_checkpoint(
        args.checkpoint,
        image_size=args.image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
        threshold=args.threshold,
        backend=args.backend,
        precision=args.precision,
        calibration_images=calibration,
        **test_data,
    )
    metrics, class_ap, classes = result
    source = result.thresholds.source  # what the metrics were computed at, as evaluate_checkpoint decided
    if args.json:
        record = {
            "metrics": metrics,
            "class_ap": dict(zip(classes, class_ap.tolist(), strict=True)),
            "thresholds": source,
            "label_thresholds": dict(zip(classes, result.thresholds.values.tolist(), strict=True)),
        }
        print(to_json(record))
        return 0
    if args.data is None:
        split = f", split {test_data['split']}" if test_data["split"] else ""
        print(f"Test data of the training run: {test_data['data']} ({test_data['dataset']}{split})")
    print(_THRESHOLD_NOTES[source].format(threshold=args.threshold or 0.5))
    print(format_metrics_table(metrics))
    print()
    print(format_class_ap_table(classes, class_ap))
    return 0

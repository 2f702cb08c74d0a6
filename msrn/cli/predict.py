"""``msrn predict``: label images with a trained MSRN, optionally drawing its attention maps.

It runs :class:`msrn.Predictor` (one code path with the Python API): preprocessing from the model's
``pretrained_cfg`` (timm's data config), batches read by ``--workers`` processes while the model runs,
labels chosen at the model's per-label thresholds unless ``--threshold`` overrides them. A file that
cannot be read as an image is reported by name and skipped; the others are labelled and the exit code
is then 1.
"""

import argparse
import pathlib
import sys
from collections.abc import Sequence

from tqdm import tqdm

from .. import visualize
from .._io import to_json
from ..data.image import IMAGE_SUFFIXES, find_image_files
from ..engine.loop import AMP_MODES
from ..predictor import Predictor
from . import CommandError, check_threshold
from ._backend_options import add_backend_options, calibration_files, keep_freed_memory_unless_refused

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser(
        "predict",
        help="label images (table or JSON lines), optionally with attention-map pictures",
        description="Label images with a trained MSRN. Prints, per image, the labels whose probability "
        "reaches their threshold: the model's per-label thresholds (fitted on a validation split by msrn "
        "train) when it has them, else 0.5, unless --threshold is given.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders whose images (searched recursively) are labelled",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="local-dir:DIR or hf-hub:ID of a saved model, or an architecture NAME "
        "(msrn_resnet101...) with --checkpoint",
    )
    parser.add_argument("--checkpoint", metavar="FILE", help="safetensors weights (state dict) to load")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="report labels with probability >= this, in (0, 1), for every label (default: the model's "
        "per-label thresholds when it has them, else 0.5)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=None,
        metavar="K",
        help="report at most the K most probable of those labels",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image instead of a table")
    parser.add_argument(
        "--attention",
        metavar="OUT_DIR",
        help="write one PNG per image: per reported label, each branch's attention map",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes that read and resize images while the model runs (default 2; 0: "
        "read them in the main process)",
    )
    parser.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="input size in pixels (default: the model's pretrained_cfg, 448 for the paper's)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--amp", default="none", choices=AMP_MODES, help="mixed precision (fp16: CUDA only; default none)"
    )
    add_backend_options(parser, "the first 32 input images")
    parser.set_defaults(func=run)


def _collect_images(inputs: Sequence[str]) -> tuple[list[pathlib.Path], bool]:
    """The files to label, and whether a folder was given (then a progress bar is shown)."""
    files: list[pathlib.Path] = []
    any_folder = False
    for name in inputs:
        path = pathlib.Path(name)
        if path.is_dir():
            any_folder = True
            found = find_image_files(path)
            if not found:
                raise CommandError(f"folder {path} contains no image files ({', '.join(IMAGE_SUFFIXES)}).")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f"{path} does not exist.")
    return files, any_folder


def _check_options(args: argparse.Namespace) -> None:
    if args.threshold is not None:
        check_threshold(args.threshold)
    if args.top_k is not None and args.top_k < 1:
        raise CommandError(f"--top-k must be at least 1, got {args.top_k}.")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.workers < 0:
        raise CommandError(f"--workers must be 0 or more, got {args.workers}.")
    if args.attention is not None and pathlib.Path(args.attention).is_file():
        raise CommandError(f"--attention {args.attention} is a file; give a folder for the PNG files.")


def _unique_png(out_dir: pathlib.Path, path: pathlib.Path, used: dict[str, int]) -> pathlib.Path:
    stem = path.stem
    count = used.get(stem, 0)
    used[stem] = count + 1
    return out_dir / (f"{stem}.png" if count == 0 else f"{stem}-{count + 1}.png")


class _Table:
    """Plain-text table written row by row (column widths fixed from the known file names)."""

    def __init__(self, paths: Sequence[pathlib.Path], names: Sequence[str], empty_note: str, stream) -> None:
        self.image_width = max(len("image"), *(len(str(p)) for p in paths))
        self.label_width = max(len("label"), *(len(n) for n in names))
        self.empty_note = empty_note
        self.stream = stream
        print(f"{'image':<{self.image_width}}  {'label':<{self.label_width}}  probability", file=stream)

    def write(self, path: pathlib.Path, labels: Sequence[tuple[str, float]]) -> None:
        if not labels:
            print(f"{str(path):<{self.image_width}}  {self.empty_note}", file=self.stream)
        for row, (label, probability) in enumerate(labels):
            image = str(path) if row == 0 else ""
            print(
                f"{image:<{self.image_width}}  {label:<{self.label_width}}  {probability:.4f}",
                file=self.stream,
            )


def _empty_note(predictor: Predictor) -> str:
    """What the table says for an image without labels, naming the thresholds in use."""
    if predictor.threshold_source == "model":
        return "(no label reaches the model's threshold for it)"
    return f"(no label >= {predictor.thresholds[0]:g})"


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    paths, any_folder = _collect_images(args.inputs)
    keep_freed_memory_unless_refused(args)
    calibration = calibration_files(args, default=paths[:32])
    predictor = Predictor(
        args.model,
        device=args.device,
        threshold=args.threshold,
        batch_size=args.batch_size,
        workers=args.workers,
        amp=args.amp,
        checkpoint=args.checkpoint,
        img_size=args.img_size,
        backend=args.backend,
        precision=args.precision,
        calibration_images=calibration,
    )
    model, names, data_config = predictor.model, predictor.label_names, predictor.data_config
    out_dir = pathlib.Path(args.attention) if args.attention else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        columns = visualize.branch_names(model)
    table = None if args.json else _Table(paths, names, _empty_note(predictor), sys.stdout)
    used_names: dict[str, int] = {}
    skipped = 0
    progress = tqdm(total=len(paths), unit="img", disable=not any_folder, file=sys.stderr)
    for batch in predictor.iter_batches(paths):
        for index, reason in batch.failed:
            skipped += 1
            progress.write(f"msrn predict: skipped {paths[index]}: {reason}", file=sys.stderr)
        progress.update(len(batch.indices) + len(batch.failed))
        if not batch.indices:
            continue
        maps = None
        if out_dir is not None:
            branch_maps = visualize.label_attention_maps(model, batch.inputs)
            maps = visualize.resize_maps(branch_maps, batch.inputs.shape[-2:]).cpu()
        for i, index in enumerate(batch.indices):
            path = paths[index]
            row = batch.probabilities[i].tolist()
            chosen = predictor.select(row, args.top_k)
            if args.json:
                found = [
                    {
                        "label": names[k],
                        "probability": round(row[k], 6),
                        "threshold": round(float(predictor.thresholds[k]), 6),
                    }
                    for k in chosen
                ]
                record = {"image": str(path), "labels": found, "thresholds": predictor.threshold_source}
                print(to_json(record), flush=True)
            else:
                table.write(path, [(names[k], row[k]) for k in chosen])
            if maps is not None:
                # With no label above its threshold the best one is drawn, marked as such.
                shown = chosen or [max(range(len(row)), key=row.__getitem__)]
                note = "" if chosen else " (below threshold)"
                titles = [f"{names[k]} {row[k]:.2f}{note}" for k in shown]
                picture = visualize.attention_grid(
                    visualize.tensor_to_image(
                        batch.inputs[i].float().cpu(), data_config["mean"], data_config["std"]
                    ),
                    maps[i, shown].numpy(),
                    titles,
                    columns,
                )
                picture.save(_unique_png(out_dir, path, used_names))
    progress.close()
    if skipped:
        print(
            f"msrn predict: {skipped} of {len(paths)} files skipped (not readable as images).",
            file=sys.stderr,
        )
        return 1
    return 0

"""``msrn predict``: label images with a trained MSRN, optionally drawing its attention maps.

Preprocessing follows the model's ``pretrained_cfg`` (timm's data config: input size, resize mode,
interpolation, mean, std). Images are read and labelled in batches; ``--workers`` processes decode
and resize the next batches while the model runs on the current one (into pinned memory for a GPU).
A file that cannot be read as an image is reported by name and skipped; the others are labelled and
the exit code is then 1.
"""

import argparse
import pathlib
import sys
from collections.abc import Iterator, Sequence

import torch
from timm.data import create_transform, resolve_model_data_config
from tqdm import tqdm

from .. import visualize
from .._io import to_json
from ..data import BadImageError, load_rgb_image
from ..data.image import IMAGE_SUFFIXES, find_image_files
from ..engine.distributed import resolve_device
from ..models import load_model
from . import CommandError, check_threshold

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser(
        "predict",
        help="label images (table or JSON lines), optionally with attention-map pictures",
        description="Label images with a trained MSRN. Prints, per image, the labels whose probability "
        "is at least --threshold.",
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
        default=0.5,
        help="report labels with probability >= this, in (0, 1) (default 0.5)",
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
    check_threshold(args.threshold)
    if args.top_k is not None and args.top_k < 1:
        raise CommandError(f"--top-k must be at least 1, got {args.top_k}.")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.workers < 0:
        raise CommandError(f"--workers must be 0 or more, got {args.workers}.")
    if args.attention is not None and pathlib.Path(args.attention).is_file():
        raise CommandError(f"--attention {args.attention} is a file; give a folder for the PNG files.")


def select_labels(probabilities: Sequence[float], threshold: float, top_k: int | None = None) -> list[int]:
    """Indices of the labels with probability ``>= threshold``, most probable first, at most ``top_k``."""
    above = [i for i, p in enumerate(probabilities) if p >= threshold]
    chosen = sorted(above, key=lambda i: -probabilities[i])
    return chosen[:top_k] if top_k is not None else chosen


class _ImageFiles(torch.utils.data.Dataset):
    """``(index, image tensor, None)`` per file, or ``(index, None, reason)`` for one that cannot be read."""

    def __init__(self, paths: Sequence[pathlib.Path], transform) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, self.transform(load_rgb_image(self.paths[index])), None
        except (OSError, ValueError) as error:
            reason = error.reason if isinstance(error, BadImageError) and error.reason else str(error)
            return index, None, reason


def _collate(samples):
    """``(indices of the readable files, their images stacked or None, [(index, reason)] of the others)``."""
    kept = [(index, image) for index, image, _ in samples if image is not None]
    failed = [(index, reason) for index, image, reason in samples if image is None]
    images = torch.stack([image for _, image in kept]) if kept else None
    return [index for index, _ in kept], images, failed


def _batches(
    paths: Sequence[pathlib.Path], transform, batch_size: int, workers: int, device: torch.device
) -> Iterator[tuple]:
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, transform),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    yield from loader


def _unique_png(out_dir: pathlib.Path, path: pathlib.Path, used: dict[str, int]) -> pathlib.Path:
    stem = path.stem
    count = used.get(stem, 0)
    used[stem] = count + 1
    return out_dir / (f"{stem}.png" if count == 0 else f"{stem}-{count + 1}.png")


class _Table:
    """Plain-text table written row by row (column widths fixed from the known file names)."""

    def __init__(self, paths: Sequence[pathlib.Path], names: Sequence[str], stream) -> None:
        self.image_width = max(len("image"), *(len(str(p)) for p in paths))
        self.label_width = max(len("label"), *(len(n) for n in names))
        self.stream = stream
        print(f"{'image':<{self.image_width}}  {'label':<{self.label_width}}  probability", file=stream)

    def write(self, path: pathlib.Path, labels: Sequence[tuple[str, float]], threshold: float) -> None:
        if not labels:
            print(f"{str(path):<{self.image_width}}  (no label >= {threshold:g})", file=self.stream)
        for row, (label, probability) in enumerate(labels):
            image = str(path) if row == 0 else ""
            print(
                f"{image:<{self.image_width}}  {label:<{self.label_width}}  {probability:.4f}",
                file=self.stream,
            )


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    paths, any_folder = _collect_images(args.inputs)
    device = resolve_device(args.device)
    model = load_model(args.model, args.checkpoint).to(device)
    if args.img_size is not None and args.img_size < model.backbone.min_input_size:
        raise CommandError(
            f"--img-size {args.img_size} is too small for this backbone: use at least "
            f"{model.backbone.min_input_size} px."
        )
    names = model.get_label_names()
    data_config = resolve_model_data_config(model)
    if args.img_size is not None:
        data_config["input_size"] = (data_config["input_size"][0], args.img_size, args.img_size)
    transform = create_transform(**data_config, is_training=False)
    out_dir = pathlib.Path(args.attention) if args.attention else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        columns = visualize.branch_names(model)
    table = None if args.json else _Table(paths, names, sys.stdout)
    used_names: dict[str, int] = {}
    skipped = 0
    progress = tqdm(total=len(paths), unit="img", disable=not any_folder, file=sys.stderr)
    for indices, images, failed in _batches(paths, transform, args.batch_size, args.workers, device):
        for index, reason in failed:
            skipped += 1
            progress.write(f"msrn predict: skipped {paths[index]}: {reason}", file=sys.stderr)
        progress.update(len(indices) + len(failed))
        if not indices:
            continue
        kept = [paths[index] for index in indices]
        images = images.to(device, non_blocking=True)
        with torch.inference_mode():
            probabilities = torch.sigmoid(model(images).float()).cpu()
        maps = None
        if out_dir is not None:
            branch_maps = visualize.label_attention_maps(model, images)
            maps = visualize.resize_maps(branch_maps, images.shape[-2:]).cpu()
        for i, path in enumerate(kept):
            row = probabilities[i].tolist()
            chosen = select_labels(row, args.threshold, args.top_k)
            labels = [(names[k], row[k]) for k in chosen]
            if args.json:
                found = [{"label": n, "probability": round(p, 6)} for n, p in labels]
                record = {"image": str(path), "labels": found}
                print(to_json(record), flush=True)
            else:
                table.write(path, labels, args.threshold)
            if maps is not None:
                # With no label above the threshold the best one is drawn, marked as such.
                shown = chosen or [max(range(len(row)), key=row.__getitem__)]
                note = "" if chosen else " (below threshold)"
                titles = [f"{names[k]} {row[k]:.2f}{note}" for k in shown]
                picture = visualize.attention_grid(
                    visualize.tensor_to_image(images[i].cpu(), data_config["mean"], data_config["std"]),
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

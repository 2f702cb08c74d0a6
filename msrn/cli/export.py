"""``msrn export``: write a trained MSRN as an ONNX inference graph (dynamic batch dimension)."""

import argparse
import pathlib

import torch

from ..export import DEFAULT_OPSET, check_opset, export_onnx, resolve_input_size, run_onnx
from ..models import load_model
from . import CommandError

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX",
        description="Export images [batch, 3, H, W] -> logits [batch, n] as ONNX. The label and group "
        "embeddings are stored as constants; label names and preprocessing go into the "
        "file's metadata. The export is then checked in onnxruntime (if installed).",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="local-dir:DIR or hf-hub:ID of a saved model, or an architecture NAME with --checkpoint",
    )
    parser.add_argument("--checkpoint", metavar="FILE", help="safetensors weights (state dict) to load")
    parser.add_argument("--onnx", required=True, metavar="OUT.onnx", help="file to write")
    parser.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="input height and width (default: the model's pretrained_cfg, 448 for the paper's)",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip running the exported file in onnxruntime against PyTorch",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = pathlib.Path(args.onnx)
    if out.is_dir():
        raise CommandError(f"--onnx {out} is a folder; give a file name such as model.onnx.")
    if args.img_size is not None and args.img_size < 1:
        raise CommandError(f"--img-size must be a positive number of pixels, got {args.img_size}.")
    try:
        check_opset(args.opset)
    except ValueError as error:
        raise CommandError(f"--opset: {error}") from None
    model = load_model(args.model, args.checkpoint).cpu()
    input_size = resolve_input_size(model, args.img_size)
    path = export_onnx(model, out, img_size=input_size[1:], opset_version=args.opset)
    shape = ", ".join(map(str, input_size))
    print(f"wrote {path}: images [batch, {shape}] -> logits [batch, {model.num_classes}]")
    if args.no_check:
        return 0
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime is not installed: the export was not checked (pip install onnxruntime).")
        return 0
    images = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(images).numpy()
    difference = float(abs(run_onnx(path, images) - expected).max())
    print(f"onnxruntime vs PyTorch on 2 random images: max |logit difference| = {difference:.2e}")
    if difference > 1e-3:
        raise CommandError(
            f"the exported graph disagrees with PyTorch (max |difference| {difference:.2e} > 1e-3); "
            f"try another --opset and report the problem."
        )
    return 0

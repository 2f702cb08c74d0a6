"""``msrn convert-official``: turn the authors' checkpoint into a ``local-dir:`` model folder."""

import argparse
import os

from ..convert import convert_official, save_converted
from ..graph import count_label_edges
from . import CommandError

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser(
        "convert-official",
        help="convert the authors' MSRN checkpoint (+ GloVe and adjacency files) into a model folder",
        description=(
            "Convert an authors' MSRN checkpoint into DIR/model.safetensors + DIR/config.json, with the "
            "label features, the label graph and the label names baked in, so that "
            "timm.create_model('local-dir:DIR') (after `import msrn`) rebuilds it. The checkpoint is read "
            "with torch.load(weights_only=True); the pickles through a loader that only rebuilds numpy "
            "arrays."
        ),
    )
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="authors' checkpoint (.pth.tar or a bare state dict)"
    )
    parser.add_argument(
        "--glove",
        required=True,
        metavar="FILE",
        help="label features: *_glove_word2vec.pkl, our .npz, or a GloVe text file",
    )
    parser.add_argument(
        "--adj", required=True, metavar="FILE", help="co-occurrence statistics: *_adj.pkl or our .npz"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.4,
        help="edge threshold t of the label graph (default: 0.4, the authors' value)",
    )
    parser.add_argument(
        "--names",
        default=None,
        metavar="voc|coco|nuswide|apparel|FILE",
        help="label names: voc, coco, nuswide, apparel, or a file with one name per line "
        "(default: from an .npz, else the authors' order for 20/80/81/11 labels)",
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="timm name of the trunk if it is not a torchvision ResNet (default: inferred)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files already in DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CommandError(f"--out {args.out} is a file; give a folder (it is created when missing).")
    outputs = ("model.safetensors", "config.json")
    existing = [name for name in outputs if os.path.exists(os.path.join(args.out, name))]
    if existing and not args.force:
        raise CommandError(f"{args.out} already holds {existing}; pick another --out or pass --force.")
    if not 0.0 < args.threshold <= 1.0:
        raise CommandError(f"--threshold must be in (0, 1], got {args.threshold}.")
    model = convert_official(
        args.checkpoint,
        args.glove,
        args.adj,
        threshold=args.threshold,
        names=args.names,
        backbone=args.backbone,
    )
    save_converted(model, args.out)
    num_params = sum(p.numel() for p in model.parameters())
    edges = count_label_edges(model.label_graph)
    print(
        f"converted {args.checkpoint}: {model.backbone.backbone_name}, {model.num_classes} labels, "
        f"{model.num_groups} groups, {num_params:,} parameters, {edges} graph edges at t={args.threshold}"
    )
    print(f"wrote {os.path.join(args.out, 'model.safetensors')} and {os.path.join(args.out, 'config.json')}")
    print(f"load with: import msrn, timm; timm.create_model('local-dir:{args.out}')")
    return 0

#!/usr/bin/env python
"""Train and evaluate MSRN on PASCAL VOC 2007 (or COCO, or a CSV data set).

    python examples/train_voc.py                          # generated VOC-format set, CPU profile
    python examples/train_voc.py --data ~/VOCdevkit       # the paper's recipe on VOC 2007
    torchrun --nproc_per_node=4 examples/train_voc.py --data ~/VOCdevkit
    python examples/train_voc.py --data ~/VOCdevkit --resume output/train_voc

Without --data a VOC-format data set is generated into a cache folder and a CPU-sized profile is
used; with --data the defaults are the paper's (see docs/training.md). Every default can be overridden.
"""
import argparse
import json
import logging
import sys
from typing import List, Optional

try:
    import msrn  # noqa: F401
except ImportError:  # running from a checkout without installing: use the repository's package
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msrn.engine import NonFiniteLossError, cpu_config, format_metrics_table, paper_config, train
from msrn.engine.trainer import PretrainedWeightsUnavailable


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", help="VOCdevkit folder (COCO root or train CSV with --dataset); "
                                  "omit to use the generated VOC-format set")
    d.add_argument("--dataset", choices=("voc", "coco", "csv"), help="format of --data (default: voc)")
    d.add_argument("--train-split", help="voc: trainval (default); coco: train")
    d.add_argument("--test-split", help="voc: test (default); coco: val; csv: path of the test CSV")
    d.add_argument("--cache-dir",
                   help="where the generated set is written (default: $MSRN_CACHE or ~/.cache/msrn)")
    d.add_argument("--synthetic-trainval", type=int, help="training images of the generated set")
    d.add_argument("--synthetic-test", type=int, help="test images of the generated set")
    d.add_argument("--synthetic-seed", type=int, help="seed of the generated set")
    d.add_argument("--skip-bad-images", action="store_true", default=None,
                   help="leave out unreadable images (and report how many) instead of stopping")
    d.add_argument("--workers", type=int, help="data-loading processes per training process")
    m = p.add_argument_group("model")
    m.add_argument("--model", help="msrn_resnet101 (paper), msrn_resnet50, msrn_resnet18 or msrn_custom")
    m.add_argument("--backbone", help="timm CNN for msrn_custom, e.g. convnext_tiny")
    m.add_argument("--pretrained", dest="pretrained", action="store_true", default=None,
                   help="start the backbone from ImageNet weights (paper default)")
    m.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random initialisation")
    m.add_argument("--variant", choices=("paper", "official"))
    m.add_argument("--embed-dim", type=int)
    m.add_argument("--hidden-dim", type=int)
    m.add_argument("--num-groups", type=int)
    m.add_argument("--gat-hidden-dim", type=int, help="output width of the first GAT (paper: 300)")
    m.add_argument("--label-feature-dim", type=int, help="width of learnable label features (without --glove)")
    m.add_argument("--backbone-kwargs", type=json.loads,
                   help='JSON arguments of the timm backbone, e.g. \'{"channels": [16, 32, 64, 128]}\'')
    m.add_argument("--glove", help="label features: a GloVe text file or a .npz with 'names' and 'glove'")
    m.add_argument("--graph-threshold", type=float, help="co-occurrence threshold of the label graph (0.4)")
    r = p.add_argument_group("recipe")
    r.add_argument("--image-size", type=int)
    r.add_argument("--batch-size", type=int, help="per process")
    r.add_argument("--eval-batch-size", type=int, help="per process (default: --batch-size)")
    r.add_argument("--crop-scales", type=float, nargs="+", help="multi-scale crop scales (paper: 1 .9 .8 .7 .6)")
    r.add_argument("--optimizer", choices=("sgd", "adamw"))
    r.add_argument("--lr", type=float)
    r.add_argument("--backbone-lr-scale", type=float, help="backbone lr = lr x this (paper: 0.1)")
    r.add_argument("--momentum", type=float)
    r.add_argument("--weight-decay", type=float)
    r.add_argument("--epochs", type=int)
    r.add_argument("--schedule", choices=("step", "cosine"))
    r.add_argument("--lr-steps", type=int, nargs="*",
                   help="epochs where the step schedule multiplies lr by --lr-gamma")
    r.add_argument("--lr-gamma", type=float)
    r.add_argument("--warmup-epochs", type=int)
    x = p.add_argument_group("execution")
    x.add_argument("--device", choices=("cpu", "cuda"))
    x.add_argument("--amp", choices=("none", "bf16", "fp16"), help="mixed precision (bf16 on CPU)")
    x.add_argument("--channels-last", action="store_true", default=None)
    x.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    x.add_argument("--threads", type=int, help="torch CPU threads per process (CPU profile: 1)")
    x.add_argument("--seed", type=int)
    x.add_argument("--output-dir", help="checkpoints and log.jsonl go here")
    x.add_argument("--resume", help="output folder (or train_state.pt) of a run to continue")
    x.add_argument("--stop-after-epoch", type=int,
                   help="end after this epoch as if interrupted (--resume continues)")
    x.add_argument("--max-steps-per-epoch", type=int, help="cap the steps of each epoch (smoke tests)")
    x.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bars")
    x.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "verbose"}
    for key in ("lr_steps", "crop_scales"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    config = paper_config(**overrides) if args.data else cpu_config(**overrides)

    def report(record):
        print(f"\nepoch {record['epoch']}/{config.epochs}  loss {record['train_loss']:.4f}  lr {record['lr']:.4g}  "
              f"{record['images_per_s']:.1f} img/s  test images {record['test_images']}")
        print(format_metrics_table(record))
        print(f"best mAP {record['best_mAP']:.2f}", flush=True)

    try:
        last = train(config, on_epoch_end=report)
    except NonFiniteLossError as error:
        print(f"train_voc: stopped: {error}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError, PretrainedWeightsUnavailable) as error:
        print(f"train_voc: error: {error}", file=sys.stderr)
        return 2
    if last:
        print(f"\nfinished: test mAP {last['mAP']:.2f} (best {last['best_mAP']:.2f}); "
              f"checkpoints in {config.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

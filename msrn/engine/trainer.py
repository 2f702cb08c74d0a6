"""The MSRN training run behind ``msrn train``: data, model, optimiser, loop, checkpoints.

:class:`TrainConfig` holds every setting; :func:`paper_config` and :func:`cpu_config` give the two
profiles (the paper's recipe, and a CPU-sized run on the generated VOC-format set). :func:`train`
runs single-process or under ``torchrun`` unchanged.

Output folder:

- ``last/`` / ``best/``: the model after the last epoch / at the best validation mAP (the best test
  mAP without a validation split), as :func:`msrn.save_pretrained` folders
  (``timm.create_model("local-dir:output/best")`` rebuilds it); with ``ema``, the averaged weights;
- ``train_state.pt``: what ``resume`` needs to continue the run as if it had not stopped;
- ``train_config.json``: the run's settings (what ``--resume`` starts from);
- ``log.jsonl``: one JSON line per epoch (loss, learning rate, speed, every metric);
- ``.train.lock``: held by the process writing the folder (:mod:`msrn.engine.run_folder`).

A folder holding a run is never reused silently: ``overwrite`` replaces the run, ``resume``
(:func:`resume_config`) continues it, anything else is refused.
"""

import dataclasses
import json
import logging
import math
import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .. import labels as label_sets
from .._io import remove_partial_writes
from ..data import (
    DATASET_KINDS,
    SeededAugmentation,
    check_image_header,
    create_dataset,
    eval_transform,
    generate_synthetic_voc,
    train_transform,
)
from ..data.transforms import PAPER_CROP_SCALES
from ..features import load_label_features
from ..graph import label_graph_from_targets
from ..loss import LOSSES, MSRNLoss
from ..metrics import average_precision
from ..models import create_model
from ..optim import param_groups
from .checkpoint import (
    load_training_state,
    rng_state,
    save_model,
    save_training_state,
    set_rng_state,
    write_checkpoint_info,
)
from .distributed import DistributedContext, EvalShardSampler, init_distributed
from .ema import WeightAverage
from .loop import AMP_MODES, NonFiniteLossError, check_amp, predict, train_one_epoch
from .memory import keep_freed_memory
from .resume import (
    TRAIN_CONFIG_NAME,
    check_resume_changes,
    config_fields,
    resume_folder,
    save_train_config,
    saved_train_config,
)
from .run_folder import (
    RunFolderError,
    RunFolderLock,
    append_log,
    clear_run,
    read_log,
    run_files_in,
    write_log,
)
from .schedule import LRSchedule
from .validation import epoch_metrics, hold_out_validation

__all__ = [
    "TrainConfig",
    "PretrainedWeightsUnavailable",
    "StoppedWithMainProcess",
    "paper_config",
    "cpu_config",
    "train",
    "resume_config",
    "build_datasets",
    "run_test_data",
    "default_cache_dir",
]

_logger = logging.getLogger(__name__)


class PretrainedWeightsUnavailable(RuntimeError):
    """The backbone's ImageNet weights could not be loaded (no network and no cached copy)."""


def default_cache_dir() -> pathlib.Path:
    """``$MSRN_CACHE`` or ``~/.cache/msrn``: where the generated data set is written."""
    return pathlib.Path(os.environ.get("MSRN_CACHE", pathlib.Path.home() / ".cache" / "msrn")).expanduser()


def _option(default: Any = None, help: str = "", group: str = "", **argparse_kwargs: Any) -> Any:
    """A :class:`TrainConfig` field and its command-line option: ``help``, the ``--help`` ``group``
    and other ``add_argument`` keywords (``choices``). A bool field gets ``--name`` when it has
    ``help`` and ``--no-name`` when it has ``negation`` (that flag's help)."""
    metadata = dict(help=help, group=group, **argparse_kwargs)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _data(default: Any = None, help: str = "", **kwargs: Any) -> Any:
    return _option(default, help, "data", **kwargs)


def _model(default: Any = None, help: str = "", **kwargs: Any) -> Any:
    return _option(default, help, "model", **kwargs)


def _recipe(default: Any = None, help: str = "", **kwargs: Any) -> Any:
    return _option(default, help, "recipe", **kwargs)


def _execution(default: Any = None, help: str = "", **kwargs: Any) -> Any:
    return _option(default, help, "execution", **kwargs)


@dataclass
class TrainConfig:
    """Every setting of a training run (defaults: the paper's recipe, docs/design.md section 6).

    Each field is also a command-line option of ``msrn train`` and ``examples/train_voc.py``
    (``--field-name``); its help text and ``--help`` group are the field's metadata.
    """

    data: str | None = _data(
        help="VOCdevkit folder (COCO root, NUS-WIDE folder, Apparel folder or train "
        "CSV with --dataset); omit to use the generated VOC-format set"
    )
    dataset: str = _data("voc", "format of --data (default: voc)", choices=DATASET_KINDS)
    train_split: str | None = _data(help="voc, apparel: trainval (default); coco, nuswide: train")
    test_split: str | None = _data(
        help="voc, apparel, nuswide: test (default); coco: val; csv: path of the test CSV"
    )
    cache_dir: str | None = _data(
        help="where the generated set is written (default: $MSRN_CACHE or ~/.cache/msrn)"
    )
    synthetic_trainval: int = _data(2000, "training images of the generated set")
    synthetic_test: int = _data(1000, "test images of the generated set")
    synthetic_seed: int = _data(0, "seed of the generated set")
    skip_bad_images: bool = _data(
        False, "leave out unreadable images (and report how many) instead of stopping"
    )
    skip_missing_images: bool = _data(
        False,
        "nuswide, apparel: leave out listed images that are not on "
        "disk (and report how many) instead of stopping",
    )
    workers: int = _data(4, "data-loading processes per training process")
    val_fraction: float | None = _data(
        help="hold out this fraction of the training images for validation (stratified over the labels): "
        "best/ is chosen on it and per-class thresholds are fitted on it (default: none; best/ is then "
        "chosen on the test split, the paper's protocol)"
    )
    val_split: str | None = _data(
        help="hold out the training images listed in this text file (one path, file name or image id a "
        "line) for validation, instead of --val-fraction",
        metavar="FILE",
    )
    val_seed: int = _data(0, "seed of the --val-fraction hold-out (independent of --seed)")
    model: str = _model(
        "msrn_resnet101", "msrn_resnet101 (paper), msrn_resnet50, msrn_resnet18 or msrn_custom"
    )
    backbone: str | None = _model(help="timm CNN for msrn_custom, e.g. convnext_tiny")
    backbone_kwargs: dict[str, Any] = _model(
        {}, "JSON arguments of the timm backbone, e.g. '{\"channels\": [16, 32, 64, 128]}'"
    )
    pretrained: bool = _model(
        True, "start the backbone from ImageNet weights (paper default)", negation="random initialisation"
    )
    backbone_weights: str | None = _model(
        help="local ImageNet weight file of the backbone instead of the "
        "Hub (.safetensors; .pth read with weights_only=True)"
    )
    # The authors' code (which produced the paper's tables): the paper text's compactness loss
    # (1e-3 x squared distances) starts ~1e4 times larger than the BCE and diverges (docs/training.md).
    variant: str = _model(
        "official",
        "official (the authors' code, default) or paper (the paper's text)",
        choices=("paper", "official"),
    )
    compactness_weight: float | None = _model(
        help="lambda of the compactness loss (default by variant: official 1e-4, paper 1e-3; the paper "
        "variant trains at lr 0.01 with 1e-6, docs/variants.md)"
    )
    embed_dim: int = _model(512, "width d of the embeddings and branches (paper: 512)")
    hidden_dim: int = _model(2048, "width of fc1 (paper: 2048)")
    gat_hidden_dim: int = _model(300, "output width of the first GAT (paper: 300)")
    label_feature_dim: int = _model(300, "width of learnable label features (without --glove)")
    num_groups: int = _model(4, "label groups m (paper: 4)")
    label_features: str = _model(
        "auto",
        "auto (default): --glove FILE when given, else the built-in GloVe vectors when a built-in "
        "label set (voc2007, coco2014, nuswide, apparel) has every label, else learnable; learnable: "
        "learnable features",
        choices=("auto", "learnable"),
    )
    glove: str | None = _model(help="label features: a GloVe text file or a .npz with 'names' and 'glove'")
    graph_threshold: float = _model(0.4, "co-occurrence threshold of the label graph (0.4)")
    image_size: int = _recipe(448, "training and test image size in pixels (paper: 448)")
    crop_scales: tuple[float, ...] = _recipe(
        PAPER_CROP_SCALES, "multi-scale crop scales (paper: 1 .9 .8 .7 .6)"
    )
    randaugment: str | None = _recipe(
        help="timm RandAugment after the crop and flip, e.g. rand-m9-mstd0.5-inc1 (default: none, "
        "as in the paper)",
        metavar="SPEC",
    )
    cutout: float = _recipe(
        0.0,
        "probability of erasing one random rectangle of each training image (default 0: off)",
        metavar="P",
    )
    batch_size: int = _recipe(8, "per process")
    accum_steps: int = _recipe(
        1,
        "accumulate the gradients of K batches per optimizer step (effective batch: K x --batch-size "
        "per process)",
        metavar="K",
    )
    eval_batch_size: int | None = _recipe(help="per process (default: --batch-size)")
    optimizer: str = _recipe("sgd", "sgd (paper) or adamw", choices=("sgd", "adamw"))
    lr: float = _recipe(0.01, "learning rate of the MSRN layers (paper: 0.01)")
    backbone_lr_scale: float = _recipe(0.1, "backbone lr = lr x this (paper: 0.1)")
    momentum: float = _recipe(0.9, "SGD momentum")
    weight_decay: float = _recipe(1e-4, "weight decay (paper: 1e-4)")
    loss: str = _recipe(
        "bce",
        "classification loss: bce (paper), asl (asymmetric loss) or focal; the compactness loss is "
        "added to each (docs/training.md)",
        choices=LOSSES,
    )
    asl_gamma_neg: float = _recipe(4.0, "--loss asl: focusing exponent of negatives (4)")
    asl_gamma_pos: float = _recipe(1.0, "--loss asl: focusing exponent of positives (1)")
    asl_clip: float = _recipe(0.05, "--loss asl: probability margin of negatives, in [0, 1) (0.05; 0: off)")
    focal_gamma: float = _recipe(2.0, "--loss focal: focusing exponent (2)")
    focal_alpha: float | None = _recipe(
        help="--loss focal: weight of positives in [0, 1], negatives get 1 - alpha (default: none)"
    )
    epochs: int = _recipe(90, "training epochs (paper: 90)")
    schedule: str = _recipe("step", "learning-rate schedule", choices=("step", "cosine"))
    lr_steps: tuple[int, ...] = _recipe(
        (30, 60), "epochs where the step schedule multiplies lr by --lr-gamma", nargs="*"
    )
    lr_gamma: float = _recipe(0.1, "factor of each step of the step schedule")
    warmup_epochs: int = _recipe(0, "epochs of linear learning-rate warm-up")
    ema: float | None = _recipe(
        help="keep an exponential moving average of the weights with this decay (e.g. 0.9997), updated "
        "after each optimizer step; evaluation, best/ and last/ use it (default: off)",
        metavar="DECAY",
    )
    ema_warmup: bool = _recipe(
        True, negation="--ema without warm-up: the constant decay from the second update"
    )
    device: str | None = _execution(
        help="cpu or cuda (default: cuda when available)", choices=("cpu", "cuda")
    )
    amp: str = _execution("none", "mixed precision (bf16 on CPU)", choices=AMP_MODES)
    channels_last: bool = _execution(False, "channels-last memory format")
    compile: bool = _execution(False, "torch.compile the model")
    threads: int | None = _execution(help="torch CPU threads per process (CPU profile: 1)")
    keep_freed_memory: bool = _execution(
        False,
        "keep freed memory in the process (fewer page faults per CPU step, more resident memory; "
        "msrn.engine.keep_freed_memory)",
    )
    seed: int = _execution(0, "seed of the weights' init, the data order and the augmentation")
    output_dir: str = _execution("output/train_voc", "checkpoints and log.jsonl go here")
    resume: str | None = _execution(
        help="continue the run in this output folder, with its saved settings "
        "(see docs/training.md for what may change)",
        metavar="DIR",
    )
    overwrite: bool = _execution(
        False, "replace the run in --output-dir (its checkpoints and log) instead of refusing to touch it"
    )
    stop_after_epoch: int | None = _execution(
        help="end after this epoch as if interrupted (--resume continues)"
    )
    max_steps_per_epoch: int | None = _execution(help="cap the steps of each epoch (smoke tests)")
    progress: bool = _execution(True, negation="no progress bars")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def paper_config(**overrides: Any) -> TrainConfig:
    """The paper's recipe: ResNet-101 from ImageNet, 448 px, batch 8, SGD, 90 epochs, step decay."""
    return TrainConfig(**overrides)


# A ResNet-18 at a quarter of its width: about 2 M parameters, ~100 images/s of training at 96 px on
# two CPU cores, enough for the generated set, where it reaches a test mAP above 90 from scratch.
_CPU_BACKBONE_KWARGS = {"channels": [16, 32, 64, 128], "stem_width": 16}


def cpu_config(**overrides: Any) -> TrainConfig:
    """A CPU-sized run for the generated VOC-format set (no pretrained weights, small images)."""
    settings = dict(
        model="msrn_resnet18",
        backbone_kwargs=dict(_CPU_BACKBONE_KWARGS),
        pretrained=False,
        embed_dim=64,
        hidden_dim=256,
        gat_hidden_dim=64,
        label_feature_dim=64,
        image_size=64,
        crop_scales=(1.0, 0.9, 0.8),
        batch_size=16,
        workers=1,
        optimizer="adamw",
        lr=2e-3,
        backbone_lr_scale=1.0,
        weight_decay=1e-4,
        epochs=14,
        schedule="cosine",
        lr_steps=(),
        warmup_epochs=1,
        device="cpu",
        output_dir="output/train_voc_cpu",
        # One compute thread plus one data-loading process fills two cores; with more threads
        # OpenMP spin-waits badly whenever the cores are shared with other work.
        threads=1,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


# ----------------------------------------------------------------------------------------- data
def build_datasets(config: TrainConfig, context: DistributedContext | None = None):
    """``(train_set, test_set)`` for ``config`` (generating the synthetic set when ``data`` is None)."""
    context = context or DistributedContext()
    if config.dataset not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {DATASET_KINDS}, got {config.dataset!r}.")
    data = config.data if config.data is not None else _synthetic_voc(config, context)
    options = dict(skip_bad_images=config.skip_bad_images, skip_missing_images=config.skip_missing_images)
    augment = _train_augmentation(config)
    train_set = create_dataset(
        config.dataset, data, config.train_split, is_training=True, transform=augment, **options
    )
    test_transform = eval_transform(config.image_size)
    if config.dataset == "csv":
        if not config.test_split:
            raise ValueError("CSV training needs the test CSV file: pass --test-split PATH.")
        test_set = create_dataset(
            "csv", config.test_split, classes=train_set.classes, transform=test_transform, **options
        )
    else:
        test_set = create_dataset(
            config.dataset, data, config.test_split, transform=test_transform, **options
        )
    if train_set.classes != test_set.classes:
        raise ValueError(
            f"The train and test sets have different classes: {train_set.classes} vs {test_set.classes}."
        )
    return train_set, test_set


def run_test_data(run_folder: "os.PathLike[str] | str") -> dict[str, Any]:
    """The test split a training run was scored on, as :func:`msrn.engine.evaluate_checkpoint` takes
    it: ``{"data", "dataset", "split", "skip_bad_images", "skip_missing_images"}``, read from the run's
    ``train_config.json`` (the generated set is written again if its cache folder is gone).

    Raises:
        FileNotFoundError: ``run_folder`` holds no ``train_config.json``.
    """
    folder = pathlib.Path(run_folder)
    if not (folder / TRAIN_CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{folder} holds no {TRAIN_CONFIG_NAME}: it is not the folder of a training run."
        )
    config = TrainConfig(**config_fields(TrainConfig, saved_train_config(folder)))
    if config.dataset == "csv":
        data, split = config.test_split, None
    else:
        data = config.data if config.data is not None else _synthetic_voc(config, DistributedContext())
        split = config.test_split
    return {
        "data": data,
        "dataset": config.dataset,
        "split": split,
        "skip_bad_images": config.skip_bad_images,
        "skip_missing_images": config.skip_missing_images,
    }


def _train_augmentation(config: TrainConfig):
    return train_transform(
        config.image_size, scales=config.crop_scales, randaugment=config.randaugment, cutout=config.cutout
    )


def _synthetic_voc(config: TrainConfig, context: DistributedContext) -> str:
    """The generated VOC-format set of ``config`` (written once, by the main process)."""
    if config.dataset != "voc":
        raise ValueError("Without --data only the generated VOC-format set is available; pass --data.")
    cache = pathlib.Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    sizes = (config.synthetic_trainval, config.synthetic_test, config.synthetic_seed)
    folder = cache / "synthetic-voc-v2-{}-{}-s{}".format(*sizes)
    if context.is_main:  # one process writes; the others wait and then reuse it
        generate_synthetic_voc(folder, *sizes)
    context.barrier()
    return str(generate_synthetic_voc(folder, *sizes))


def _label_features(config: TrainConfig, classes: Sequence[str]) -> tuple[torch.Tensor | None, str]:
    """``(fixed features or None for learnable ones, what they are)`` for ``config.label_features``."""
    if config.label_features not in ("auto", "learnable"):
        raise ValueError(f"label_features must be 'auto' or 'learnable', got {config.label_features!r}.")
    if config.label_features == "learnable":
        if config.glove is not None:
            raise ValueError("--glove gives fixed label features; drop it or --label-features learnable.")
        return None, "learnable (--label-features learnable)"
    if config.glove is not None:
        features = torch.as_tensor(load_label_features(config.glove, list(classes)), dtype=torch.float32)
        return features, f"GloVe vectors from {config.glove}"
    label_set = label_sets.find(classes)
    if label_set is None:
        return None, (
            "learnable: no built-in label set has every label name; --glove FILE gives GloVe vectors"
        )
    return label_set.features, f"the GloVe vectors of the built-in {label_set.name!r} label set"


# ---------------------------------------------------------------------------------------- model
def _model_config(config: TrainConfig, classes: Sequence[str], fixed_features: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        num_classes=len(classes),
        label_names=list(classes),
        variant=config.variant,
        embed_dim=config.embed_dim,
        hidden_dim=config.hidden_dim,
        gat_hidden_dim=config.gat_hidden_dim,
        num_groups=config.num_groups,
    )
    if not fixed_features:
        kwargs["label_feature_dim"] = config.label_feature_dim
    if config.compactness_weight is not None:
        kwargs["compactness_weight"] = config.compactness_weight
    if config.backbone:
        kwargs["backbone"] = config.backbone
    if config.backbone_kwargs:
        kwargs["backbone_kwargs"] = dict(config.backbone_kwargs)
    return {"architecture": config.model, "fixed_label_features": fixed_features, "kwargs": kwargs}


def _create_model(
    config: TrainConfig, model_config: dict[str, Any], label_features, label_graph
) -> nn.Module:
    kwargs = dict(model_config["kwargs"], label_graph=label_graph)
    if label_features is not None:
        kwargs["label_features"] = label_features
    if config.backbone_weights:
        if not config.pretrained:
            raise ValueError("--backbone-weights are the backbone's ImageNet weights; drop --no-pretrained.")
        kwargs["pretrained_cfg_overlay"] = dict(file=config.backbone_weights)  # timm's idiom for a local file
    try:
        return create_model(config.model, pretrained=config.pretrained, **kwargs)
    except (OSError, RuntimeError, ConnectionError) as error:
        if not config.pretrained or config.backbone_weights:  # a local file's error names the file
            raise
        raise PretrainedWeightsUnavailable(
            f"Could not load the ImageNet weights of the backbone of {config.model} ({type(error).__name__}: "
            f"{error}). Connect to the internet (or fill the Hugging Face cache), give a local weight file "
            f"with --backbone-weights PATH, or pass --no-pretrained to train from random initialisation."
        ) from error


def _build_criterion(config: TrainConfig, model: nn.Module) -> MSRNLoss:
    return MSRNLoss(
        model,
        loss=config.loss,
        asl_gamma_neg=config.asl_gamma_neg,
        asl_gamma_pos=config.asl_gamma_pos,
        asl_clip=config.asl_clip,
        focal_gamma=config.focal_gamma,
        focal_alpha=config.focal_alpha,
    )


def _build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(
        model, lr=config.lr, backbone_lr_scale=config.backbone_lr_scale, weight_decay=config.weight_decay
    )
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}.")


def _check_config(config: TrainConfig) -> None:
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}.")
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {config.batch_size}.")
    if config.accum_steps < 1:
        raise ValueError(
            f"accum_steps must be >= 1 (batches whose gradients make one optimizer step), "
            f"got {config.accum_steps}."
        )
    if config.lr <= 0:
        raise ValueError(f"lr must be > 0, got {config.lr}.")
    _train_augmentation(config)  # a bad --randaugment, --cutout or --crop-scales, before any work
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"threads must be >= 1 (torch CPU threads per process), got {config.threads}.")
    if config.workers < 0:
        raise ValueError(
            f"workers must be >= 0 (0 loads data in the training process), got {config.workers}."
        )
    if config.val_fraction is not None and not 0.0 < config.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {config.val_fraction}.")
    if config.val_fraction is not None and config.val_split is not None:
        raise ValueError("Give either --val-fraction or --val-split, not both.")
    if config.ema is not None and not 0.0 < config.ema < 1.0:
        raise ValueError(
            f"ema (the decay) must be between 0 and 1 (exclusive, e.g. 0.9997), got {config.ema}."
        )
    check_amp(config.amp)
    _build_criterion(config, None)  # refuses bad loss parameters before any data is read


# ------------------------------------------------------------------------------------------ run
def resume_config(resume: "os.PathLike[str] | str", **changes: Any) -> TrainConfig:
    """The configuration that continues the run in folder ``resume``: its saved settings, with
    ``changes`` applied where a run may change (:data:`msrn.engine.resume.CHANGEABLE_ON_RESUME`).

    Raises:
        FileNotFoundError: ``resume`` holds no run.
        ValueError: ``changes`` alter a setting that cannot change mid-run (the message says which
            and why), or name another output folder.
    """
    folder = resume_folder(str(resume))
    if not (folder / "train_state.pt").is_file():
        raise FileNotFoundError(
            f"--resume {resume}: no train_state.pt there. --resume takes the output folder of a run that "
            f"finished at least one epoch."
        )
    output_dir = changes.pop("output_dir", None)
    if output_dir is not None and pathlib.Path(output_dir).resolve() != folder.resolve():
        raise ValueError(f"--resume {resume} continues the run in {folder}; drop --output-dir {output_dir}.")
    if changes.pop("overwrite", False):
        raise ValueError(
            "--overwrite and --resume contradict each other: --resume continues the run, "
            "--overwrite starts a new one in its place."
        )
    saved = saved_train_config(folder)
    check_resume_changes(TrainConfig, saved, changes, folder)
    values = {**config_fields(TrainConfig, saved), **changes}
    return TrainConfig(**{**values, "output_dir": str(folder), "resume": str(folder)})


def _loader(
    dataset,
    batch_size: int,
    sampler,
    workers: int,
    generator: torch.Generator | None = None,
    pin: bool = False,
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        drop_last=False,
        generator=generator,
    )


class StoppedWithMainProcess(RuntimeError):
    """Raised on the other processes of a ``torchrun`` job when rank 0 refused to start (its error,
    which rank 0 reports, is in the message)."""


def train(
    config: TrainConfig, on_epoch_end: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run the training described by ``config``; returns the last epoch's record on rank 0 (an empty
    dict on the other processes of a ``torchrun`` job, which print and write nothing).

    ``on_epoch_end(record)`` is called on rank 0 after each epoch with the record that is also
    appended to ``log.jsonl`` (epoch, lr, loss, images/s, every metric, best mAP).

    The output folder must not hold a run, unless ``config.overwrite`` (the run is deleted) or
    ``config.resume`` names it (the run goes on; :func:`resume_config` builds such a config).

    Raises:
        RunFolderError: the output folder holds another run, or another process is writing it.
        NonFiniteLossError: the loss became NaN/inf; the checkpoints of the last finished epoch stay,
            and the message says how to go on.
    """
    context = init_distributed(config.device)
    package_logger, package_level = logging.getLogger("msrn"), logging.getLogger("msrn").level
    if not context.is_main:  # rank 0 alone reports
        package_logger.setLevel(logging.ERROR)
    lock = None
    try:
        lock = _agree(context, lambda: _claim_output(config))
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        if config.keep_freed_memory:
            keep_freed_memory()
        return _train(config, context, on_epoch_end)
    finally:
        if lock is not None:
            lock.release()
        package_logger.setLevel(package_level)
        if context.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _agree(context: DistributedContext, check: Callable[[], Any], share: bool = False) -> Any:
    """Run ``check`` on rank 0; when it raises, every process stops (rank 0 with the error itself,
    the others with :class:`StoppedWithMainProcess`). Returns ``check``'s result on rank 0, and on
    every process when ``share`` (the result must then be picklable)."""
    result, failure = None, None
    if context.is_main:
        try:
            result = check()
        except Exception as error:
            failure = error
    message = None if failure is None else f"{type(failure).__name__}: {failure}"
    message, shared = context.broadcast_object((message, result if share else None))
    if failure is not None:
        raise failure
    if message is not None:
        raise StoppedWithMainProcess(message)
    return result if context.is_main else shared


def _claim_output(config: TrainConfig) -> RunFolderLock:
    """Check ``config`` and lock its output folder for this run (rank 0). A folder that holds a run is
    refused unless the run is resumed or overwritten; what a killed write left is cleaned up."""
    _check_config(config)
    output = pathlib.Path(config.output_dir)
    if config.resume and resume_folder(config.resume).resolve() != output.resolve():
        raise ValueError(
            f"resume={config.resume} continues the run in that folder, but output_dir is "
            f"{config.output_dir}; build the config with msrn.engine.resume_config."
        )
    if config.resume and config.overwrite:
        raise ValueError("--overwrite and --resume contradict each other.")
    lock = RunFolderLock(output).acquire()
    try:
        cleaned = remove_partial_writes(output)
        if cleaned:
            _logger.warning("Removed what a killed write left in %s: %s", output, ", ".join(cleaned))
        used = run_files_in(output)
        if config.resume and not (output / "train_state.pt").is_file():
            raise FileNotFoundError(
                f"--resume {config.resume}: no train_state.pt there (the run did not "
                f"finish an epoch); start it again with --overwrite."
            )
        if used and not config.resume:
            if not config.overwrite:
                raise RunFolderError(
                    f"{output} already holds a training run ({', '.join(used)}): continue it with "
                    f"--resume {output}, or replace it with --overwrite."
                )
            _logger.warning("--overwrite: deleting the run in %s (%s)", output, ", ".join(used))
            clear_run(output)
    except BaseException:
        lock.release()
        raise
    return lock


@dataclass
class _Run:
    """What the steps of one training run share."""

    config: TrainConfig
    context: DistributedContext
    output: pathlib.Path
    train_set: Any  # the images trained on (without the validation split)
    val_set: Any | None
    test_set: Any
    model_config: dict[str, Any]
    model: nn.Module  # the MSRN itself: evaluated and saved
    train_model: nn.Module  # the model as trained: under DDP and/or torch.compile when asked
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]  # of the optimiser's groups, from config.lr; the schedule multiplies them
    schedule: LRSchedule
    scaler: torch.amp.GradScaler | None
    train_samples: SeededAugmentation
    train_sampler: torch.utils.data.DistributedSampler
    test_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader | None
    ema: WeightAverage | None
    start_epoch: int = 0
    best_map: float = -math.inf  # what best/ is chosen on: its validation mAP, else its test mAP
    best_info: dict[str, Any] = field(default_factory=dict)  # best/checkpoint.json
    unevaluated: dict[str, Any] | None = None  # train stats of a saved epoch whose evaluation was cut off


def _train(config: TrainConfig, context: DistributedContext, on_epoch_end) -> dict[str, Any]:
    run = _prepare(config, context)
    record: dict[str, Any] = {}
    predictions = None
    if run.unevaluated is not None:  # the last run was stopped while evaluating its last epoch
        record, predictions = _evaluate_epoch(run, run.start_epoch, run.unevaluated, on_epoch_end)
    last_epoch = (
        config.epochs if config.stop_after_epoch is None else min(config.epochs, config.stop_after_epoch)
    )
    for epoch in range(run.start_epoch, last_epoch):
        stats = _train_epoch(run, epoch)
        rng_states = _gather_rng_states(context)
        if context.is_main:  # saved before the evaluation, which may fail on bad test data
            _save_epoch(run, epoch + 1, stats, rng_states)
        context.barrier()
        record, predictions = _evaluate_epoch(run, epoch + 1, stats, on_epoch_end)
    if not context.is_main:
        return {}
    if record:
        class_ap = average_precision(*predictions).tolist()
        record["class_ap"] = dict(zip(run.train_set.classes, class_ap, strict=True))
    return record


def _prepare(config: TrainConfig, context: DistributedContext) -> _Run:
    """Data, model, optimisation and (with ``resume``) the state of an earlier run."""
    check_amp(config.amp, context.device)
    output = pathlib.Path(config.output_dir)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    train_set, test_set = build_datasets(config, context)
    # Rank 0 checks the split first (a bad --val-split file is reported once); it is deterministic.
    parts = _agree(context, lambda: _hold_out_validation(config, train_set))
    train_set, val_set = parts if context.is_main else _hold_out_validation(config, train_set)
    _agree(context, lambda: _check_eval_sets(test_set, val_set, config.skip_bad_images))
    model, model_config = _build_model(config, context, train_set, test_set, val_set)
    ema = WeightAverage(model, config.ema, warmup=config.ema_warmup) if config.ema is not None else None
    criterion = _build_criterion(config, model)
    optimizer = _build_optimizer(config, model)
    schedule = LRSchedule(
        config.epochs, config.schedule, config.lr_steps, config.lr_gamma, config.warmup_epochs
    )
    train_samples = SeededAugmentation(train_set, config.seed)
    train_sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=config.seed
    )
    # The evaluation loader draws its worker seeds from a generator of its own, so that evaluating
    # leaves the training's random streams untouched (and can be redone on resume).
    test_loader, val_loader = (
        _loader(
            dataset,
            config.eval_batch_size or config.batch_size,
            EvalShardSampler(len(dataset), context.rank, context.world_size),
            config.workers,
            torch.Generator().manual_seed(config.seed),
            pin=context.device.type == "cuda",
        )
        if dataset is not None
        else None
        for dataset in (test_set, val_set)
    )
    run = _Run(
        config=config,
        context=context,
        output=output,
        train_set=train_set,
        val_set=val_set,
        test_set=test_set,
        model_config=model_config,
        model=model,
        train_model=model,
        criterion=criterion,
        optimizer=optimizer,
        base_lrs=[group["lr"] for group in optimizer.param_groups],
        schedule=schedule,
        scaler=torch.amp.GradScaler("cuda") if config.amp == "fp16" else None,
        train_samples=train_samples,
        train_sampler=train_sampler,
        test_loader=test_loader,
        val_loader=val_loader,
        ema=ema,
    )
    if config.resume:
        _resume(run)
    elif context.is_main:
        save_train_config(output, config)
    run.train_model = _wrap_for_training(model, config, context)
    return run


def _hold_out_validation(config: TrainConfig, train_set) -> tuple[Any, Any]:
    """``(images to train on, validation split or None)``; says what ``best/`` is chosen on."""
    train_part, val_part = hold_out_validation(
        train_set, config.val_fraction, config.val_split, config.val_seed, eval_transform(config.image_size)
    )
    if val_part is None:
        _logger.info(
            "No validation split (--val-fraction, --val-split): best/ is chosen on the test split, as in "
            "the paper's protocol, so its test figures are optimistic."
        )
    else:
        source = config.val_split or f"{config.val_fraction:g} of the training images, seed {config.val_seed}"
        _logger.info(
            "Validation split: %d images (%s), not trained on; best/ is chosen on its mAP and per-class "
            "thresholds are fitted on it",
            len(val_part),
            source,
        )
    return train_part, val_part


def _check_eval_sets(test_set, val_set, skip_bad_images: bool) -> None:
    """Before the first epoch: read the header of every test and validation image (a broken file is
    reported in seconds, not after an epoch), and name the classes without a positive label."""
    for dataset, name, advice in ((test_set, "test", "--test-split"), (val_set, "validation", "the split")):
        if dataset is None:
            continue
        if not skip_bad_images:  # with skip_bad_images, the data set has decoded every image already
            for path in dataset.image_paths:
                check_image_header(path)
        positives = ((np.asarray(dataset.targets) > 0) & ~np.asarray(dataset.difficult)).sum(axis=0)
        missing = [label for label, count in zip(dataset.classes, positives, strict=True) if count == 0]
        if len(missing) == len(dataset.classes):
            raise ValueError(
                f"The {name} set has no positive label (every class is absent, difficult or unknown): "
                f"there is nothing to measure. Check {advice}."
            )
        if missing:
            _logger.warning(
                "%d class(es) have no positive %s label and are left out of the %s mAP%s: %s",
                len(missing),
                name,
                name,
                " (their thresholds stay 0.5)" if name == "validation" else "",
                ", ".join(missing),
            )


def _build_model(config: TrainConfig, context: DistributedContext, train_set, test_set, val_set=None):
    """The model for the training labels (their graph, and GloVe features when given), on its device."""
    classes = train_set.classes
    label_graph = label_graph_from_targets(train_set.targets, config.graph_threshold, train_set.unknown)
    label_features, features_source = _label_features(config, classes)
    model_config = _model_config(config, classes, fixed_features=label_features is not None)
    model = _create_model(config, model_config, label_features, label_graph).to(context.device)
    # Saved with the model, so that evaluation resizes test images to the size it was trained at.
    size = (3, config.image_size, config.image_size)
    model.pretrained_cfg = {
        **getattr(model, "pretrained_cfg", {}),
        "input_size": size,
        "test_input_size": size,
    }
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    _logger.info(
        "%s: %d labels, %.2fM parameters, %d train / %s%d test images",
        config.model,
        len(classes),
        sum(p.numel() for p in model.parameters()) / 1e6,
        len(train_set),
        f"{len(val_set)} validation / " if val_set is not None else "",
        len(test_set),
    )
    for name, data_set in (("train", train_set), ("validation", val_set), ("test", test_set)):
        if data_set is None:
            continue
        unknown = np.asarray(data_set.unknown)
        if unknown.any():
            _logger.info(
                "partial labels: %d unknown label entries in %d %s images (left out of the %s)",
                int(unknown.sum()),
                int(unknown.any(axis=1).sum()),
                name,
                "loss and the label graph" if name == "train" else "metrics",
            )
    _logger.log(
        logging.WARNING if label_features is None else logging.INFO,
        "label features: %s; label graph: %d edges at t=%g from the training labels",
        features_source,
        int(label_graph.sum()) - len(classes),
        config.graph_threshold,
    )
    return model, model_config


def _resume(run: _Run) -> None:
    """Load the model, optimiser, schedule, scaler, epoch, best mAP and RNG state of ``config.resume``;
    apply (and log) the settings that changed."""
    config, context = run.config, run.context
    state = load_training_state(config.resume)
    saved = json.loads(state["train_config"])
    changes = check_resume_changes(TrainConfig, saved, config.to_dict(), run.output)
    if state["model_config"] != json.dumps(run.model_config, sort_keys=True):
        raise ValueError(
            f"--resume {config.resume}: that run trained a different model or label set "
            f"({state['model_config']}); resume with the same settings."
        )
    run.model.load_state_dict(state["model"])
    if run.ema is not None:
        if "ema" not in state:
            raise ValueError(
                f"--resume {config.resume}: train_state.pt holds no EMA weights; resume without --ema."
            )
        run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch = int(state["epoch"])
    saved_schedule = state.get("lr_schedule", {})
    run.schedule = LRSchedule(
        saved_schedule.get("epochs", saved["epochs"]),
        config.schedule,
        config.lr_steps,
        config.lr_gamma,
        config.warmup_epochs,
        saved_schedule.get("anchor"),
    )
    if run.schedule.epochs != config.epochs:
        if config.epochs <= run.start_epoch:
            raise ValueError(
                f"--resume {config.resume}: the run has trained {run.start_epoch} epochs; "
                f"--epochs must be more than that, got {config.epochs}."
            )
        run.schedule = run.schedule.lengthened(config.epochs, run.start_epoch)
    elif run.start_epoch >= config.epochs and _evaluated(run):
        raise ValueError(
            f"--resume {config.resume}: the run has finished its {config.epochs} epochs; "
            f"pass --epochs N (more than {config.epochs}) to train it longer."
        )
    set_rng_state(state["rng"][context.rank] if context.rank < len(state["rng"]) else state["rng"][0])
    run.best_info, run.unevaluated = _agree(context, lambda: _evaluation_progress(run, state), share=True)
    run.best_map = run.best_info.get(_selection_key(run)) or -math.inf
    if context.is_main:
        save_train_config(run.output, config)
    _logger.info("Resumed %s after epoch %d (best mAP %.2f)", run.output, run.start_epoch, run.best_map)
    if changes:  # shown by default: the run now differs from what its log so far describes
        _logger.warning(
            "Resumed %s with changed settings, applied from epoch %d: %s",
            run.output,
            run.start_epoch + 1,
            ", ".join(changes),
        )


def _evaluated(run: _Run) -> bool:
    return any(record.get("epoch") == run.start_epoch for record in read_log(run.output))


def _evaluation_progress(run: _Run, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(best/checkpoint.json, train stats of the saved epoch when its evaluation is still to do)``
    (rank 0). The log keeps the records up to the saved epoch, once each."""
    best_file = run.output / "best" / "checkpoint.json"
    best_info = json.loads(best_file.read_text()) if best_file.is_file() else {}
    records = {
        record["epoch"]: record
        for record in read_log(run.output)
        if isinstance(record.get("epoch"), int) and record["epoch"] <= run.start_epoch
    }
    write_log(run.output, [records[epoch] for epoch in sorted(records)])
    return best_info, (None if run.start_epoch in records else state.get("train_stats", {}))


def _wrap_for_training(model: nn.Module, config: TrainConfig, context: DistributedContext) -> nn.Module:
    if context.distributed:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if config.compile:
        model = torch.compile(model)
    return model


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """Train epoch ``epoch`` (0-based); returns its lr and training statistics."""
    config, context = run.config, run.context
    multiplier = run.schedule(epoch)
    for group, base_lr in zip(run.optimizer.param_groups, run.base_lrs, strict=True):
        group["lr"] = base_lr * multiplier
    run.train_sampler.set_epoch(epoch)
    run.train_samples.set_epoch(epoch)
    # The sampler's order depends on (seed, epoch, rank) and each sample's augmentation on (seed,
    # epoch, index): neither depends on --workers, and --resume continues exactly.
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch * 1_009 + context.rank)
    train_loader = _loader(
        run.train_samples,
        config.batch_size,
        run.train_sampler,
        config.workers,
        generator,
        pin=context.device.type == "cuda",
    )
    lr = run.optimizer.param_groups[0]["lr"]
    try:
        stats = train_one_epoch(
            run.train_model,
            run.criterion,
            train_loader,
            run.optimizer,
            context,
            epoch + 1,
            amp=config.amp,
            scaler=run.scaler,
            channels_last=config.channels_last,
            max_steps=config.max_steps_per_epoch,
            progress=config.progress,
            accum_steps=config.accum_steps,
            on_optimizer_step=(lambda: run.ema.update(run.model)) if run.ema is not None else None,
        )
    except NonFiniteLossError as error:
        also = " (or with --amp none)" if config.amp != "none" else ""
        if epoch:
            advice = (
                f"The checkpoints of epoch {epoch} stay in {run.output}; continue with a lower "
                f"learning rate: --resume {run.output} --lr {config.lr / 10:g}{also}"
            )
        else:
            advice = (
                f"No epoch had finished; start again with a lower learning rate, e.g. "
                f"--lr {config.lr / 10:g}{also}"
            )
        raise NonFiniteLossError(f"{error} {advice}.") from None
    context.broadcast_buffers(run.model)
    if run.ema is not None:  # each process averages its own BatchNorm statistics: keep rank 0's
        context.broadcast_buffers(run.ema.module)
    return {
        "lr": lr,
        "train_loss": stats["loss"],
        "images_per_s": stats["images_per_s"],
        "train_time_s": stats["time_s"],
    }


def _evaluate_epoch(run: _Run, epoch: int, stats: dict[str, Any], on_epoch_end) -> tuple[dict[str, Any], Any]:
    """Score the test set after ``epoch`` (1-based); on rank 0 write ``best/`` when it is the best
    so far and the epoch's line of ``log.jsonl``. Returns the record and the predictions."""
    config, context = run.config, run.context
    model = _evaluated_model(run)

    def scores_of(loader, dataset):
        return predict(
            model,
            loader,
            context,
            len(dataset),
            amp=config.amp,
            channels_last=config.channels_last,
            progress=config.progress,
        )

    val_predictions = scores_of(run.val_loader, run.val_set) if run.val_loader is not None else None
    predictions = scores_of(run.test_loader, run.test_set)
    metrics, thresholds = epoch_metrics(predictions, val_predictions)
    info = _checkpoint_info(run, epoch, metrics)
    is_best = metrics[_selection_key(run)] > run.best_map
    if is_best:
        run.best_map, run.best_info = metrics[_selection_key(run)], info
    record = {"epoch": epoch, **stats, "test_images": int(len(predictions[0]))}
    if val_predictions is not None:
        record["val_images"] = int(len(val_predictions[0]))
    record.update(metrics)
    record.update(best_mAP=run.best_info.get("mAP"), best_epoch=run.best_info.get("epoch"))
    if val_predictions is not None:
        record["best_val_mAP"] = run.best_map
    if context.is_main:
        write_checkpoint_info(run.output / "last", info)  # last/ was saved before its mAP was known
        if is_best:
            save_model(
                model,
                run.output / "best",
                info,
                label_thresholds=thresholds.tolist() if thresholds is not None else None,
            )
        append_log(run.output, record)
        if on_epoch_end is not None:
            on_epoch_end(record)
    context.barrier()
    return record, predictions


def _checkpoint_info(run: _Run, epoch: int, metrics: dict[str, float] | None) -> dict[str, Any]:
    """``checkpoint.json``: the epoch, the test mAP (and validation mAP), the image size."""
    info = {"epoch": epoch, "mAP": metrics["mAP"] if metrics else None}
    if run.val_set is not None:
        info["val_mAP"] = metrics["val_mAP"] if metrics else None
    info["image_size"] = run.config.image_size
    if run.ema is not None:
        info["ema"] = run.config.ema
    return info


def _selection_key(run: _Run) -> str:
    """The metric ``best/`` is chosen on: the validation mAP, else (the paper's protocol) the test mAP."""
    return "val_mAP" if run.val_set is not None else "mAP"


def _evaluated_model(run: _Run) -> nn.Module:
    """The weights that are evaluated and saved in ``last/`` and ``best/``: the EMA when on."""
    return run.ema.module if run.ema is not None else run.model


def _gather_rng_states(context: DistributedContext) -> list[Any]:
    """RNG states of every process, so that each rank resumes its own stream (a collective call)."""
    if not context.distributed:
        return [rng_state()]
    states: list[Any] = [None] * context.world_size
    torch.distributed.all_gather_object(states, rng_state())
    return states


def _save_epoch(run: _Run, epoch: int, stats: dict[str, Any], rng_states: list[Any]) -> None:
    """``last/`` (its test mAP is not known yet) and ``train_state.pt`` after training ``epoch``."""
    save_model(_evaluated_model(run), run.output / "last", _checkpoint_info(run, epoch, None))
    save_training_state(
        run.output / "train_state.pt",
        {
            "epoch": epoch,
            "best_map": run.best_map,
            "model": run.model.state_dict(),  # the raw weights, also with an EMA
            **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
            "optimizer": run.optimizer.state_dict(),
            "lr_schedule": run.schedule.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else {},
            "rng": rng_states,
            "model_config": json.dumps(run.model_config, sort_keys=True),
            "train_config": json.dumps(run.config.to_dict()),
            "train_stats": stats,
        },
    )

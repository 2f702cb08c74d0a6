"""The MSRN training run behind ``examples/train_voc.py``: data, model, optimiser, loop, checkpoints.

:class:`TrainConfig` holds every setting; :func:`paper_config` and :func:`cpu_config` give the two
profiles (the paper's recipe, and a CPU-sized run on the generated VOC-format set). :func:`train`
runs single-process or under ``torchrun`` unchanged.

Output folder:

- ``last/`` / ``best/``: the model after the last epoch / at the best test mAP, as
  :func:`msrn.save_pretrained` folders (``timm.create_model("local-dir:output/best")`` rebuilds it);
- ``train_state.pt``: what ``resume`` needs to continue the run as if it had not stopped;
- ``log.jsonl``: one JSON line per epoch (loss, learning rate, speed, every metric).
"""
import dataclasses
import json
import logging
import math
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from .. import create_model, param_groups
from ..data import (COCODataset, CSVDataset, VOCDataset, eval_transform, generate_synthetic_voc,
                    train_transform)
from ..data.transforms import PAPER_CROP_SCALES
from ..graph import label_graph_from_targets
from ..loss import MSRNLoss
from ..metrics import average_precision, multilabel_metrics
from .checkpoint import load_training_state, rng_state, save_model, save_training_state, set_rng_state
from .distributed import DistributedContext, EvalShardSampler, init_distributed
from .loop import predict, train_one_epoch
from .memory import keep_freed_memory

__all__ = ["TrainConfig", "PretrainedWeightsUnavailable", "paper_config", "cpu_config", "train",
           "build_datasets", "default_cache_dir"]

_logger = logging.getLogger(__name__)


class PretrainedWeightsUnavailable(RuntimeError):
    """The backbone's ImageNet weights could not be loaded (no network and no cached copy)."""


DATASET_KINDS = ("voc", "coco", "csv")


def default_cache_dir() -> pathlib.Path:
    """``$MSRN_CACHE`` or ``~/.cache/msrn``: where the generated data set is written."""
    return pathlib.Path(os.environ.get("MSRN_CACHE", pathlib.Path.home() / ".cache" / "msrn")).expanduser()


@dataclass
class TrainConfig:
    """Every setting of a training run (defaults: the paper's recipe, DESIGN.md section 6)."""

    # data
    data: Optional[str] = None                 # VOCdevkit / COCO root / train CSV; None: generated VOC set
    dataset: str = "voc"                       # voc | coco | csv
    train_split: Optional[str] = None          # voc: trainval, coco: train, csv: (the --data file)
    test_split: Optional[str] = None           # voc: test, coco: val, csv: path of the test CSV
    cache_dir: Optional[str] = None            # where the generated set goes (default_cache_dir())
    synthetic_trainval: int = 2000
    synthetic_test: int = 1000
    synthetic_seed: int = 0
    skip_bad_images: bool = False
    workers: int = 4
    # model
    model: str = "msrn_resnet101"
    backbone: Optional[str] = None             # for msrn_custom
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    pretrained: bool = True
    # The authors' code (which produced the paper's tables): the paper text's compactness loss
    # (1e-3 x squared distances) starts ~1e4 times larger than the BCE and diverges (docs/training.md).
    variant: str = "official"
    embed_dim: int = 512
    hidden_dim: int = 2048
    gat_hidden_dim: int = 300
    label_feature_dim: int = 300
    num_groups: int = 4
    glove: Optional[str] = None                # label features file (GloVe text or .npz)
    graph_threshold: float = 0.4
    # recipe
    image_size: int = 448
    crop_scales: Tuple[float, ...] = PAPER_CROP_SCALES
    batch_size: int = 8
    eval_batch_size: Optional[int] = None
    optimizer: str = "sgd"                     # sgd | adamw
    lr: float = 0.01
    backbone_lr_scale: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 90
    schedule: str = "step"                     # step | cosine
    lr_steps: Tuple[int, ...] = (30, 60)
    lr_gamma: float = 0.1
    warmup_epochs: int = 0
    # execution
    device: Optional[str] = None               # cpu | cuda | None (CUDA when available)
    amp: str = "none"                          # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    threads: Optional[int] = None              # torch CPU threads (None: torch's default)
    keep_freed_memory: bool = True             # malloc keeps freed blocks (msrn.engine.keep_freed_memory)
    seed: int = 0
    output_dir: str = "output/train_voc"
    resume: Optional[str] = None
    stop_after_epoch: Optional[int] = None     # end early, as if interrupted (resume continues)
    max_steps_per_epoch: Optional[int] = None  # for smoke tests
    progress: bool = True

    def to_dict(self) -> Dict[str, Any]:
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
        model="msrn_resnet18", backbone_kwargs=dict(_CPU_BACKBONE_KWARGS), pretrained=False,
        embed_dim=64, hidden_dim=256, gat_hidden_dim=64, label_feature_dim=64,
        image_size=64, crop_scales=(1.0, 0.9, 0.8), batch_size=16, workers=1,
        optimizer="adamw", lr=2e-3, backbone_lr_scale=1.0, weight_decay=1e-4,
        epochs=14, schedule="cosine", lr_steps=(), warmup_epochs=1, device="cpu",
        output_dir="output/train_voc_cpu",
        # One compute thread plus one data-loading process fills two cores; with more threads
        # OpenMP spin-waits badly whenever the cores are shared with other work.
        threads=1,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


# ----------------------------------------------------------------------------------------- data
def build_datasets(config: TrainConfig, context: Optional[DistributedContext] = None):
    """``(train_set, test_set)`` for ``config`` (generating the synthetic set when ``data`` is None)."""
    context = context or DistributedContext()
    if config.dataset not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {DATASET_KINDS}, got {config.dataset!r}.")
    train_tf = train_transform(config.image_size, scales=config.crop_scales)
    test_tf = eval_transform(config.image_size)
    options = dict(skip_bad_images=config.skip_bad_images)
    data = config.data
    if data is None:
        if config.dataset != "voc":
            raise ValueError("Without --data only the generated VOC-format set is available; pass --data.")
        cache = pathlib.Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        folder = cache / f"synthetic-voc-v2-{config.synthetic_trainval}-{config.synthetic_test}-s{config.synthetic_seed}"
        if context.is_main:  # one process writes; the others wait and then reuse it
            generate_synthetic_voc(folder, config.synthetic_trainval, config.synthetic_test,
                                   config.synthetic_seed)
        context.barrier()
        data = str(generate_synthetic_voc(folder, config.synthetic_trainval, config.synthetic_test,
                                          config.synthetic_seed))
    if config.dataset == "voc":
        train_set = VOCDataset(data, config.train_split or "trainval", transform=train_tf, **options)
        test_set = VOCDataset(data, config.test_split or "test", transform=test_tf, **options)
    elif config.dataset == "coco":
        train_set = COCODataset(data, config.train_split or "train", transform=train_tf, **options)
        test_set = COCODataset(data, config.test_split or "val", transform=test_tf, **options)
    else:
        if not config.test_split:
            raise ValueError("CSV training needs the test CSV file: pass --test-split PATH.")
        train_set = CSVDataset(data, transform=train_tf, **options)
        test_set = CSVDataset(config.test_split, classes=train_set.classes, transform=test_tf, **options)
    if train_set.classes != test_set.classes:
        raise ValueError(f"The train and test sets have different classes: {train_set.classes} vs {test_set.classes}.")
    return train_set, test_set


def _label_features(config: TrainConfig, classes: Sequence[str]) -> Optional[torch.Tensor]:
    if config.glove is None:
        return None
    from ..features import load_label_features

    return torch.as_tensor(load_label_features(config.glove, list(classes)), dtype=torch.float32)


# ---------------------------------------------------------------------------------------- model
def _model_config(config: TrainConfig, classes: Sequence[str], fixed_features: bool) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = dict(
        num_classes=len(classes), label_names=list(classes), variant=config.variant, embed_dim=config.embed_dim,
        hidden_dim=config.hidden_dim, gat_hidden_dim=config.gat_hidden_dim, num_groups=config.num_groups,
    )
    if not fixed_features:
        kwargs["label_feature_dim"] = config.label_feature_dim
    if config.backbone:
        kwargs["backbone"] = config.backbone
    if config.backbone_kwargs:
        kwargs["backbone_kwargs"] = dict(config.backbone_kwargs)
    return {"architecture": config.model, "fixed_label_features": fixed_features, "kwargs": kwargs}


def _create_model(config: TrainConfig, model_config: Dict[str, Any], label_features,
                  label_graph) -> nn.Module:
    kwargs = dict(model_config["kwargs"], label_graph=label_graph)
    if label_features is not None:
        kwargs["label_features"] = label_features
    try:
        return create_model(config.model, pretrained=config.pretrained, **kwargs)
    except (OSError, RuntimeError, ConnectionError) as error:
        if not config.pretrained:
            raise
        raise PretrainedWeightsUnavailable(
            f"Could not load the ImageNet weights of the backbone of {config.model} ({type(error).__name__}: "
            f"{error}). Connect to the internet (or fill the Hugging Face cache), or pass --no-pretrained "
            f"to train from random initialisation."
        ) from error


class _LRSchedule:
    """Multiplier of the base learning rates at an epoch: linear warm-up, then step or cosine decay."""

    def __init__(self, epochs: int, schedule: str, steps: Sequence[int], gamma: float, warmup: int) -> None:
        if schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {schedule!r}.")
        self.epochs, self.schedule, self.steps, self.gamma, self.warmup = epochs, schedule, list(steps), gamma, warmup

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return (epoch + 1) / (self.warmup + 1)
        if self.schedule == "step":
            return self.gamma ** sum(epoch >= step for step in self.steps)
        span = max(1, self.epochs - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - self.warmup) / span))


def _build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, lr=config.lr, backbone_lr_scale=config.backbone_lr_scale,
                          weight_decay=config.weight_decay)
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
    if config.lr <= 0:
        raise ValueError(f"lr must be > 0, got {config.lr}.")
    if config.amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"amp must be 'none', 'bf16' or 'fp16', got {config.amp!r}.")


# ------------------------------------------------------------------------------------------ run
def _loader(dataset, batch_size: int, sampler, workers: int, generator: Optional[torch.Generator] = None,
            pin: bool = False) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       pin_memory=pin, drop_last=False, generator=generator)


def train(
    config: TrainConfig, on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None
) -> Dict[str, Any]:
    """Run the training described by ``config``; returns the last epoch's record.

    ``on_epoch_end(record)`` is called on the main process after each epoch with the record that is
    also appended to ``log.jsonl`` (epoch, lr, loss, images/s, every metric, best mAP).

    Raises:
        NonFiniteLossError: the loss became NaN/inf; the checkpoints of the last finished epoch stay.
    """
    _check_config(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if config.keep_freed_memory:
        keep_freed_memory()
    context = init_distributed(config.device)
    try:
        return _train(config, context, on_epoch_end)
    finally:
        if context.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(config: TrainConfig, context: DistributedContext, on_epoch_end) -> Dict[str, Any]:
    if config.amp == "fp16" and context.device.type != "cuda":
        raise ValueError("fp16 mixed precision needs a CUDA device; use --amp bf16 on CPU.")
    output = pathlib.Path(config.output_dir)
    if context.is_main:
        output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    train_set, test_set = build_datasets(config, context)
    classes = train_set.classes
    label_graph = label_graph_from_targets(train_set.targets, config.graph_threshold)
    label_features = _label_features(config, classes)
    model_config = _model_config(config, classes, fixed_features=label_features is not None)
    model = _create_model(config, model_config, label_features, label_graph).to(context.device)
    # Saved with the model, so that evaluation resizes test images to the size it was trained at.
    size = (3, config.image_size, config.image_size)
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "input_size": size,
                            "test_input_size": size}
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    _logger.info("%s: %d labels, %d graph edges, %.2fM parameters, %d train / %d test images", config.model,
                 len(classes), int(label_graph.sum()) - len(classes),
                 sum(p.numel() for p in model.parameters()) / 1e6, len(train_set), len(test_set))

    criterion = MSRNLoss(model)
    optimizer = _build_optimizer(config, model)
    schedule = _LRSchedule(config.epochs, config.schedule, config.lr_steps, config.lr_gamma,
                           config.warmup_epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None

    start_epoch, best_map = 0, -math.inf
    if config.resume:
        state = load_training_state(config.resume)
        if state["model_config"] != json.dumps(model_config, sort_keys=True):
            raise ValueError(
                f"--resume {config.resume}: that run trained a different model or label set "
                f"({state['model_config']}); resume with the same settings."
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best_map = int(state["epoch"]), float(state["best_map"])
        set_rng_state(state["rng"][context.rank] if context.rank < len(state["rng"]) else state["rng"][0])
        _logger.info("Resumed from %s at epoch %d (best mAP %.2f)", config.resume, start_epoch, best_map)

    train_model: nn.Module = model
    if context.distributed:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if config.compile:
        train_model = torch.compile(train_model)

    train_sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=config.seed)
    test_loader = _loader(test_set, config.eval_batch_size or config.batch_size,
                          EvalShardSampler(len(test_set), context.rank, context.world_size), config.workers,
                          pin=context.device.type == "cuda")

    record: Dict[str, Any] = {}
    last_epoch = config.epochs if config.stop_after_epoch is None else min(config.epochs,
                                                                           config.stop_after_epoch)
    for epoch in range(start_epoch, last_epoch):
        train_sampler.set_epoch(epoch)
        # Worker seeds come from this generator: the data order and augmentation of an epoch depend
        # only on (seed, epoch, rank), which is what makes --resume exact.
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch * 1_009 + context.rank)
        train_loader = _loader(train_set, config.batch_size, train_sampler, config.workers, generator,
                               pin=context.device.type == "cuda")
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(train_model, criterion, train_loader, optimizer, context, epoch + 1,
                                amp=config.amp, scaler=scaler, channels_last=config.channels_last,
                                max_steps=config.max_steps_per_epoch, progress=config.progress)
        scheduler.step()
        context.broadcast_buffers(model)
        scores, targets, difficult = predict(model, test_loader, context, len(test_set), amp=config.amp,
                                             channels_last=config.channels_last, progress=config.progress)
        metrics = multilabel_metrics(scores, targets, ignore=difficult, top_k=3)
        is_best = metrics["mAP"] > best_map
        best_map = max(best_map, metrics["mAP"])
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": stats["loss"],
                  "images_per_s": stats["images_per_s"], "train_time_s": stats["time_s"],
                  "test_images": int(len(scores)), **metrics, "best_mAP": best_map}
        # RNG states of every process, so that each rank resumes its own stream (a collective call).
        rng_states: List[Any] = [rng_state()]
        if context.distributed:
            rng_states = [None] * context.world_size
            torch.distributed.all_gather_object(rng_states, rng_state())
        if context.is_main:
            _save_epoch(output, model, model_config, record, is_best, optimizer, scheduler, scaler, best_map,
                        config, rng_states)
            with open(output / "log.jsonl", "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
            if on_epoch_end is not None:
                on_epoch_end(record)
        context.barrier()
    if context.is_main and record:
        record["class_ap"] = dict(zip(classes, average_precision(scores, targets, difficult).tolist()))
    return record


def _save_epoch(output: pathlib.Path, model: nn.Module, model_config: Dict[str, Any], record: Dict[str, Any],
                is_best: bool, optimizer, scheduler, scaler, best_map: float, config: TrainConfig,
                rng_states: List[Any]) -> None:
    info = {"epoch": record["epoch"], "mAP": record["mAP"], "image_size": config.image_size}
    save_model(model, output / "last", info)
    if is_best:
        save_model(model, output / "best", info)
    save_training_state(output / "train_state.pt", {
        "epoch": record["epoch"], "best_map": best_map, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng_states, "model_config": json.dumps(model_config, sort_keys=True),
        "train_config": json.dumps(config.to_dict()),
    })

"""What a training run is built from: the data sets, the model, the loss, the optimiser, the loaders.

Each builder takes the run's :class:`~msrn.engine.config.TrainConfig`; :func:`check_config` refuses
a bad configuration before any work by building its cheap parts (the augmentation, the loss).
"""

import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .. import labels as label_sets
from .._warnings import warn
from ..data import (
    DATASET_KINDS,
    check_image_header,
    create_dataset,
    eval_transform,
    generate_synthetic_coco,
    generate_synthetic_voc,
    train_transform,
)
from ..features import load_label_features
from ..graph import count_label_edges, label_edges_from_label_lists, label_graph_from_targets
from ..loss import MSRNLoss
from ..models import create_model
from ..models.msrn import DENSE_GRAPH_MAX_LABELS
from ..optim import param_groups
from .config import TrainConfig, default_cache_dir, saved_config
from .distributed import DistributedContext
from .label_stats import label_state_counts, positive_counts, unknown_counts
from .loop import check_amp
from .options import check_option_ranges
from .resume import TRAIN_CONFIG_NAME, settings_file
from .splits import recorded_splits
from .validation import MIN_FIT_POSITIVES, check_split_sizes, hold_out_validation, top_k_for

__all__ = ["PretrainedWeightsUnavailable", "build_datasets", "run_test_data"]

_logger = logging.getLogger(__name__)


class PretrainedWeightsUnavailable(RuntimeError):
    """The backbone's ImageNet weights could not be loaded (no network and no cached copy)."""


def check_config(config: TrainConfig) -> None:
    """Refuse a bad setting of ``config`` with a one-line ``ValueError`` naming its option, before any
    data is read (and before ``--overwrite`` deletes anything)."""
    check_option_ranges(config)
    if config.val_fraction is not None and config.val_split is not None:
        raise ValueError("Give either --val-fraction or --val-split, not both.")
    if config.unknown_as_negative and config.dataset != "openimages":
        raise ValueError(
            f"--unknown-as-negative is an Open Images option (--dataset openimages), not one of "
            f"--dataset {config.dataset}."
        )
    _train_augmentation(config)  # a bad --randaugment, --cutout or --crop-scales, before any work
    check_amp(config.amp)
    build_criterion(config, None)  # refuses bad loss parameters before any data is read


# ----------------------------------------------------------------------------------------- data
def build_datasets(config: TrainConfig, context: DistributedContext | None = None):
    """``(train_set, test_set)`` for ``config`` (generating the synthetic set when ``data`` is None)."""
    context = context or DistributedContext()
    if config.dataset not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {DATASET_KINDS}, got {config.dataset!r}.")
    data = config.data if config.data is not None else _synthetic_data(config, context)
    options = dict(skip_bad_images=config.skip_bad_images, skip_missing_images=config.skip_missing_images)
    if config.dataset == "openimages":
        options["unknown_as_negative"] = config.unknown_as_negative
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
    it: ``{"data", "dataset", "split", "skip_bad_images", "skip_missing_images", "fingerprint"}`` (and
    ``"unknown_as_negative"`` for Open Images), read from the run's ``train_config.json`` (the generated
    set is written again if its cache folder is gone). ``fingerprint`` is the one the run recorded in
    ``splits.json`` (None for a run made before runs recorded it); without file times when the
    generated set was written again.

    Raises:
        FileNotFoundError: ``run_folder`` holds no ``train_config.json`` (nor ``train_state.pt``).
        ValueError: those files are damaged (the message names the file).
    """
    folder = pathlib.Path(run_folder)
    if not settings_file(folder).is_file():
        raise FileNotFoundError(
            f"{folder} holds no {TRAIN_CONFIG_NAME}: it is not the folder of a training run."
        )
    config = saved_config(folder)
    fingerprint = recorded_splits(folder).get("test")
    if config.dataset == "csv":
        data, split = config.test_split, None
    else:
        generated = config.data is None and not _synthetic_folder(config).is_dir()
        data = config.data if config.data is not None else _synthetic_data(config, DistributedContext())
        split = config.test_split
        if generated and fingerprint:  # the same files, written again just now
            fingerprint = {key: value for key, value in fingerprint.items() if key != "times"}
    test_data = {
        "data": data,
        "dataset": config.dataset,
        "split": split,
        "skip_bad_images": config.skip_bad_images,
        "skip_missing_images": config.skip_missing_images,
        "fingerprint": fingerprint,
    }
    if config.dataset == "openimages":
        test_data["unknown_as_negative"] = config.unknown_as_negative
    return test_data


def _train_augmentation(config: TrainConfig):
    return train_transform(
        config.image_size, scales=config.crop_scales, randaugment=config.randaugment, cutout=config.cutout
    )


def _synthetic_folder(config: TrainConfig) -> pathlib.Path:
    """Where the generated set of ``config`` is written (VOC format, or COCO format with --dataset coco)."""
    cache = pathlib.Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    sizes = (config.synthetic_trainval, config.synthetic_test, config.synthetic_seed)
    kind = "synthetic-coco-v1" if config.dataset == "coco" else "synthetic-voc-v2"
    return cache / "{}-{}-{}-s{}".format(kind, *sizes)


def _synthetic_data(config: TrainConfig, context: DistributedContext) -> str:
    """The generated set of ``config`` (written once, by the main process): VOC format with the 20 VOC
    labels, or with ``--dataset coco`` COCO format with COCO's 80 labels."""
    if config.dataset not in ("voc", "coco"):
        raise ValueError(
            "Without --data only the generated sets are available (--dataset voc: 20 labels, VOC format; "
            "--dataset coco: 80 labels, COCO format); pass --data."
        )
    folder = _synthetic_folder(config)
    sizes = (config.synthetic_trainval, config.synthetic_test, config.synthetic_seed)
    generate = generate_synthetic_coco if config.dataset == "coco" else generate_synthetic_voc
    if context.is_main:  # one process writes; the others wait and then reuse it
        generate(folder, *sizes)
    context.barrier()
    return str(generate(folder, *sizes))


def build_validation_split(config: TrainConfig, train_set) -> tuple[Any, Any]:
    """``(images to train on, validation split or None)``; says what ``best/`` is chosen on."""
    train_part, val_part = hold_out_validation(
        train_set, config.val_fraction, config.val_split, config.val_seed, eval_transform(config.image_size)
    )
    if val_part is None:
        warn(
            _logger,
            "No validation split (--val-fraction, --val-split): best/ is chosen on the test split, as in "
            "the paper's protocol, so its test figures are optimistic.",
        )
    else:
        option = (
            f"--val-split {config.val_split}"
            if config.val_split
            else f"--val-fraction {config.val_fraction:g}"
        )
        check_split_sizes(train_part, val_part, option)
        source = config.val_split or f"{config.val_fraction:g} of the training images, seed {config.val_seed}"
        _logger.info(
            "Validation split: %d images (%s), not trained on; best/ is chosen on its mAP and per-class "
            "thresholds are fitted on it",
            len(val_part),
            source,
        )
    return train_part, val_part


def check_training_labels(train_set, source: str) -> None:
    """Refuse a training set in which every label is unknown (nothing to learn); warn, naming each
    class with its counts, about the classes without a positive training label."""
    positive, absent, unknown = label_state_counts(train_set)
    if not (positive.any() or absent.any()):
        raise ValueError(
            f"The training set ({source}) has no known label: every entry is unknown, so there is "
            f"nothing to learn. In a CSV list layout every label not named is absent and -name marks it "
            f"unknown; in the one-hot layout 1 is present, 0 absent, ? or an empty cell unknown."
        )
    lacking = []
    for index in np.flatnonzero(positive == 0):
        counts = [(int(absent[index]), "absent"), (int(unknown[index]), "unknown")]
        shown = ", ".join(f"{count} {kind}" for count, kind in counts if count)
        lacking.append(f"{train_set.classes[index]} ({shown})")
    if lacking:
        warn(
            _logger,
            f"{len(lacking)} class(es) have no positive training label, so the model cannot learn to find "
            f"them: {', '.join(lacking)}",
        )


def check_eval_sets(test_set, val_set, skip_bad_images: bool) -> None:
    """Before the first epoch: read the header of every test and validation image (a broken file is
    reported in seconds, not after an epoch), and name the classes without a positive label."""
    for dataset, name, advice in ((test_set, "test", "--test-split"), (val_set, "validation", "the split")):
        if dataset is None:
            continue
        if not skip_bad_images:  # with skip_bad_images, the data set has decoded every image already
            for path in dataset.image_paths:
                check_image_header(path)
        positives = positive_counts(dataset)  # difficult test labels are -1
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
        if name == "validation":
            few = [f"{label} ({count})" for label, count in zip(dataset.classes, positives, strict=True)]
            few = [text for text, count in zip(few, positives, strict=True) if 0 < count < MIN_FIT_POSITIVES]
            if few:
                warn(
                    _logger,
                    f"{len(few)} class(es) have fewer than {MIN_FIT_POSITIVES} validation positives, too few "
                    f"to fit a threshold on; their thresholds stay 0.5: {', '.join(few)}",
                )


def data_loader(
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


# ---------------------------------------------------------------------------------------- model
def build_model(config: TrainConfig, context: DistributedContext, train_set, test_set, val_set=None):
    """The model for the training labels (their graph, and GloVe features when given), on its device."""
    classes = train_set.classes
    label_graph = _label_graph(train_set, config.graph_threshold)
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
        entries, images, difficult = unknown_counts(data_set)
        if entries:
            _logger.info(
                "unknown labels (-1): %d unknown label entries in %d %s images (left out of the %s)%s",
                entries,
                images,
                name,
                "loss and the label graph" if name == "train" else "metrics",
                f"; {difficult} of them VOC difficult labels" if difficult else "",
            )
    if top_k_for(len(classes)) is None:
        warn(
            _logger,
            f"top-3 metrics are left out: with {len(classes)} classes every label is among an image's "
            f"top 3, so they would say nothing",
        )
    if label_features is None:
        reason = (
            "--label-features learnable"
            if config.label_features == "learnable"
            else "no built-in label set has every label name; --glove FILE gives GloVe vectors"
        )
        warn(_logger, f"The label features are learnable, not word vectors as in the paper ({reason}).")
    _logger.info(
        "label features: %s; label graph: %d edges at t=%g from the training labels",
        features_source,
        count_label_edges(label_graph),
        config.graph_threshold,
    )
    return model, model_config


def _label_graph(train_set, threshold: float) -> torch.Tensor:
    """The label graph of the training labels (-1 entries left out): from a sparse set's per-image rows
    (``label_lists()``, e.g. Open Images) with no dense ``images x labels`` copy, as a ``[2, E]`` edge
    list above ``DENSE_GRAPH_MAX_LABELS`` labels and a ``[n, n]`` mask below; else a mask from the
    dense ``targets``."""
    if hasattr(train_set, "label_lists"):
        positives, negatives = train_set.label_lists()
        num_labels = len(train_set.classes)
        edges = label_edges_from_label_lists(positives, num_labels, threshold, negatives)
        if num_labels > DENSE_GRAPH_MAX_LABELS:
            return edges
        # As MSRN stores a small graph itself: checkpoints of few labels keep the usual [n, n] mask.
        mask = torch.zeros(num_labels, num_labels, dtype=torch.bool)
        mask[edges[0], edges[1]] = True
        return mask
    return label_graph_from_targets(train_set.targets, threshold)


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
    if config.head != "paper":  # only then, so that the paper head's runs resume as before
        kwargs.update(head=config.head, num_query_groups=config.num_query_groups)
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
        if "--backbone-weights" in str(error):  # msrn's own message, with the offline options
            raise PretrainedWeightsUnavailable(str(error)) from error
        raise PretrainedWeightsUnavailable(
            f"Could not load the ImageNet weights of the backbone of {config.model} ({type(error).__name__}: "
            f"{error}). Connect to the internet (or fill the Hugging Face cache), give a local weight file "
            f"with --backbone-weights PATH, or pass --no-pretrained to train from random initialisation."
        ) from error


def build_criterion(config: TrainConfig, model: nn.Module) -> MSRNLoss:
    return MSRNLoss(
        model,
        loss=config.loss,
        asl_gamma_neg=config.asl_gamma_neg,
        asl_gamma_pos=config.asl_gamma_pos,
        asl_clip=config.asl_clip,
        focal_gamma=config.focal_gamma,
        focal_alpha=config.focal_alpha,
    )


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(
        model, lr=config.lr, backbone_lr_scale=config.backbone_lr_scale, weight_decay=config.weight_decay
    )
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}.")

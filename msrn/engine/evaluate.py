"""Evaluate a saved model on a test set (what ``msrn evaluate`` runs)."""

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .._warnings import warn
from ..backends import create_backend, resolve_backend
from ..data import create_dataset, eval_transform, load_rgb_image
from ..data.fingerprint import fingerprint_changes, split_fingerprint
from ..metrics import average_precision, multilabel_metrics
from ..thresholds import DecisionThresholds, decision_thresholds
from .checkpoint import load_trained_model
from .distributed import DistributedContext, EvalShardSampler, resolve_device
from .loop import check_amp, predict
from .validation import top_k_for

__all__ = ["evaluate_checkpoint", "Evaluation"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_checkpoint` measured; unpacks as ``metrics, class_ap, classes``.

    Attributes:
        metrics: as :func:`msrn.metrics.multilabel_metrics` with ``top_k=3``, in percent.
        class_ap: ``[n]`` AP per class in percent (NaN for a class without a positive test label).
        classes: the class names, in label order.
        thresholds: the decision thresholds CP, CR, CF1, OP, OR, OF1 were computed at, and their source
            (``"override"``, ``"model"`` or ``"default"``; :func:`msrn.thresholds.decision_thresholds`).
    """

    metrics: dict[str, float]
    class_ap: np.ndarray
    classes: list
    thresholds: DecisionThresholds

    def __iter__(self) -> Iterator[Any]:
        return iter((self.metrics, self.class_ap, self.classes))


def evaluate_checkpoint(
    checkpoint: "os.PathLike[str] | str",
    data: "os.PathLike[str] | str",
    dataset: str = "voc",
    split: str | None = None,
    image_size: int | None = None,
    batch_size: int = 16,
    workers: int = 2,
    device: str = "cpu",
    amp: str = "none",
    threshold: float | None = None,
    skip_bad_images: bool = False,
    skip_missing_images: bool = False,
    unknown_as_negative: bool = False,
    progress: bool = False,
    fingerprint: dict[str, Any] | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    calibration_images: "Sequence[os.PathLike[str] | str] | None" = None,
    cache_dir: "os.PathLike[str] | str | None" = None,
) -> Evaluation:
    """Load ``checkpoint`` (a ``best/`` or ``last/`` folder of the trainer, or any
    :func:`msrn.save_pretrained` folder) and score it on a test set.

    Args:
        image_size: test resize; default: the size the model was trained at.
        data: VOCdevkit folder (``dataset="voc"``, split default ``test``), COCO root (``"coco"``,
            split default ``val``), NUS-WIDE, Apparel or Open Images folder (``"nuswide"``,
            ``"apparel"``, ``"openimages"``, split default ``test``) or a CSV file (``"csv"``; ``split``
            unused).
        unknown_as_negative: Open Images: the labels an image's file does not list count as absent
            instead of being left out of the metrics.
        threshold: the decision threshold of CP, CR, CF1, OP, OR, OF1 for every class; default: the
            model's per-label thresholds (``pretrained_cfg["label_thresholds"]``, fitted on a validation
            split by the trainer) when it has them, else 0.5. mAP does not depend on it.
        fingerprint: what the test set must be (:func:`msrn.data.fingerprint.split_fingerprint`, as a
            run records it in ``splits.json``); a test set that differs is refused.
        backend, precision, cache_dir: what runs the model, as for :class:`msrn.Predictor`
            (:mod:`msrn.backends`; default ``"auto"``: onnxruntime on the CPU when installed).
        calibration_images: image files for ``precision="int8"`` (a few dozen like the test images,
            preferably not the test images themselves), transformed as the test images.

    Returns:
        An :class:`Evaluation`, which unpacks as ``(metrics, per_class_ap [n], classes)`` and says in
        ``.thresholds`` which thresholds were used. A class without a positive test label has AP NaN
        and is left out of the mAP, with a warning naming it. The top-3 metrics are left out for
        3 classes or fewer.

    Raises:
        ValueError: among others, when the model's saved thresholds are malformed (they are used as
            saved or refused, never replaced by 0.5).
    """
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}.")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}.")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}.")
    torch_device = resolve_device(device)
    check_amp(amp, torch_device)
    resolve_backend(backend, torch_device, amp, precision)  # a wrong choice fails before any loading
    if precision == "int8" and not calibration_images:
        raise ValueError(
            "precision int8 needs calibration images (--calibration): a few dozen images like the test "
            "images, e.g. from the training split."
        )
    model, info = load_trained_model(checkpoint)
    thresholds = decision_thresholds(model, threshold)  # before the test set is read: a bad one fails fast
    classes = list(model.label_names or [])
    size = image_size or info["image_size"]
    transform = eval_transform(size)
    test_set = create_dataset(
        dataset,
        data,
        split,
        transform=transform,
        classes=classes or None,
        skip_bad_images=skip_bad_images,
        skip_missing_images=skip_missing_images,
        unknown_as_negative=unknown_as_negative,
    )
    if fingerprint:
        changes = fingerprint_changes(fingerprint, split_fingerprint(test_set))
        if changes:
            raise ValueError(
                f"The test split in {data} has changed since the run was trained: {'; '.join(changes)}. "
                f"Its scores would not be the run's; to score the data as they are now, name them with "
                f"--data (and --dataset)."
            )
    if classes and list(test_set.classes) != classes:
        raise ValueError(
            f"The checkpoint's labels {classes} differ from the data set's {list(test_set.classes)}."
        )
    if model.num_classes != test_set.num_classes:
        raise ValueError(
            f"The checkpoint has {model.num_classes} labels, the data set {test_set.num_classes}."
        )
    context = DistributedContext(device=torch_device)
    model.to(context.device).eval()
    calibration = None
    if precision == "int8":
        calibration = [transform(load_rgb_image(path)).unsqueeze(0).numpy() for path in calibration_images]
    runner = create_backend(
        model,
        backend,
        precision,
        device=context.device,
        amp=amp,
        input_size=(model.backbone.in_chans, size, size),
        cache_dir=cache_dir,
        calibration=calibration,
    )
    loader = torch.utils.data.DataLoader(
        test_set,
        batch_size=batch_size,
        num_workers=workers,
        sampler=EvalShardSampler(len(test_set)),
        pin_memory=context.device.type == "cuda",
    )
    # The backend applies amp itself (the torch backend's autocast).
    scores, targets = predict(runner, loader, context, len(test_set), progress=progress)
    class_ap = average_precision(scores, targets)
    missing = [name for name, ap in zip(test_set.classes, class_ap, strict=True) if not np.isfinite(ap)]
    if missing:
        _logger.warning(
            "%d class(es) have no positive test label and are left out of the mAP: %s",
            len(missing),
            ", ".join(missing),
        )
    _logger.info("CP, CR, F1 at the %s thresholds", thresholds.source)
    top_k = top_k_for(test_set.num_classes)
    if top_k is None:
        warn(
            _logger,
            f"top-3 metrics are left out: with {test_set.num_classes} classes every label is in the top 3",
        )
    metrics = multilabel_metrics(scores, targets, threshold=thresholds.values, top_k=top_k)
    return Evaluation(metrics, class_ap, list(test_set.classes), thresholds)

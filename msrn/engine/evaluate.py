"""Evaluate a saved model on a test set (what ``msrn evaluate`` runs)."""

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from ..backends import create_backend, resolve_backend
from ..data import create_dataset, eval_transform, load_rgb_image
from ..metrics import average_precision, multilabel_metrics
from .checkpoint import load_trained_model
from .distributed import DistributedContext, EvalShardSampler, resolve_device
from .loop import check_amp, predict

__all__ = ["evaluate_checkpoint"]

_logger = logging.getLogger(__name__)


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
    progress: bool = False,
    backend: str = "auto",
    precision: str = "fp32",
    calibration_images: "Sequence[os.PathLike[str] | str] | None" = None,
    cache_dir: "os.PathLike[str] | str | None" = None,
) -> tuple[dict[str, float], np.ndarray, list]:
    """Load ``checkpoint`` (a ``best/`` or ``last/`` folder of the trainer, or any
    :func:`msrn.save_pretrained` folder) and score it on a test set.

    Args:
        image_size: test resize; default: the size the model was trained at.
        data: VOCdevkit folder (``dataset="voc"``, split default ``test``), COCO root (``"coco"``,
            split default ``val``), NUS-WIDE or Apparel folder (``"nuswide"``, ``"apparel"``, split
            default ``test``) or a CSV file (``"csv"``; ``split`` unused).
        threshold: the decision threshold of CP, CR, CF1, OP, OR, OF1 for every class; default: the
            model's per-label thresholds (``pretrained_cfg["label_thresholds"]``, fitted on a validation
            split by the trainer) when it has them, else 0.5. mAP does not depend on it.
        backend, precision, cache_dir: what runs the model, as for :class:`msrn.Predictor`
            (:mod:`msrn.backends`; default ``"auto"``: onnxruntime on the CPU when installed).
        calibration_images: image files for ``precision="int8"`` (a few dozen like the test images,
            preferably not the test images themselves), transformed as the test images.

    Returns:
        ``(metrics, per_class_ap [n], classes)``; metrics as :func:`msrn.metrics.multilabel_metrics`
        with ``top_k=3``, all in percent. A class without a positive test label has AP NaN and is
        left out of the mAP, with a warning naming it.
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
    saved = model.get_label_thresholds() if threshold is None else None
    if saved is not None:
        _logger.info("CP, CR, F1 at the model's per-label thresholds")
    thresholds = saved if saved is not None else (0.5 if threshold is None else threshold)
    metrics = multilabel_metrics(scores, targets, threshold=thresholds, top_k=3)
    return metrics, class_ap, list(test_set.classes)

"""Labelling images from Python with a trained MSRN: :class:`Predictor`, the code path behind
``msrn predict`` as well.

Preprocessing is the model's own data config (``timm.data.resolve_model_data_config``, e.g. a plain
448 x 448 resize with ImageNet mean and std), images are decoded by :func:`msrn.data.load_rgb_image`,
and batches are read by a ``DataLoader`` (``workers`` processes decode the next batches while the
model runs). A label is chosen when its probability reaches its threshold: the model's own per-label
thresholds (``pretrained_cfg["label_thresholds"]``, fitted on a validation split by ``msrn train``)
when it has them, else 0.5, unless the predictor is given ``threshold=``. What runs the model is an
inference backend (:mod:`msrn.backends`: PyTorch, or the exported model in onnxruntime); decoding,
transforms and thresholds are this module's whatever the backend.
"""

import dataclasses
import logging
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config

from .backends import create_backend, resolve_backend
from .data import BadImageError, load_rgb_image, to_rgb_image
from .engine.distributed import resolve_device
from .engine.loop import check_amp
from .models import MSRN, load_model
from .thresholds import DEFAULT_THRESHOLD, decision_thresholds

__all__ = ["Predictor", "PredictedBatch", "select_labels", "DEFAULT_THRESHOLD"]

_logger = logging.getLogger(__name__)

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]


def select_labels(
    probabilities: Sequence[float], thresholds: Sequence[float], top_k: int | None = None
) -> list[int]:
    """Indices of the labels whose probability reaches their threshold (``p[i] >= thresholds[i]``),
    most probable first, at most ``top_k``."""
    above = [i for i, (p, t) in enumerate(zip(probabilities, thresholds, strict=True)) if p >= t]
    chosen = sorted(above, key=lambda i: -probabilities[i])
    return chosen[:top_k] if top_k is not None else chosen


@dataclasses.dataclass
class PredictedBatch:
    """One batch of :meth:`Predictor.iter_batches`.

    Attributes:
        indices: positions, in the input list, of the images of this batch.
        inputs: ``[b, 3, H, W]`` the preprocessed images on the predictor's device (what the model saw),
            or ``None`` when no image of the batch could be read.
        probabilities: ``[b, n]`` float32 on the CPU, ``sigmoid`` of the logits, or ``None`` as ``inputs``.
        failed: ``(position, reason)`` of each input of the batch that could not be read.
    """

    indices: list[int]
    inputs: torch.Tensor | None
    probabilities: torch.Tensor | None
    failed: list[tuple[int, str]]


class _Images(torch.utils.data.Dataset):
    """``(position, image tensor, None)`` per input, or ``(position, None, reason)`` for one that cannot
    be read (the reason travels as text, so that it crosses DataLoader worker processes intact)."""

    def __init__(self, images: Sequence[Any], transform) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        item = self.images[index]
        try:
            if isinstance(item, Image.Image):
                picture = to_rgb_image(item)
            elif isinstance(item, np.ndarray):
                picture = to_rgb_image(Image.fromarray(item))
            else:
                picture = load_rgb_image(item)
            return index, self.transform(picture), None
        except (OSError, ValueError) as error:
            reason = error.reason if isinstance(error, BadImageError) and error.reason else str(error)
            return index, None, reason


def _collate(samples):
    """``(positions of the readable inputs, their images stacked or None, [(position, reason)])``."""
    kept = [(index, image) for index, image, _ in samples if image is not None]
    failed = [(index, reason) for index, image, reason in samples if image is None]
    images = torch.stack([image for _, image in kept]) if kept else None
    return [index for index, _ in kept], images, failed


def _check_image(item: Any) -> Any:
    """``item`` if it is an input :class:`Predictor` reads, else a clear error."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4))):
            raise ValueError(
                f"an image array must be uint8 [H, W] (gray), [H, W, 3] (RGB) or [H, W, 4] (RGBA), got "
                f"{item.dtype} {list(item.shape)}; for a batch [N, H, W, 3] pass list(array)."
            )
        return item[..., 0] if item.ndim == 3 and item.shape[2] == 1 else item
    if isinstance(item, (str, os.PathLike)):
        path = pathlib.Path(item)
        if path.is_dir():
            raise IsADirectoryError(
                f"{path} is a folder; pass its images, e.g. msrn.data.find_image_files({str(path)!r})."
            )
        if not path.is_file():
            raise FileNotFoundError(f"Image file not found: {path}")
        return path
    raise TypeError(
        f"an image must be a file path, a PIL image or a uint8 numpy array [H, W, 3], got "
        f"{type(item).__name__}; a preprocessed tensor goes to predictor.model directly."
    )


def _as_list(images: "ImageInput | Sequence[ImageInput]") -> list[Any]:
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]  # one image: a list of one
    elif isinstance(images, torch.Tensor) or not isinstance(images, Sequence | Iterator):
        raise TypeError(
            f"images must be an image (file path, PIL image, uint8 numpy array) or a list of them, got "
            f"{type(images).__name__}."
        )
    return [_check_image(item) for item in images]


class Predictor:
    """Label images with a trained MSRN, as ``msrn predict`` does.

    ``predictor.predict(images)`` gives each image's ``{label: probability}``, ``predictor.labels(images)``
    the labels that reach their thresholds, ``predictor.probabilities(images)`` the ``[N, n]`` array.

    Args:
        model: an :class:`msrn.MSRN`, or what ``msrn predict --model`` takes: ``local-dir:DIR`` or
            ``hf-hub:USER/REPO`` of a saved model, or an architecture name with ``checkpoint``.
        device: where the model runs; default: for a model object the device it is on, for a name
            CUDA when available, else the CPU. The model is moved there (in place, as ``nn.Module.to``)
            and put in eval mode.
        threshold: a probability in (0, 1) for every label, or one per label (in [0, 1]); default: the
            model's ``pretrained_cfg["label_thresholds"]`` when it has them (a malformed entry is
            refused, not replaced), else 0.5. :attr:`thresholds` holds the values in use,
            :attr:`threshold_source` says which (``"override"``, ``"model"`` or ``"default"``).
        batch_size: images per forward pass.
        workers: ``DataLoader`` processes that decode and resize the next batches while the model runs
            (0: in this process; the default, as for a few images starting processes costs more).
        amp: ``None``/``"none"``, ``"bf16"`` or ``"fp16"`` (CUDA only) mixed precision.
        checkpoint: a safetensors state dict; with an architecture name it gives the weights, with
            ``local-dir:``/``hf-hub:`` it replaces the saved ones.
        img_size: input size in pixels; default the model's ``pretrained_cfg`` (448 for the paper's).
        backend: what runs the model: ``"torch"``, ``"onnxruntime"`` (the model exported once to ONNX,
            cached under ``cache_dir`` by a hash of its weights, run on the CPU), or ``"auto"``:
            onnxruntime when it is installed, the device is the CPU and ``amp`` is off, else torch
            (:mod:`msrn.backends`). The onnxruntime backend runs the model as it was when the
            predictor was made: make a new predictor after changing its weights.
        precision: ``"fp32"``, or ``"int8"`` (onnxruntime; static quantization calibrated on
            ``calibration_images``).
        cache_dir: where exported ONNX files are kept (default ``$MSRN_CACHE/onnx``,
            ``~/.cache/msrn/onnx``).
        calibration_images: for int8, a few dozen images like those to label (paths, PIL images or
            arrays, as for :meth:`predict`), preprocessed like them.

    Inputs: a file path, a PIL image, a uint8 numpy array (``[H, W, 3]`` RGB, ``[H, W]`` gray or
    ``[H, W, 4]`` RGBA), or a list of them; a single image counts as a list of one, so results are always
    lists, one entry per input, in order. Images from memory are converted as files are (transparency
    on white, EXIF orientation). A folder is refused: pass ``msrn.data.find_image_files(folder)``.

    Raises (when predicting): ``TypeError`` for an input of another type, ``FileNotFoundError`` for a
    missing file (both before any image is read), :class:`msrn.data.BadImageError` naming the first
    file that cannot be read as an image. ``msrn predict`` instead skips such files
    (:meth:`iter_batches`).
    """

    def __init__(
        self,
        model: "torch.nn.Module | str",
        device: "str | torch.device | None" = None,
        threshold: float | Sequence[float] | None = None,
        batch_size: int = 8,
        workers: int = 0,
        amp: str | None = None,
        *,
        checkpoint: "os.PathLike[str] | str | None" = None,
        img_size: int | None = None,
        backend: str = "auto",
        precision: str = "fp32",
        cache_dir: "os.PathLike[str] | str | None" = None,
        calibration_images: "Sequence[ImageInput] | None" = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0 (0: in this process), got {workers!r}.")
        check_amp(amp)
        if isinstance(model, str):
            target = resolve_device(None if device is None else str(device))  # before the (slow) load
            resolve_backend(backend, target, amp, precision)
            model = load_model(model, None if checkpoint is None else os.fspath(checkpoint))
        elif isinstance(model, MSRN):
            if checkpoint is not None:
                raise ValueError(
                    "checkpoint= goes with a model name; load the weights into the model yourself."
                )
            target = next(model.parameters()).device if device is None else resolve_device(str(device))
        else:
            raise TypeError(
                f"model must be an msrn.MSRN or a model spec (local-dir:DIR, hf-hub:ID, or a name with "
                f"checkpoint=), got {type(model).__name__}."
            )
        if model.num_classes == 0:
            raise ValueError("the model has no classifier (num_classes=0), so there is nothing to predict.")
        check_amp(amp, target)
        self.model = model.to(target).eval()
        self.device = target
        self.batch_size = batch_size
        self.workers = workers
        self.amp = amp
        self.data_config = resolve_model_data_config(model)
        if img_size is not None:
            if img_size < model.backbone.min_input_size:
                raise ValueError(
                    f"input size {img_size} px (img_size, --img-size) is too small for this backbone: use "
                    f"at least {model.backbone.min_input_size} px."
                )
            self.data_config["input_size"] = (self.data_config["input_size"][0], img_size, img_size)
        self.transform = create_transform(**self.data_config, is_training=False)
        self.label_names = model.get_label_names()
        decision = decision_thresholds(model, threshold)
        self.thresholds: np.ndarray = decision.values  # [n], one per label
        self.threshold_source: str = decision.source  # "override", "model" or "default"
        if precision == "int8" and not calibration_images:
            raise ValueError(
                "precision int8 needs calibration_images: a few dozen images like those to label "
                "(msrn predict uses the first 32 of its inputs)."
            )
        calibration = self._calibration_batches(calibration_images) if precision == "int8" else None
        self.backend = create_backend(
            self.model,
            backend,
            precision,
            device=target,
            amp=amp,
            input_size=tuple(self.data_config["input_size"]),
            cache_dir=cache_dir,
            calibration=calibration,
        )

    def _calibration_batches(self, images: "Sequence[ImageInput]") -> list[np.ndarray]:
        """The calibration images preprocessed as the images to label, one per batch (what
        onnxruntime's calibrator takes). Unreadable ones are left out (logged); none readable is an
        error."""
        items = _as_list(images)
        dataset = _Images(items, self.transform)
        batches, failed = [], []
        for index in range(len(items)):
            _, image, reason = dataset[index]
            if image is None:
                failed.append(f"{_describe(items[index], index)}: {reason}")
            else:
                batches.append(image.unsqueeze(0).numpy())
        if failed:
            _logger.warning("%d calibration image(s) left out: %s", len(failed), "; ".join(failed))
        if not batches:
            raise BadImageError(f"None of the calibration images can be read ({'; '.join(failed)}).")
        return batches

    def iter_batches(self, images: "ImageInput | Sequence[ImageInput]") -> Iterator[PredictedBatch]:
        """Predict batch by batch, skipping inputs that cannot be read (each reported in ``failed``
        with its reason); what ``msrn predict`` runs. Wrong types and missing files raise first."""
        items = _as_list(images)
        loader = torch.utils.data.DataLoader(
            _Images(items, self.transform),
            batch_size=self.batch_size,
            num_workers=self.workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )
        dtype = next(self.model.parameters()).dtype
        for indices, inputs, failed in loader:
            if inputs is None:
                yield PredictedBatch(indices, None, None, failed)
                continue
            inputs = inputs.to(self.device, dtype=dtype, non_blocking=True)
            logits = self.backend(inputs)
            yield PredictedBatch(indices, inputs, torch.sigmoid(logits.float()).cpu(), failed)

    def probabilities(self, images: "ImageInput | Sequence[ImageInput]") -> np.ndarray:
        """``[N, n]`` float32: the probability (sigmoid of the logit) of every label for every input,
        columns in the order of :attr:`label_names`."""
        items = _as_list(images)
        out = np.zeros((len(items), self.model.num_classes), dtype=np.float32)
        for batch in self.iter_batches(items):
            if batch.failed:
                index, reason = batch.failed[0]
                raise BadImageError(
                    f"Bad image {_describe(items[index], index)}: {reason}. Replace it or leave it out.",
                    path=str(items[index]) if isinstance(items[index], pathlib.Path) else None,
                    reason=reason,
                )
            out[batch.indices] = batch.probabilities.numpy()
        return out

    def predict(self, images: "ImageInput | Sequence[ImageInput]") -> list[dict[str, float]]:
        """One ``{label: probability}`` per input, every label, in label order."""
        return [dict(zip(self.label_names, row.tolist(), strict=True)) for row in self.probabilities(images)]

    def labels(
        self, images: "ImageInput | Sequence[ImageInput]", top_k: int | None = None
    ) -> list[list[str]]:
        """Per input, the names of the labels whose probability reaches their threshold, most probable
        first; at most ``top_k`` of them when given."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}.")
        return [[self.label_names[k] for k in self.select(row, top_k)] for row in self.probabilities(images)]

    def select(self, probabilities: Sequence[float], top_k: int | None = None) -> list[int]:
        """Indices of the labels of one image's ``probabilities`` that reach this predictor's
        thresholds, most probable first, at most ``top_k``."""
        return select_labels(list(probabilities), self.thresholds.tolist(), top_k)


def _describe(item: Any, index: int) -> str:
    return str(item) if isinstance(item, pathlib.Path) else f"#{index} ({type(item).__name__})"

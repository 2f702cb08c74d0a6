"""Checkpoint files of the trainer, all written atomically (temporary file or folder, then a rename).

- ``last/`` and ``best/``: :func:`msrn.save_pretrained` folders (``config.json`` +
  ``model.safetensors``) that rebuild the model alone: ``timm.create_model("local-dir:DIR")`` or
  :func:`load_trained_model`; plus ``checkpoint.json`` (epoch, test mAP, validation mAP, image size).
  With a validation split, ``best/`` also holds the per-class thresholds fitted on it
  (``pretrained_cfg["label_thresholds"]``).
- ``train_state.pt``: everything ``--resume`` needs (model, EMA, optimizer, scheduler, grad scaler,
  epoch, best mAP, RNG states); it holds only tensors and plain Python values and is read with
  ``torch.load(weights_only=True)``.

A crash in the middle of a write leaves the previous file untouched; ``last/`` and ``best/`` are
replaced as whole folders, so their weights and ``checkpoint.json`` always belong to the same epoch.
"""

import io
import os
import pathlib
import pickle
import random
import zipfile
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .._io import atomic_write, read_json_file, replace_folder, to_json
from ..hub import save_pretrained
from ..models import load_model

__all__ = [
    "atomic_write",
    "save_model",
    "load_trained_model",
    "save_training_state",
    "load_training_state",
    "rng_state",
    "set_rng_state",
    "write_checkpoint_info",
    "read_checkpoint_info",
]


CHECKPOINT_INFO_NAME = "checkpoint.json"
# checkpoint.json holds a few numbers; anything larger is not the trainer's file.
_MAX_INFO_BYTES = 2**20


def save_model(
    model: nn.Module,
    directory: "os.PathLike[str] | str",
    info: dict[str, Any],
    label_thresholds: list[float] | None = None,
) -> None:
    """Write ``model`` with :func:`msrn.save_pretrained`, and ``info`` as ``checkpoint.json``, into a
    new folder that then replaces ``directory`` as a whole (:func:`msrn._io.replace_folder`).

    ``label_thresholds`` (one per label) are saved as the folder's
    ``pretrained_cfg["label_thresholds"]``; ``model`` itself is left unchanged."""

    def write(folder: pathlib.Path) -> None:
        cfg = getattr(model, "pretrained_cfg", None)
        if label_thresholds is not None:
            model.pretrained_cfg = {**(cfg or {}), "label_thresholds": [float(t) for t in label_thresholds]}
        try:
            save_pretrained(model, folder)
        finally:
            if label_thresholds is not None:
                model.pretrained_cfg = cfg
        write_checkpoint_info(folder, info)

    replace_folder(directory, write)


def write_checkpoint_info(directory: "os.PathLike[str] | str", info: dict[str, Any]) -> None:
    """Replace ``directory/checkpoint.json`` (epoch, test mAP, image size; strict JSON)."""
    text = to_json(info, indent=2) + "\n"
    atomic_write(
        pathlib.Path(directory) / CHECKPOINT_INFO_NAME, lambda path: pathlib.Path(path).write_text(text)
    )


def read_checkpoint_info(directory: "os.PathLike[str] | str") -> dict[str, Any]:
    """``directory/checkpoint.json`` read bounded and checked (empty when the file is absent).

    Raises:
        ValueError: naming the file, when it is not a JSON object with a positive integer image_size
            (or none), or not a regular file of at most 1 MiB.
    """
    info_file = pathlib.Path(directory) / CHECKPOINT_INFO_NAME
    if not os.path.lexists(info_file):
        return {}
    info = read_json_file(info_file, limit=_MAX_INFO_BYTES, advice="fix or delete the file")
    image_size = info.get("image_size") if isinstance(info, dict) else None
    if not isinstance(info, dict) or not (image_size is None or _is_positive_int(image_size)):
        raise ValueError(
            f"{info_file} must be a JSON object whose image_size is a positive integer (as the trainer "
            f"writes it), got {image_size!r}; fix or delete the file."
            if isinstance(info, dict)
            else f"{info_file} must be a JSON object (as the trainer writes it); fix or delete the file."
        )
    return info


def load_trained_model(directory: "os.PathLike[str] | str") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by the trainer (a ``last/`` or ``best/`` folder) in eval mode.

    Returns ``(model, info)``; ``info`` is the folder's ``checkpoint.json`` (empty when absent), with
    ``image_size`` defaulting to the model's configured input size.
    """
    directory = pathlib.Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"No saved model in {directory}: expected a folder with config.json and model.safetensors "
            f"(the best/ or last/ folder of a training run)."
        )
    info = read_checkpoint_info(directory)
    model = load_model(f"local-dir:{directory}")
    info.setdefault("image_size", int(model.pretrained_cfg.get("input_size", (3, 448, 448))[-1]))
    return model, info


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def rng_state() -> dict[str, Any]:
    """The RNG states of torch (CPU and CUDA), numpy and Python, as tensors and plain values."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": {"version": python_state[0], "state": list(python_state[1])},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate((state["python"]["version"], tuple(state["python"]["state"]), None))


class _WriteErrors(io.RawIOBase):
    """A binary file that remembers the ``OSError`` of a failed write. ``torch.save`` reports a failed
    write (a full disk) only as a ``RuntimeError`` ("unexpected pos ..."); this keeps the real one."""

    def __init__(self, file) -> None:
        super().__init__()
        self._file, self.error = file, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self._file.flush()


def _torch_save(state: dict[str, Any], path: str) -> None:
    try:
        torch.save(state, path)
    except RuntimeError:
        # torch.save reports a failed write (a full disk) only as "unexpected pos ...": write once
        # more through a Python file, whose error says why (or which succeeds, if space was freed).
        with open(path, "wb") as file:
            recorder = _WriteErrors(file)
            try:
                torch.save(state, recorder)
            except RuntimeError:
                if recorder.error is not None:
                    raise recorder.error from None
                raise


def save_training_state(path: "os.PathLike[str] | str", state: dict[str, Any]) -> None:
    """Write the resumable training state (tensors and plain values only). A failed write (a full
    disk) raises an ``OSError`` naming ``path``; the previous file stays."""
    atomic_write(path, lambda temporary: _torch_save(state, temporary))


# What train_state.pt always holds (written by msrn.engine.epoch.save_epoch).
_STATE_KEYS = ("epoch", "model", "optimizer", "rng", "model_config", "train_config")


def load_training_state(path: "os.PathLike[str] | str", map_location: str = "cpu") -> dict[str, Any]:
    """The state :func:`save_training_state` wrote to ``path`` (or to ``path/train_state.pt``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file, when it is empty, cut short, damaged or not a training state.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "train_state.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"No training state at {path}: --resume takes the output folder of an earlier run "
            f"(the one with train_state.pt) or the train_state.pt file itself."
        )
    advice = "restore it, or start the run again with --overwrite"
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        reason = "it is empty" if path.stat().st_size == 0 else f"{type(error).__name__}: {error}"
        raise ValueError(
            f"{path} is not a readable training state ({' '.join(reason.split())[:200]}): it was cut "
            f"short or damaged; {advice}."
        ) from None
    missing = [key for key in _STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path} is not a training state of msrn (it lacks {', '.join(missing)}); {advice}.")
    return state

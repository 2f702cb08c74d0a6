"""Checkpoint files of the trainer, all written atomically (temporary file, then ``os.replace``).

- ``<name>.safetensors``: the model's weights alone, with the model's construction arguments as
  JSON in the file's metadata (key ``msrn_config``), so :func:`load_model` rebuilds the model from the
  file alone (no training code, no data set).
- ``train_state.pt``: everything ``--resume`` needs (model, optimizer, scheduler, grad scaler, epoch,
  best mAP, RNG states); it holds only tensors and plain Python values and is read with
  ``torch.load(weights_only=True)``.

A crash in the middle of a write leaves the previous file untouched.
"""
import json
import os
import pathlib
import random
import tempfile
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = [
    "atomic_write", "save_model_weights", "load_model", "save_training_state", "load_training_state",
    "rng_state", "set_rng_state",
]

_CONFIG_KEY = "msrn_config"


def atomic_write(path: "os.PathLike[str] | str", write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)`` and move the result onto ``path`` in one ``os.replace``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as flushed:
            os.fsync(flushed.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_model_weights(model: nn.Module, path: "os.PathLike[str] | str", config: Dict[str, Any],
                       extra_metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``model``'s state dict as safetensors with ``config`` (``{"architecture", "kwargs"}``)."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {_CONFIG_KEY: json.dumps(config), **(extra_metadata or {})}
    atomic_write(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def read_metadata(path: "os.PathLike[str] | str") -> Dict[str, str]:
    with safe_open(os.fspath(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_model(path: "os.PathLike[str] | str", map_location: str = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the model saved by :func:`save_model_weights` and load its weights.

    Returns ``(model, metadata)``; ``metadata["config"]`` is the construction config.
    """
    from safetensors.torch import load_file

    from .. import create_model

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    metadata = read_metadata(path)
    if _CONFIG_KEY not in metadata:
        raise ValueError(f"{path} has no '{_CONFIG_KEY}' metadata: it was not written by the msrn trainer.")
    config = json.loads(metadata.pop(_CONFIG_KEY))
    state = load_file(os.fspath(path), device=map_location)
    kwargs = dict(config["kwargs"])
    if config.get("fixed_label_features"):
        kwargs["label_features"] = torch.zeros_like(state["label_features"], dtype=torch.float32)
    model = create_model(config["architecture"], pretrained=False, **kwargs)
    model.load_state_dict(state)
    metadata["config"] = config
    return model, metadata


def rng_state() -> Dict[str, Any]:
    """The RNG states of torch (CPU and CUDA), numpy and Python, as tensors and plain values."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": {"version": python_state[0], "state": list(python_state[1])},
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    random.setstate((state["python"]["version"], tuple(state["python"]["state"]), None))


def save_training_state(path: "os.PathLike[str] | str", state: Dict[str, Any]) -> None:
    """Write the resumable training state (tensors and plain values only)."""
    atomic_write(path, lambda temporary: torch.save(state, temporary))


def load_training_state(path: "os.PathLike[str] | str", map_location: str = "cpu") -> Dict[str, Any]:
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "train_state.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"No training state at {path}: --resume takes the output folder of an earlier run "
            f"(the one with train_state.pt) or the train_state.pt file itself."
        )
    return torch.load(path, map_location=map_location, weights_only=True)

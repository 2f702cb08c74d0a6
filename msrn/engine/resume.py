"""What ``--resume DIR`` may change: the settings of a run that can differ when it is continued.

A resumed run takes every setting from the run's saved configuration. The settings in
:data:`CHANGEABLE_ON_RESUME` may be given again with another value; the change is applied from the next
epoch and logged. Any other setting given with another value is refused: it would make the continued
run a different one (:func:`check_resume_changes` says which and why).
"""

import dataclasses
import json
import logging
import pathlib
from typing import Any

from .._io import atomic_write, to_json

__all__ = [
    "CHANGEABLE_ON_RESUME",
    "resume_folder",
    "saved_train_config",
    "save_train_config",
    "check_resume_changes",
]

_logger = logging.getLogger(__name__)

CHANGEABLE_ON_RESUME = (
    "epochs",  # the learning-rate schedule is rebuilt for the new total (LRSchedule.lengthened)
    "lr",  # the base learning rate, from the next epoch
    "stop_after_epoch",
    "max_steps_per_epoch",
    "workers",
    "threads",
    "device",
    "amp",
    "channels_last",
    "compile",
    "eval_batch_size",
    "progress",
)
# Fixed on purpose among the others: val_fraction, val_split and val_seed (what is trained on and
# what best/ is chosen on), ema and ema_warmup (the saved average was made with them).
# Settings of one invocation, never taken from the saved configuration.
_PER_INVOCATION = ("resume", "output_dir", "overwrite", "stop_after_epoch")

# Why the other settings are fixed, by their --help group.
_FIXED_BECAUSE = {
    "data": "the run's label graph, data order and test set come from its data",
    "model": "the saved weights belong to that model",
    "recipe": "the optimiser state and the data order were made with it",
    "execution": "the data order and the augmentation follow from it",
}
TRAIN_CONFIG_NAME = "train_config.json"


def resume_folder(resume: str) -> pathlib.Path:
    """The run folder named by ``--resume`` (the folder itself, or its ``train_state.pt``)."""
    path = pathlib.Path(resume)
    return path.parent if path.name == "train_state.pt" else path


def save_train_config(folder: pathlib.Path, config: Any) -> None:
    """Write ``config`` as ``folder/train_config.json`` (read back by :func:`saved_train_config`)."""
    text = to_json(config.to_dict(), indent=2) + "\n"
    atomic_write(folder / TRAIN_CONFIG_NAME, lambda path: pathlib.Path(path).write_text(text, "utf-8"))


def saved_train_config(folder: pathlib.Path) -> dict[str, Any]:
    """The settings a run folder was trained with (``train_config.json``, else ``train_state.pt``)."""
    if (folder / TRAIN_CONFIG_NAME).is_file():
        return json.loads((folder / TRAIN_CONFIG_NAME).read_text(encoding="utf-8"))
    from .checkpoint import load_training_state

    return json.loads(load_training_state(folder)["train_config"])


def config_fields(config_type: type, saved: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``config_type`` found in ``saved``, with JSON lists turned back into tuples."""
    values = {}
    for field in dataclasses.fields(config_type):
        if field.name in saved and field.name not in _PER_INVOCATION:
            value = saved[field.name]
            values[field.name] = tuple(value) if isinstance(value, list) else value
    unknown = set(saved) - {field.name for field in dataclasses.fields(config_type)}
    if unknown:
        _logger.warning(
            "The saved configuration has settings this version does not know: %s (ignored)",
            ", ".join(sorted(unknown)),
        )
    return values


def check_resume_changes(
    config_type: type, saved: dict[str, Any], wanted: dict[str, Any], folder: pathlib.Path
) -> list[str]:
    """Refuse settings of ``wanted`` that differ from ``saved`` and cannot change mid-run.

    Returns ``["name: old -> new", ...]`` for the changeable settings that differ.

    Raises:
        ValueError: naming each fixed setting given with another value, and why it is fixed.
    """
    changes, refused = [], {}
    for field in dataclasses.fields(config_type):
        name = field.name
        if name in _PER_INVOCATION or name not in wanted:
            continue
        old = saved.get(name, field.default if field.default is not dataclasses.MISSING else None)
        if json.loads(to_json(old)) == json.loads(to_json(wanted[name])):
            continue
        if name in CHANGEABLE_ON_RESUME:
            changes.append(f"{name}: {old} -> {wanted[name]}")
        else:
            refused.setdefault(field.metadata.get("group", "execution"), []).append(
                f"--{name.replace('_', '-')} {old} -> {wanted[name]}"
            )
    if refused:
        reasons = "; ".join(
            f"{', '.join(items)} ({_FIXED_BECAUSE.get(group, 'the run was made with it')})"
            for group, items in refused.items()
        )
        raise ValueError(
            f"--resume {folder}: these settings cannot change in the middle of a run: {reasons}. Drop them "
            f"to continue the run, or start a new run in another --output-dir."
        )
    return changes

"""What ``--resume DIR`` may change: the settings of a run that can differ when it is continued.

A resumed run takes every setting from the run's saved configuration. The settings in
:data:`CHANGEABLE_ON_RESUME` may be given again with another value; the change is applied from the next
epoch and logged. Any other setting given with another value is refused: it would make the continued
run a different one (:func:`check_resume_changes` says which and why).
"""

import dataclasses
import json
import logging
import os
import pathlib
import types
import typing
from typing import Any

from .._io import atomic_write, read_json_file, to_json

__all__ = [
    "damaged_advice",
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
_MAX_SETTINGS_BYTES = 2**20  # the settings of a run take about 2 kB


def resume_folder(resume: str) -> pathlib.Path:
    """The run folder named by ``--resume`` (the folder itself, or its ``train_state.pt``)."""
    path = pathlib.Path(resume)
    return path.parent if path.name == "train_state.pt" else path


def save_train_config(folder: pathlib.Path, config: Any) -> None:
    """Write ``config`` as ``folder/train_config.json`` (read back by :func:`saved_train_config`)."""
    text = to_json(config.to_dict(), indent=2) + "\n"
    atomic_write(folder / TRAIN_CONFIG_NAME, lambda path: pathlib.Path(path).write_text(text, "utf-8"))


def damaged_advice(path: "os.PathLike[str] | str") -> str:
    """What to do about a damaged file of the run's settings."""
    if pathlib.Path(path).name == TRAIN_CONFIG_NAME:
        return "it is damaged: restore it, or delete it to use the copy of the settings in train_state.pt"
    return "it is damaged: restore it, or start the run again with --overwrite"


def settings_file(folder: pathlib.Path) -> pathlib.Path:
    """Where :func:`saved_train_config` reads a run's settings: ``train_config.json``, else
    ``train_state.pt``."""
    path = folder / TRAIN_CONFIG_NAME
    return path if os.path.lexists(path) else folder / "train_state.pt"


def saved_train_config(folder: pathlib.Path) -> dict[str, Any]:
    """The settings a run folder was trained with (``train_config.json``, else ``train_state.pt``).

    Raises:
        ValueError: naming the file, when it is not a JSON object (cut short, damaged, edited).
    """
    path = settings_file(folder)
    if path.name == TRAIN_CONFIG_NAME:
        # bounded: a link to /dev/zero or a huge file is refused, not read
        saved = read_json_file(path, limit=_MAX_SETTINGS_BYTES, advice=damaged_advice(path))
    else:
        from .checkpoint import load_training_state

        text = load_training_state(folder).get("train_config")
        try:
            saved = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            saved = None
    if not isinstance(saved, dict):
        raise ValueError(
            f"{path} does not hold the run's settings (a JSON object of setting: value); "
            f"{damaged_advice(path)}."
        )
    return saved


def config_fields(
    config_type: type, saved: dict[str, Any], source: "os.PathLike[str] | str" = ""
) -> dict[str, Any]:
    """The fields of ``config_type`` found in ``saved``, with JSON lists turned back into tuples.

    Raises:
        ValueError: a value of the wrong type (``"epochs": "x"``), naming ``source`` and the setting.
    """
    hints = typing.get_type_hints(config_type)
    values = {}
    for field in dataclasses.fields(config_type):
        if field.name in saved and field.name not in _PER_INVOCATION:
            value = saved[field.name]
            if not _fits(hints[field.name], value):
                raise ValueError(
                    f"{source or 'the saved settings'}: setting {field.name!r} is {value!r}, not "
                    f"{_kind(hints[field.name])}; {damaged_advice(source)}."
                )
            values[field.name] = tuple(value) if isinstance(value, list) else value
    unknown = set(saved) - {field.name for field in dataclasses.fields(config_type)}
    if unknown:
        _logger.warning(
            "The saved configuration has settings this version does not know: %s (ignored)",
            ", ".join(sorted(unknown)),
        )
    return values


def _fits(annotation: Any, value: Any) -> bool:
    """Whether the JSON ``value`` can be the value of a field annotated ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple:
        (item, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_fits(item, v) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True


def _kind(annotation: Any) -> str:
    """``annotation`` in words: ``an integer``, ``a number or null``, ``a list of numbers``."""
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(_kind(arg) for arg in args) + " or null"
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        return f"a list of {_kind(item).removeprefix('an ').removeprefix('a ')}s"
    if typing.get_origin(annotation) is dict:
        return "a JSON object"
    return words.get(annotation, str(annotation))


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else None


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
        old = saved.get(name, _default(field))
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

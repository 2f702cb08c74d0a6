"""The output folder of a training run: what marks it as used, who may write it, and its log.

- A folder *holds a run* when it has ``train_state.pt``, ``log.jsonl``, ``last/`` or ``best/``.
- One process writes a folder at a time: :class:`RunFolderLock` holds an operating-system lock on
  ``.train.lock`` (``filelock``; on file systems without locks, a lock file naming the process and
  host, taken over when that process is gone). The operating system drops the lock when its process
  ends in any way, SIGKILL included, so the lock of a killed run never blocks the next one.
- ``log.jsonl``: one JSON object per finished epoch, strict JSON (``null`` for a missing number).
"""

import datetime
import json
import logging
import os
import pathlib
import shutil
import socket
from typing import Any

import filelock

from .._io import atomic_write, to_json

__all__ = [
    "RunFolderError",
    "RunFolderLock",
    "RUN_FILES",
    "run_files_in",
    "clear_run",
    "read_log",
    "append_log",
    "write_log",
]

_logger = logging.getLogger(__name__)

# What a run leaves in its folder; any of the first four means the folder holds a run.
RUN_FILES = ("train_state.pt", "log.jsonl", "last", "best", "train_config.json", "splits.json")
_WORK_FILES = RUN_FILES[:4]
LOCK_NAME = ".train.lock"
OWNER_NAME = ".train-owner.json"
LOG_NAME = "log.jsonl"


class RunFolderError(ValueError):
    """An output folder that cannot be used as asked (holds another run, or is being written)."""


def run_files_in(folder: "os.PathLike[str] | str") -> list[str]:
    """The names of ``folder`` that show it holds a run (empty when it holds none)."""
    folder = pathlib.Path(folder)
    return [name for name in _WORK_FILES if (folder / name).exists()]


def clear_run(folder: "os.PathLike[str] | str") -> None:
    """Delete the files of a run from ``folder`` (other files stay)."""
    folder = pathlib.Path(folder)
    for name in RUN_FILES:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


class RunFolderLock:
    """The right to write a run folder, for as long as this process lives or until :meth:`release`."""

    def __init__(self, folder: "os.PathLike[str] | str") -> None:
        self.folder = pathlib.Path(folder)
        self._lock = filelock.FileLock(str(self.folder / LOCK_NAME), timeout=0)

    def acquire(self) -> "RunFolderLock":
        """Take the lock, or raise :class:`RunFolderError` naming the process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise RunFolderError(
                f"{self.folder} is being written by another training process ({self._owner()}); wait "
                f"for it to finish or stop it, or choose another --output-dir."
            ) from None
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        atomic_write(self.folder / OWNER_NAME, lambda path: pathlib.Path(path).write_text(json.dumps(owner)))
        return self

    def _owner(self) -> str:
        try:
            owner = json.loads((self.folder / OWNER_NAME).read_text())
            return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "its pid is unknown"

    def release(self) -> None:
        if self._lock.is_locked:
            (self.folder / OWNER_NAME).unlink(missing_ok=True)
            self._lock.release()


def read_log(folder: "os.PathLike[str] | str") -> list[dict[str, Any]]:
    """The records of ``folder/log.jsonl`` in order; a line cut short by a crash is left out."""
    path = pathlib.Path(folder) / LOG_NAME
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            _logger.warning("%s line %d is not JSON (cut short by a crash?); left out", path, number)
    return records


def write_log(folder: "os.PathLike[str] | str", records: list[dict[str, Any]]) -> None:
    """Replace ``log.jsonl`` with ``records`` (atomically)."""
    text = "".join(to_json(record) + "\n" for record in records)
    atomic_write(pathlib.Path(folder) / LOG_NAME, lambda path: pathlib.Path(path).write_text(text, "utf-8"))


def append_log(folder: "os.PathLike[str] | str", record: dict[str, Any]) -> None:
    """Add ``record`` as one line of ``log.jsonl`` and flush it to disk."""
    with open(pathlib.Path(folder) / LOG_NAME, "a", encoding="utf-8") as log:
        log.write(to_json(record) + "\n")
        log.flush()
        os.fsync(log.fileno())

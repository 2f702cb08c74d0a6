"""File writing shared by the hub, the trainer and the converter."""
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Union

__all__ = ["atomic_write"]


def atomic_write(path: Union[str, "os.PathLike[str]"], write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, flush it to disk and move it onto ``path`` in one ``os.replace``.

    A crash in the middle leaves the previous file (or no file) under ``path``, never a truncated one.
    The parent folder is created when missing. An ``OSError`` while writing (a full disk, no
    permission) is raised again as an ``OSError`` whose message names ``path``.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as flushed:
            os.fsync(flushed.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
            reason = error.strerror or str(error)
            raise OSError(error.errno, f"Cannot write {path}: {reason} (nothing was replaced; free some "
                                       f"space or choose another folder)") from error
        raise

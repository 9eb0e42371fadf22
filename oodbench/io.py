"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename.

An interrupted process therefore leaves either the old file or the new one, never half of one. A
write that fails (disk full, permissions) removes its temporary file and raises :class:`WriteError`,
which names the file and leaves whatever was there before untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from oodbench.errors import OodbenchError


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a written file gets the mode a plain open() would give it instead,
# so that a cache or results folder shared by a group stays readable by the group.
FILE_MODE = 0o666 & ~_current_umask()


class WriteError(OodbenchError, OSError):
    """A file could not be written (disk full, read-only, permissions); the message names it."""


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file, then rename it onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise _write_error(path, e) from e
        raise
    _fsync_dir(path.parent)


def _write_error(path: Path, e: OSError) -> WriteError:
    return WriteError(
        f"could not write {path} ({e.strerror or e}); nothing was written there and any earlier "
        "version is intact. Free disk space or fix permissions, then rerun (finished work is kept)"
    )


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable across a power cut (best effort; not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (utf-8) atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    atomic_write_text(path, text + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save one array as .npy atomically (never a pickle)."""
    atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Save named arrays as a compressed .npz atomically."""
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")

"""Advisory file locks, so that processes sharing a cache never write or build one entry at once.

A :class:`FileLock` is an exclusive ``fcntl.flock`` on a small lock file. The kernel drops it when
the holder's file is closed or its process dies, so a SIGKILLed run never leaves a stale lock.
Within one process the lock is re-entrant (flock would otherwise deadlock a process against
itself). Lock files are never deleted: removing one while another process waits on it would let
two holders in. On platforms without ``fcntl`` the lock is a no-op (one process per cache there).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from oodbench.errors import OodbenchError

_HELD: dict[str, list[int]] = {}  # path -> [fd, depth] for locks this process holds
_GUARD = threading.RLock()


class LockError(OodbenchError, OSError):
    """A lock file cannot be created (the cache folder is not a writable folder)."""


class FileLock:
    """Exclusive inter-process lock on ``path``; ``what`` is said once when it has to wait."""

    def __init__(self, path: Path | str, what: str = "", poll_s: float = 0.05):
        self.path = str(Path(path))
        self.what = what
        self.poll_s = poll_s

    def acquire(self) -> None:
        """Block until this process holds the lock (immediately if it already does)."""
        with _GUARD:
            if self.path in _HELD:
                _HELD[self.path][1] += 1
                return
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                try:  # 0o666 less the umask, like any new file: a group can share the cache
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                except PermissionError as denied:  # another user's lock: flock needs no write
                    try:
                        fd = os.open(self.path, os.O_RDONLY)
                    except FileNotFoundError:  # no lock file, and no right to create one
                        raise denied from None
            except OSError as e:
                raise LockError(
                    f"cannot create the lock file {self.path} ({e.strerror or e}); "
                    f"{Path(self.path).parent.parent} must be a folder this user can write to "
                    "(check --cache-dir / $OODBENCH_CACHE)"
                ) from None
            try:
                self._lock_fd(fd)
            except BaseException:
                os.close(fd)
                raise
            _HELD[self.path] = [fd, 1]
            _note_holder(fd)

    def _lock_fd(self, fd: int) -> None:
        if fcntl is None:
            return
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if self.what and not said:
                    print(f"oodbench: waiting for {self.what} (another process, {_holder(fd)}, is "
                          "working on it)", file=sys.stderr)
                    said = True
                time.sleep(self.poll_s)

    def release(self) -> None:
        """Give the lock up (the outermost release of a re-entrant hold unlocks the file)."""
        with _GUARD:
            held = _HELD.get(self.path)
            if held is None:
                return
            held[1] -= 1
            if held[1] == 0:
                del _HELD[self.path]
                os.close(held[0])  # closing the file drops the flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, et: type | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def held_by_me(path: Path | str) -> bool:
    """Whether this process holds the lock on ``path`` (for tests and assertions)."""
    return str(Path(path)) in _HELD


def _note_holder(fd: int) -> None:
    """Write the holder's pid into the lock file, so that a waiting process can name it."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    except OSError:
        pass


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "pid unknown"
    except OSError:
        return "pid unknown"

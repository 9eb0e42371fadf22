"""Progress and status lines, silenced by ``--quiet``.

``say`` logs through the ``oodbench`` logger (:mod:`oodbench.logs`). ``progress`` gives a rich bar
on a terminal and, when stderr is a file or a pipe (nohup, SLURM, CI), a :class:`PlainProgress`
with the same ``add_task``/``update``/``advance`` calls that logs one line per task every
``PLAIN_EVERY_S`` seconds (set, images done, img/s, ETA) and one when the task finishes, so a long
extraction leaves a readable trace instead of nothing. ``phase`` logs what a step longer than a
second is doing (world generation, readability check, mining, training) and how long it took.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
PLAIN_EVERY_S = float(os.environ.get("OODBENCH_PROGRESS_EVERY", "") or 30.0)


def say(message: str, quiet: bool = False) -> None:
    """Log a status line (rich markup allowed) unless quiet."""
    if not quiet:
        from oodbench.logs import logger

        logger().info(message, extra={"markup": True})


@contextmanager
def phase(what: str, quiet: bool = False) -> Iterator[None]:
    """Say ``what`` is being done before a step that may take a while, and its time after."""
    t0 = time.perf_counter()
    say(f"{what} ...", quiet)
    yield
    dt = time.perf_counter() - t0
    if dt >= 1.0:
        say(f"{what}: done in {dt:.1f}s", quiet)


@contextmanager
def progress(quiet: bool = False, terminal: bool | None = None,
             every_s: float | None = None) -> Iterator[Progress | PlainProgress]:
    """A rich Progress on a terminal, plain periodic lines otherwise, nothing when quiet."""
    if terminal is None:
        terminal = sys.stderr.isatty()
    if not terminal and not quiet:
        yield PlainProgress(PLAIN_EVERY_S if every_s is None else every_s)
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet, transient=False,
    )
    with bar:
        yield bar


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    extra: str
    start: float
    t0: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)
    finished: bool = False


class PlainProgress:
    """The calls of rich's Progress that oodbench makes, as log lines every ``every_s`` seconds:
    ``extract toy-id: 1,024/5,000 images, 85.3 img/s, ETA 0:00:46``."""

    def __init__(self, every_s: float = PLAIN_EVERY_S):
        self.every_s = every_s
        self.tasks: dict[int, _Task] = {}
        self.lines: list[str] = []  # what was logged (kept for tests)

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **fields) -> int:
        """Start a task; returns its id."""
        tid = len(self.tasks)
        self.tasks[tid] = _Task(description, total, completed, str(fields.get("extra", "")),
                                start=completed)
        return tid

    def update(self, task_id: int, completed: float | None = None, advance: float = 0,
               **fields) -> None:
        """Set or advance a task's count; logs when due or finished."""
        t = self.tasks[task_id]
        if completed is not None:
            t.completed = completed
        t.completed += advance
        if "extra" in fields:
            t.extra = str(fields["extra"])
        self._maybe_log(t)

    def advance(self, task_id: int, advance: float = 1) -> None:
        """Add ``advance`` to a task's count."""
        self.update(task_id, advance=advance)

    def remove_task(self, task_id: int) -> None:
        """Forget a task."""
        self.tasks.pop(task_id, None)

    def line(self, t: _Task) -> str:
        """``desc: done/total images, rate img/s, ETA h:mm:ss``."""
        elapsed = max(1e-9, time.perf_counter() - t.t0)
        rate = (t.completed - t.start) / elapsed
        total = f"/{int(t.total):,}" if t.total is not None else ""
        text = f"{t.description}: {int(t.completed):,}{total} images, {rate:.1f} img/s"
        if t.total is not None and t.completed >= t.total:
            text += f", done in {timedelta(seconds=int(elapsed))}"
        elif t.total is not None and rate > 0:
            text += f", ETA {timedelta(seconds=int((t.total - t.completed) / rate))}"
        return text + (f" ({t.extra})" if t.extra else "")

    def _maybe_log(self, t: _Task) -> None:
        if t.finished:
            return
        now = time.perf_counter()
        done = t.total is not None and t.completed >= t.total
        if done or now - t.last >= self.every_s:
            t.last = now
            t.finished = done
            text = self.line(t)
            self.lines.append(text)
            from oodbench.logs import logger

            logger().info(text)

"""Rich progress bars and console messages, silenced by ``--quiet``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

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


def say(message: str, quiet: bool = False) -> None:
    """Print a status line to stderr unless quiet."""
    if not quiet:
        console.print(message, highlight=False)


@contextmanager
def progress(quiet: bool = False) -> Iterator[Progress]:
    """A rich Progress (disabled when quiet or when stderr is not a terminal and CI is set)."""
    disable = quiet or not sys.stderr.isatty()
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=disable, transient=False,
    )
    with bar:
        yield bar

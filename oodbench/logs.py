"""oodbench's log output: the standard ``logging`` module, shown through rich on a terminal.

Everything oodbench says while it works goes through the ``oodbench`` logger (``say`` in
:mod:`oodbench.progress` is a shorthand), so a script can silence, redirect or format it like any
library's. :func:`setup_logging` installs one handler: rich's ``RichHandler`` when stderr is a
terminal (markup rendered, above any live progress bar), else plain ``HH:MM:SS message`` lines with
the markup stripped, for log files and batch jobs. Only ``say``'s records are read as rich markup
(``extra={"markup": True}``): other loggers' brackets stay as they are. The command line calls it
once per command (``-q/--quiet`` keeps warnings and errors only) and also routes the root logger's
warnings (open_clip logs there) through the same handler; as a library, oodbench sets its handler
up on first use and leaves the root logger alone.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "oodbench"
_HANDLER_FLAG = "_oodbench_handler"


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler that writes to whatever ``sys.stderr`` is when it emits (test captures,
    redirections made after set-up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


class PlainFormatter(logging.Formatter):
    """``HH:MM:SS message``, with rich markup removed from the records that carry it (``say``'s:
    ``extra={"markup": True}``); warnings and errors name their level and, when not oodbench's,
    their logger."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        text = strip_markup(text) if getattr(record, "markup", False) else text
        if record.levelno >= logging.WARNING:
            who = "" if record.name == LOGGER else f" [{record.name}]"
            text = text.replace(" ", f" {record.levelname.lower()}{who}: ", 1)
        return text


def strip_markup(text: str) -> str:
    """``text`` without rich markup tags (unchanged when it is not valid markup)."""
    from rich.errors import MarkupError
    from rich.text import Text

    try:
        return Text.from_markup(text).plain
    except MarkupError:
        return text


def make_handler(terminal: bool | None = None) -> logging.Handler:
    """RichHandler on a terminal, else plain lines on stderr."""
    if terminal is None:
        terminal = sys.stderr.isatty()
    if terminal:
        from rich.logging import RichHandler

        from oodbench.progress import console

        handler: logging.Handler = RichHandler(console=console, markup=False, show_path=False,
                                               show_level=True, log_time_format="%H:%M:%S",
                                               rich_tracebacks=False)
    else:
        handler = _StderrHandler()
        handler.setFormatter(PlainFormatter())
    setattr(handler, _HANDLER_FLAG, True)
    return handler


def setup_logging(quiet: bool = False, root: bool = True, terminal: bool | None = None) -> None:
    """Show oodbench's messages (INFO, or WARNING and above when ``quiet``) through one handler;
    with ``root``, the root logger's warnings (open_clip's) through the same handler."""
    log = logging.getLogger(LOGGER)
    for h in [h for h in log.handlers if getattr(h, _HANDLER_FLAG, False)]:
        log.removeHandler(h)
    handler = make_handler(terminal)
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    if root:
        top = logging.getLogger()
        for h in [h for h in top.handlers if getattr(h, _HANDLER_FLAG, False)]:
            top.removeHandler(h)
        top.addHandler(handler)
        if top.level == logging.NOTSET or top.level > logging.WARNING:
            top.setLevel(logging.WARNING)


def logger() -> logging.Logger:
    """The ``oodbench`` logger, with its handler set up on first use (library callers)."""
    log = logging.getLogger(LOGGER)
    if not any(getattr(h, _HANDLER_FLAG, False) for h in log.handlers):
        setup_logging(root=False)
    return log


class quieted:
    """Context manager: the ``oodbench`` logger at WARNING while it is held (a quiet run's
    messages from deep inside, e.g. negative mining, stay quiet too)."""

    def __init__(self, quiet: bool = True):
        self.quiet = quiet

    def __enter__(self) -> quieted:
        self.log = logger()
        self.level = self.log.level
        if self.quiet:
            self.log.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc) -> None:
        self.log.setLevel(self.level)


class cli_logging:
    """Context manager for one command: :func:`setup_logging`, then the loggers as they were
    (a command run in-process, by a test or a notebook, leaves no handler or level behind)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def __enter__(self) -> cli_logging:
        log, top = logging.getLogger(LOGGER), logging.getLogger()
        self.saved = (log.level, list(log.handlers), log.propagate, top.level, list(top.handlers))
        setup_logging(quiet=self.quiet)
        return self

    def __exit__(self, *exc) -> None:
        log, top = logging.getLogger(LOGGER), logging.getLogger()
        level, handlers, propagate, top_level, top_handlers = self.saved
        log.setLevel(level)
        log.handlers[:] = handlers
        log.propagate = propagate
        top.setLevel(top_level)
        top.handlers[:] = top_handlers

"""Errors that speak to the user: what went wrong, where, and what to do.

The CLI prints an ``OodbenchError`` as one message (no traceback) and exits with code 2.
"""

from __future__ import annotations

import reprlib

_SHORT = reprlib.Repr()  # keyword arguments only from Python 3.12
for _name, _limit in (("maxlevel", 3), ("maxtuple", 5), ("maxlist", 5), ("maxarray", 5),
                      ("maxdict", 5), ("maxset", 5), ("maxfrozenset", 5), ("maxdeque", 5),
                      ("maxstring", 80), ("maxlong", 40), ("maxother", 80)):
    setattr(_SHORT, _name, _limit)


def short_repr(value: object) -> str:
    """A bounded repr for messages: a YAML alias bomb (a tiny file that expands exponentially)
    or a 50 MB string is shown by its start, never formatted whole."""
    return _SHORT.repr(value)


class OodbenchError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class ConfigError(OodbenchError, ValueError):
    """A run spec or hyperparameter is malformed; the message names the field."""


class DataError(OodbenchError):
    """A dataset is missing, incomplete or unreadable; the message names the files and the fix."""


class BackboneError(OodbenchError):
    """A backbone or its weights cannot be loaded; the message says how to supply them."""

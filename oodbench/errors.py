"""Errors that speak to the user: what went wrong, where, and what to do.

The CLI prints an ``OodbenchError`` as one message (no traceback) and exits with code 2.
"""

from __future__ import annotations


class OodbenchError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class ConfigError(OodbenchError, ValueError):
    """A run spec or hyperparameter is malformed; the message names the field."""


class DataError(OodbenchError):
    """A dataset is missing, incomplete or unreadable; the message names the files and the fix."""


class BackboneError(OodbenchError):
    """A backbone or its weights cannot be loaded; the message says how to supply them."""

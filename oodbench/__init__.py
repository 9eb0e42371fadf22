"""oodbench: a benchmark harness for OOD detection with vision-language models.

Importing the package is light (no torch, no pandas): registries hold lazy entries until one is
used, and the Python API (:mod:`oodbench.api`: ``evaluate``, ``load_results``, ``table``,
``score``) is imported on first use.
"""

from typing import Any

from oodbench import backbones as _backbones  # noqa: F401  (registers built-in backbones)
from oodbench import detectors as _detectors  # noqa: F401  (registers built-in detectors)
from oodbench import protocols as _protocols  # noqa: F401  (registers built-in protocols)
from oodbench.registry import BACKBONES, DETECTORS, PROTOCOLS

__version__ = "0.1.0"
_API = ("evaluate", "load_results", "table", "score")
__all__ = ["BACKBONES", "DETECTORS", "PROTOCOLS", "__version__", *_API]


def __getattr__(name: str) -> Any:
    """The API functions, imported from :mod:`oodbench.api` when first asked for."""
    if name in _API:
        from oodbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'oodbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})

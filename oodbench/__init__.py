"""oodbench: a benchmark harness for OOD detection with vision-language models.

Importing the package is light (no torch): registries hold lazy entries until one is used.
"""

from oodbench import backbones as _backbones  # noqa: F401  (registers built-in backbones)
from oodbench import detectors as _detectors  # noqa: F401  (registers built-in detectors)
from oodbench import protocols as _protocols  # noqa: F401  (registers built-in protocols)
from oodbench.registry import BACKBONES, DETECTORS, PROTOCOLS

__version__ = "0.1.0"
__all__ = ["BACKBONES", "DETECTORS", "PROTOCOLS", "__version__"]

"""Feature extraction and the content-addressed cache (text embeddings, image features, scores).

Importing the package registers every built-in feature kind (``global`` in ``extract``, ``local``
in ``local``), so a detector that needs a kind only names it.
"""

from oodbench.features import local as _local  # noqa: F401  (registers the "local" kind)

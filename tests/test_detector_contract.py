"""The detector contract, checked over every registered detector on the toy world.

The checks ship in :mod:`oodbench.testing` (a plugin author runs them with ``pytest --pyargs
oodbench.testing --detector NAME``); this file runs them over every built-in detector. Each
detector must: score in the documented direction (higher = more in-distribution), be deterministic
given the seed, predict valid ID classes, and reject unknown or ill-typed hyperparameters naming
the field. Trainable detectors run a smoke schedule (``max_steps``).
"""

from __future__ import annotations

import pytest

import oodbench
from oodbench import testing


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("contract-cache")


@pytest.mark.parametrize("name", oodbench.DETECTORS.names())
def test_detector_direction_and_predictions(name, cache, tmp_path):
    testing.check_direction(name, cache, tmp_path)


@pytest.mark.slow  # two cold runs per detector
@pytest.mark.parametrize("name", oodbench.DETECTORS.names())
def test_detector_is_deterministic_given_the_seed(name, tmp_path):
    testing.check_determinism(name, tmp_path)


@pytest.mark.parametrize("name", oodbench.DETECTORS.names())
def test_hyperparameters_are_validated_by_name(name):
    testing.check_hyperparameters(name)


@pytest.mark.parametrize("name", oodbench.DETECTORS.names())
def test_detector_declares_its_contract(name):
    testing.check_declarations(name)


def test_the_contract_fails_a_detector_that_breaks_it(cache, tmp_path):
    """The shipped direction check catches a detector scoring the wrong way round (so a plugin
    that passes it does keep the contract)."""
    import torch

    from oodbench.detectors.base import ZeroShotDetector
    from oodbench.registry import DETECTORS

    class Backwards(ZeroShotDetector):
        """Largest cosine, negated: an OOD score where an ID score is due."""

        version = "1"

        def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
            return -s.max(dim=1).values

    name = "test-backwards"
    DETECTORS.register(name)(Backwards)
    try:
        testing.check_declarations(name)
        with pytest.raises(AssertionError, match="higher for ID"):
            testing.check_direction(name, cache, tmp_path)
    finally:
        del DETECTORS._entries[name]  # other tests list the registry

"""The contract cases, one per check (see :mod:`oodbench.testing`)."""

from __future__ import annotations

from oodbench import testing


def test_declarations(detector_name):
    testing.check_declarations(detector_name)


def test_hyperparameters_are_validated_by_name(detector_name):
    testing.check_hyperparameters(detector_name)


def test_direction_and_predictions(detector_name, tmp_path):
    testing.check_direction(detector_name, tmp_path / "cache", tmp_path / "results")


def test_deterministic_given_the_seed(detector_name, tmp_path):
    testing.check_determinism(detector_name, tmp_path)

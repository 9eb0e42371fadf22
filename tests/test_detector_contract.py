"""The detector contract, checked over every registered detector on the toy world.

Each detector must: score in the documented direction (higher = more in-distribution), be
deterministic given the seed, predict valid ID classes, and reject unknown or ill-typed
hyperparameters naming the field. Trainable detectors run a smoke schedule (``max_steps``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import oodbench
from oodbench.detectors.base import PRECISIONS, resolve_precision
from oodbench.errors import ConfigError
from oodbench.runner import RunSpec, run

LIMIT = 120  # images per set: enough for a stable direction check, small enough for CPU
SMOKE_STEPS = 8
SMOKE_BATCH = 32
SMOKE_SHOTS = 8  # LIMIT leaves 12 training images per toy class where the split is limited too
# On toy world v3 (ID images with texture patches), 8 LoCoOp steps of batch 32 from its random
# context leave far AUROC at 0.53 on the first 120 far images (all stripes): the entropy term's
# first steps flatten the prompts (0.90 with lambda_en=0, 0.88 at batch 8). Its full toy runs are
# fine (far AUROC 91.4, docs/toy.md); the smoke run takes smaller steps.
SMOKE_OVERRIDES = {"locoop": {"batch_size": 8}}


def smoke_params(name: str) -> dict:
    """Hyperparameters that keep a trainable detector's training to a few steps."""
    fields = {f.name for f in dataclasses.fields(oodbench.DETECTORS.get(name).Params)}
    smoke = {"max_steps": SMOKE_STEPS, "batch_size": SMOKE_BATCH, "shots": SMOKE_SHOTS,
             **SMOKE_OVERRIDES.get(name, {})}
    return {k: v for k, v in smoke.items() if k in fields}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("contract-cache")


def _run(name, cache, results, seed=0):
    spec = RunSpec(detectors=[name], protocol="toy", backbone="toy", seeds=[seed],
                   params={name: smoke_params(name)}, cache_dir=str(cache),
                   results_dir=str(results), limit=LIMIT, workers=0, quiet=True)
    (rec,) = run(spec)
    return rec


@pytest.mark.parametrize("name", oodbench.DETECTORS.names())
def test_detector_direction_and_predictions(name, cache, tmp_path):
    rec = _run(name, cache, tmp_path)
    assert rec.metrics["far"]["auroc"] > 0.6, "scores must be higher for ID than for far OOD"
    assert 0.0 <= rec.id_accuracy <= 1.0
    saved = np.load(next((tmp_path / "runs/toy/toy").rglob(rec.scores_file)))
    for key in saved.files:
        if key.startswith("scores/"):
            assert np.isfinite(saved[key]).all(), f"{key} has non-finite scores"
        if key.startswith("preds/"):
            assert ((saved[key] >= 0) & (saved[key] < 10)).all(), f"{key} predicts a bad class"


@pytest.mark.slow  # two cold runs per detector
@pytest.mark.parametrize("name", oodbench.DETECTORS.names())
def test_detector_is_deterministic_given_the_seed(name, tmp_path):
    a = _run(name, tmp_path / "c1", tmp_path / "r1")
    b = _run(name, tmp_path / "c2", tmp_path / "r2")
    assert a.metrics == b.metrics
    assert a.id_accuracy == b.id_accuracy


@pytest.mark.parametrize("name", oodbench.DETECTORS.names())
def test_hyperparameters_are_validated_by_name(name):
    cls = oodbench.DETECTORS.get(name)
    with pytest.raises(ConfigError, match="no_such_field"):
        cls({"no_such_field": 1})
    for f in dataclasses.fields(cls.Params):
        with pytest.raises(ConfigError, match=f.name):
            cls({f.name: object()})


@pytest.mark.parametrize("name", oodbench.DETECTORS.names())
def test_detector_declares_its_contract(name):
    cls = oodbench.DETECTORS.get(name)
    assert cls.version and isinstance(cls.version, str)
    assert cls.needs and cls.needs <= {"global", "local", "train", "images"}
    assert oodbench.DETECTORS.describe(name), "every detector needs a one-line description"
    assert cls.precision in PRECISIONS, f"precision {cls.precision!r} is not one of {PRECISIONS}"
    assert isinstance(cls.precision_reason, str) and cls.precision_reason.strip()
    for requested in PRECISIONS:  # never below what the detector tolerates, never above fp32
        used, why = resolve_precision(requested, cls)
        assert PRECISIONS.index(used) == max(PRECISIONS.index(requested),
                                             PRECISIONS.index(cls.precision)), why
    defaults = cls().params
    defaults.validate()

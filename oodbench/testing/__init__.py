"""The detector contract, shipped: check any registered detector, a plugin's included.

A plugin author runs the same checks oodbench runs on its own detectors, without copying its
tests::

    pytest --pyargs oodbench.testing --detector NAME        # one pytest case per check
    python -c "from oodbench.testing import check_detector; check_detector('NAME')"

Each check raises ``AssertionError`` (or the detector's own error) saying what is wrong:

- :func:`check_declarations`: ``version``, ``needs``, a description, ``precision`` and its reason,
  valid default hyperparameters;
- :func:`check_hyperparameters`: an unknown or ill-typed hyperparameter is refused, naming it;
- :func:`check_direction`: on the toy world, scores are finite, higher for ID than for far OOD
  (AUROC > 0.6), predictions are valid ID classes;
- :func:`check_determinism`: two cold runs with one seed give the same metrics.

The runs use the built-in ``toy`` protocol and backbone (generated on first use, CPU minutes) with a
smoke schedule for trainable detectors (``max_steps``, ``batch_size``, ``shots`` when they exist).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

LIMIT = 120  # images per set: enough for a stable direction check, small enough for CPU
SMOKE_STEPS = 8
SMOKE_BATCH = 32
SMOKE_SHOTS = 8  # LIMIT leaves 12 training images per toy class where the split is limited too
# On toy world v3 (ID images with texture patches), 8 LoCoOp steps of batch 32 from its random
# context leave far AUROC at 0.53 on the first 120 far images (all stripes): the entropy term's
# first steps flatten the prompts (0.90 with lambda_en=0, 0.88 at batch 8). Its full toy runs are
# fine (docs/toy.md); its smoke run takes smaller steps.
SMOKE_OVERRIDES = {"locoop": {"batch_size": 8}}
TOY_CLASSES = 10
MIN_FAR_AUROC = 0.6

__all__ = ["check_declarations", "check_detector", "check_determinism", "check_direction",
           "check_hyperparameters", "smoke_params"]


def smoke_params(name: str) -> dict:
    """Hyperparameters that keep a trainable detector's training to a few steps."""
    from oodbench.registry import DETECTORS

    fields = {f.name for f in dataclasses.fields(DETECTORS.get(name).Params)}
    smoke = {"max_steps": SMOKE_STEPS, "batch_size": SMOKE_BATCH, "shots": SMOKE_SHOTS,
             **SMOKE_OVERRIDES.get(name, {})}
    return {k: v for k, v in smoke.items() if k in fields}


def toy_run(name: str, cache_dir: Path | str, results_dir: Path | str, seed: int = 0):
    """One quiet ``--limit`` run of ``name`` on the toy protocol; its record."""
    from oodbench.runner import RunSpec, run

    spec = RunSpec(detectors=[name], protocol="toy", backbone="toy", seeds=[seed],
                   params={name: smoke_params(name)}, cache_dir=str(cache_dir),
                   results_dir=str(results_dir), limit=LIMIT, workers=0, quiet=True)
    (rec,) = run(spec)
    return rec


def check_declarations(name: str) -> None:
    """The class declares what the runner relies on, and its defaults validate."""
    from oodbench.detectors.base import PRECISIONS, resolve_precision
    from oodbench.registry import DETECTORS

    cls = DETECTORS.get(name)
    assert cls.version and isinstance(cls.version, str), \
        f"{name}: set `version` (a string; bump it on any score-changing edit)"
    assert cls.needs and cls.needs <= {"global", "local", "train", "images"}, \
        f"{name}: `needs` must be a non-empty subset of global, local, train, images"
    assert DETECTORS.describe(name), f"{name}: give the class a one-line docstring (description)"
    assert cls.precision in PRECISIONS, \
        f"{name}: precision {cls.precision!r} is not one of {PRECISIONS}"
    assert isinstance(cls.precision_reason, str) and cls.precision_reason.strip(), \
        f"{name}: say in `precision_reason` why it tolerates {cls.precision}"
    for requested in PRECISIONS:  # never below what the detector tolerates, never above fp32
        used, why = resolve_precision(requested, cls)
        assert PRECISIONS.index(used) == max(PRECISIONS.index(requested),
                                             PRECISIONS.index(cls.precision)), why
    cls().params.validate()


def check_hyperparameters(name: str) -> None:
    """An unknown or ill-typed hyperparameter is refused with an error that names it."""
    from oodbench.errors import ConfigError
    from oodbench.registry import DETECTORS

    cls = DETECTORS.get(name)
    for field, value in [("no_such_field", 1)] + [
            (f.name, object()) for f in dataclasses.fields(cls.Params)]:
        try:
            cls({field: value})
        except ConfigError as e:
            assert field in str(e), f"{name}: the error for {field}={value!r} does not name it: {e}"
        else:
            raise AssertionError(f"{name}: {field}={value!r} was accepted; from_dict/validate "
                                 "must refuse it")


def check_direction(name: str, cache_dir: Path | str, results_dir: Path | str) -> None:
    """On the toy world: ID scores above far-OOD ones, finite scores, valid predicted classes."""
    rec = toy_run(name, cache_dir, results_dir)
    auroc = rec.metrics["far"]["auroc"]
    assert auroc > MIN_FAR_AUROC, (
        f"{name}: far-OOD AUROC {auroc:.3f} on the toy world; scores must be higher for ID "
        "images than for OOD ones (return -score if yours is an OOD score)")
    assert rec.id_accuracy is not None and 0.0 <= rec.id_accuracy <= 1.0
    saved = np.load(next(Path(results_dir).rglob(rec.scores_file)))
    for key in saved.files:
        if key.startswith("scores/"):
            assert np.isfinite(saved[key]).all(), f"{name}: {key} has non-finite scores"
        if key.startswith("preds/"):
            assert ((saved[key] >= 0) & (saved[key] < TOY_CLASSES)).all(), \
                f"{name}: {key} predicts a class outside the ID label set"


def check_determinism(name: str, workdir: Path | str) -> None:
    """Two cold runs (separate caches) with one seed give identical metrics."""
    w = Path(workdir)
    a = toy_run(name, w / "c1", w / "r1")
    b = toy_run(name, w / "c2", w / "r2")
    assert a.metrics == b.metrics and a.id_accuracy == b.id_accuracy, \
        f"{name}: two runs with seed 0 differ; seed every random draw from the run's seed"
    from oodbench.registry import DETECTORS

    if DETECTORS.get(name).streaming:  # order-dependent: the run's seed fixes the stream order
        assert a.info.get("stream") and a.info["stream"] == b.info["stream"], \
            f"{name}: a streaming detector's record must name its stream, the same for one seed"


def check_detector(name: str, workdir: Path | str | None = None,
                   determinism: bool = True) -> None:
    """Every contract check on the registered detector ``name`` (a temporary folder for the
    runs' caches and records unless ``workdir`` is given). Raises on the first failure."""
    check_declarations(name)
    check_hyperparameters(name)
    with tempfile.TemporaryDirectory(prefix="oodbench-contract-") as tmp:
        w = Path(workdir) if workdir is not None else Path(tmp)
        check_direction(name, w / "cache", w / "results")
        if determinism:
            check_determinism(name, w / "twice")

"""Determinism: the same seed gives bit-identical scores on CPU, and no registered detector's scores
depend on how the images are batched (unless it declares ``order_dependent``).

A streaming detector (``Detector.streaming``: scored on a seeded ID + OOD stream) may depend on
the order; its stream must give bit-identical scores when replayed, and over batch sizes either
the same scores (``stream_batch_invariant``) or the documented dependence: a batch's scores depend
on the stream up to the end of that batch and on nothing after it.

The direction of the scores (higher = ID) is the lead's contract test (test_detector_contract.py);
this file checks only what batching and reruns must leave unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import oodbench
import oodbench.features.scores as scoring
import oodbench.features.stream as streaming
from oodbench.runner import RunSpec, run

BATCHES = (1, 7, 64)
TOL = 1e-6
# Detectors that need data the stand-in root does not have (reason shown by pytest -rs).
NEEDS_DATA = {
    "clipn": "trains on image-caption pairs (clipn.pairs) or loads a CLIPN checkpoint; the "
             "stand-in root has neither",
}
FAST = ["mcm", "energy", "maxlogit", "msp"]


def expensive(name: str) -> bool:
    """Trains, or mines negative labels by encoding a word corpus: tens of seconds on CPU."""
    cls = oodbench.DETECTORS.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    return "train" in cls.needs or "corpus" in fields


def smoke_params(name: str) -> dict:
    """A short training schedule, and no more shots than the stand-in's 4 images per class."""
    fields = {f.name: f for f in dataclasses.fields(oodbench.DETECTORS.get(name).Params)}
    params = {"max_steps": 4} if "max_steps" in fields else {}
    if "shots" in fields and fields["shots"].default > 4:
        params["shots"] = 4
    return params


def cases() -> list:
    out = []
    for name in oodbench.DETECTORS.names():
        marks = [pytest.mark.skip(reason=NEEDS_DATA[name])] if name in NEEDS_DATA else []
        if expensive(name):
            marks.append(pytest.mark.slow)
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def spec(root, tmp, detectors: list[str], tag: str = "") -> RunSpec:
    return RunSpec(detectors=detectors, protocol="imagenet1k-mos4", backbone="tiny-random",
                   params={d: smoke_params(d) for d in detectors if smoke_params(d)},
                   data_root=str(root), cache_dir=str(tmp / f"cache{tag}"),
                   results_dir=str(tmp / f"results{tag}"), workers=0, quiet=True)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One cache for the contract cases, so the stand-in features are extracted once."""
    return tmp_path_factory.mktemp("determinism")


@pytest.mark.parametrize("name", cases())
def test_scores_do_not_depend_on_the_batch_size(name, standin_root, shared, monkeypatch):
    if oodbench.DETECTORS.get(name).streaming:
        return check_stream(name, standin_root, shared, monkeypatch)
    seen = []
    real = scoring.score_arrays

    def spy(det, arrays, device, batch=scoring.SCORE_BATCH):
        seen.append((det, {k: np.array(v) for k, v in arrays.items()}))
        return real(det, arrays, device, batch)

    monkeypatch.setattr(scoring, "score_arrays", spy)
    run(spec(standin_root, shared, [name]))
    assert seen, "the runner scored nothing"
    det, _ = seen[0]
    arrays = {k: np.concatenate([a[k] for _, a in seen]) for k in seen[0][1]}  # all sets at once
    assert len(next(iter(arrays.values()))) > max(BATCHES[:-1])
    cpu = torch.device("cpu")
    # One thread, as the test suite runs by default (conftest): with several, MKL splits a float32
    # GEMM among threads by the batch's row count, and a row's rounding then depends on the batch
    # (MSP moved by 1.4e-6 between batch 7 and 64 with 2 threads). That is the BLAS, not the
    # detector; docs/footguns.md says so.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        by_batch = {b: real(det, arrays, cpu, b) for b in BATCHES}
    finally:
        torch.set_num_threads(threads)
    ref_scores, ref_preds = by_batch[BATCHES[-1]]
    assert np.isfinite(ref_scores).all(), f"{name} gives non-finite scores"
    if det.order_dependent:
        pytest.skip(f"{name} declares order_dependent: its scores may depend on batching")
    scale = max(1.0, float(np.abs(ref_scores).max()))
    for b, (scores, preds) in by_batch.items():
        # 1e-6 of the score's scale. A batch of one image runs float32 matrix-vector kernels
        # that round differently from matrix-matrix ones; through a 100x logit scale and a
        # softmax that alone moves MSP by ~2e-6, so batch 1 gets ten times the room.
        tol = TOL * scale * (10 if b == 1 else 1)
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=tol,
                                   err_msg=f"{name}: batch {b} vs {BATCHES[-1]}")
        # an argmax may flip only where two classes tie to float32 precision
        assert (preds == ref_preds).mean() >= 0.97, f"{name}: predictions change with batch {b}"


def test_same_seed_gives_bit_identical_scores(standin_root, tmp_path):
    a = run(spec(standin_root, tmp_path, FAST, "-a"))
    b = run(spec(standin_root, tmp_path, FAST, "-b"))
    for ra, rb in zip(a, b, strict=True):
        assert ra.metrics == rb.metrics and ra.id_accuracy == rb.id_accuracy
        base = "runs/imagenet1k-mos4/tiny-random"
        name = ra.detector["name"]
        with np.load(tmp_path / f"results-a/{base}/{name}/seed0.npz") as za, \
                np.load(tmp_path / f"results-b/{base}/{name}/seed0.npz") as zb:
            assert za.files == zb.files
            for k in za.files:
                assert za[k].tobytes() == zb[k].tobytes(), f"{name} {k} differs between reruns"


def check_stream(name, standin_root, shared, monkeypatch) -> None:
    """A streaming detector: replaying its first seeded stream gives the same bytes; a batch's
    scores do not depend on the stream after it; batch-invariant ones match over batch sizes."""
    seen = []
    real = streaming.score_stream

    def spy(det, arrays, device, batch):
        seen.append((det, {k: np.array(v) for k, v in arrays.items()}, batch))
        return real(det, arrays, device, batch)

    monkeypatch.setattr(streaming, "score_stream", spy)
    run(spec(standin_root, shared, [name]))
    det, arrays, official = next((d, a, b) for d, a, b in seen if len(next(iter(a.values())))
                                 > max(BATCHES[:-1]))  # a shuffled ID + OOD stream
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the test above: one BLAS thread
    try:
        for b in (*BATCHES, official):
            full, _ = real(det, arrays, cpu, b)
            again, _ = real(det, arrays, cpu, b)
            assert full.tobytes() == again.tobytes(), f"{name}: a replayed stream differs (b={b})"
            assert np.isfinite(full).all()
            cut = 2 * b if 2 * b < len(full) else b
            head, _ = real(det, {k: v[:cut] for k, v in arrays.items()}, cpu, b)
            tol = TOL * max(1.0, float(np.abs(full).max()))
            np.testing.assert_allclose(head, full[:cut], rtol=0, atol=tol,
                                       err_msg=f"{name}: batch {b} depends on later images")
            if det.stream_batch_invariant:
                ref, _ = real(det, arrays, cpu, BATCHES[-1])
                np.testing.assert_allclose(full, ref, rtol=0, atol=tol * 10)
    finally:
        torch.set_num_threads(threads)

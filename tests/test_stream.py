"""Streaming mode (``oodbench/features/stream.py``): the seeded order, the streams a scope makes,
the mapping of stream scores back to their sets, and a toy run's record.

A stand-in streaming detector (its score is the running count of images seen, plus the image's
own first feature) makes every property checkable by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oodbench.detectors.base import GLOBAL, Detector
from oodbench.errors import ConfigError
from oodbench.features.stream import paired_name, plan_streams, score_protocol, stream_order


class Counter(Detector):
    """Scores an image by its first feature + 1000 x the images seen up to the end of its batch."""

    name = "counter"
    streaming = True
    stream_batch_invariant = False

    def __init__(self, batch: int = 4, scope: str = "per-set"):
        super().__init__()
        self.batch, self.stream_scope, self.resets = batch, scope, 0

    def stream_batch_size(self) -> int:
        return self.batch

    def reset_stream(self) -> None:
        self.seen, self.resets = 0, self.resets + 1

    def score_and_predict(self, feats):
        x = feats[GLOBAL]
        self.seen += len(x)
        return x[:, 0].double() + 1000 * self.seen, torch.zeros(len(x), dtype=torch.long)


def sets(sizes: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """Feature 0 of image j of set number s is 10 s + j / 1000: every image is recognisable."""
    return {name: {GLOBAL: np.stack([np.full(3, 10 * s + j / 1000) for j in range(n)])}
            for s, (name, n) in enumerate(sizes.items())}


def test_order_is_a_permutation_fixed_by_the_seed():
    a, b = stream_order(50, 0), stream_order(50, 0)
    assert sorted(a.tolist()) == list(range(50)) and np.array_equal(a, b)
    assert not np.array_equal(a, stream_order(50, 1))
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(0)).numpy()
    assert np.array_equal(a, expected)


def test_scopes_plan_the_official_streams():
    assert plan_streams("per-set", "ID", [], ["o1", "o2"]) == [
        ("ID", ["ID"], False), ("o1", ["o1", "ID"], True), ("o2", ["o2", "ID"], True)]
    assert plan_streams("all-sets", "ID", ["x"], ["o1", "o2"]) == [
        ("all-sets", ["o1", "o2", "ID", "x"], True)]
    with pytest.raises(ConfigError, match="scope"):
        plan_streams("per-image", "ID", [], ["o1"])


@pytest.mark.parametrize("scope", ["per-set", "all-sets"])
def test_stream_scores_go_back_to_their_images(scope):
    arrays = sets({"ID": 9, "o1": 5, "o2": 7})
    det = Counter(batch=4, scope=scope)
    out = score_protocol(det, "ID", [], ["o1", "o2"], arrays, torch.device("cpu"), seed=3)
    for name, arr in arrays.items():  # each score carries its own image's feature
        np.testing.assert_allclose(out.scores[name] % 1000, arr[GLOBAL][:, 0], atol=1e-9)
    if scope == "per-set":
        assert det.resets == 3  # ID alone, then one fresh stream per OOD set
        for o in ("o1", "o2"):
            key = paired_name("ID", o)
            np.testing.assert_allclose(out.scores[key] % 1000, arrays["ID"][GLOBAL][:, 0])
            order = out.orders[o]  # concatenation [o, ID] permuted by the seed
            assert np.array_equal(order, stream_order(len(order), 3))
            seen = (np.concatenate([out.scores[o], out.scores[key]])[order] // 1000)
            batches = np.minimum(np.arange(len(order)) // 4 * 4 + 4, len(order))
            assert np.array_equal(seen, batches)  # counted up to the end of the own batch
        assert np.array_equal(out.scores["ID"] // 1000,
                              np.minimum(np.arange(9) // 4 * 4 + 4, 9))  # manifest order
    else:
        assert det.resets == 1 and set(out.orders) == {"all-sets"}
    rec = out.record
    assert rec["order_seed"] == 3 and rec["scope"] == scope and rec["batch_size"] == 4
    json.dumps(rec)  # fits a JSON record


@pytest.mark.slow  # a cold toy run of AdaNeg (about half a minute on 2 CPU cores)
def test_toy_run_records_the_stream_and_the_same_seed_gives_the_same_scores(tmp_path):
    from oodbench.runner import RunSpec, run

    def go(tag: str, seed: int):
        spec = RunSpec(detectors=["adaneg"], protocol="toy", backbone="toy", seeds=[seed],
                       cache_dir=str(tmp_path / "cache"), results_dir=str(tmp_path / tag),
                       limit=150, workers=0, quiet=True)
        (rec,) = run(spec)
        npz = np.load(next((tmp_path / tag).rglob(rec.scores_file)))
        return rec, {k: npz[k] for k in npz.files}

    a, za = go("a", 0)
    b, zb = go("b", 0)
    c, zc = go("c", 1)
    stream = a.info["stream"]
    assert stream["order_seed"] == 0 and stream["scope"] == "per-set"
    assert stream["batch_size"] == 256 and set(stream["streams"]) == {"ID", "near", "far"}
    assert a.cache["scores_hit"] is False
    for k in za:
        assert za[k].tobytes() == zb[k].tobytes(), k
    assert "order/far" in za and not np.array_equal(za["order/far"], zc["order/far"])
    assert c.info["stream"]["streams"]["far"]["order_sha256"] != stream["streams"]["far"][
        "order_sha256"]
    assert a.metrics == b.metrics

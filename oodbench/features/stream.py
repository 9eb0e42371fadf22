"""Streaming mode: a test-time adaptive detector scores one seeded, interleaved ID + OOD stream.

A streaming detector (``Detector.streaming``, e.g. AdaNeg) learns from the test images while it
scores them, so a score depends on the images before it. Such a detector is scored here, not
through the score cache (``features/scores.py``): its scores are a function of the whole stream.

Streams (``Detector.stream_scope``):

- ``per-set`` (AdaNeg's official evaluator, OpenOOD-VLM ``openood/evaluators/
  fsood_evaluator_clip.py``, ``OODEvaluatorClipTTA._eval_ood``: memory reset per OOD set, then
  ``ConcatDataset([ood, id])`` shuffled): for each OOD set ``o`` one stream over the
  concatenation [o, ID test, shifted-ID sets...]; its scores are ``scores[o]`` and
  ``scores["<id>@<o>"]`` (the ID images as scored in o's stream; the runner pairs them for o's
  metrics). The ID and shifted-ID sets are also scored alone, in manifest order, from a reset
  state (the official ``eval_acc``): those are ``scores[<id>]`` and give the ID accuracy.
- ``all-sets``: one stream over [every OOD set, ID test, shifted-ID sets]; each set's scores
  are read from it.

Order: ``torch.randperm(n, generator=torch.Generator().manual_seed(order_seed))`` over the
concatenation, ``order_seed`` being the run's seed, for every stream (the same seed gives the same
order on every platform). The stream is cut into consecutive batches of the detector's
``stream_batch_size()``; the detector is reset (``reset_stream``) at each stream's start. The
record's ``info.stream`` says all this (seed, scope, batch size, each stream's sets and a sha256
of its order); the orders themselves are saved beside the scores (``order/<stream>`` in the .npz).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from oodbench.detectors.base import Detector
from oodbench.errors import ConfigError
from oodbench.features.scores import score_arrays

SCOPES = ("per-set", "all-sets")
ORDER_RULE = ("torch.randperm(n, generator=torch.Generator().manual_seed(order_seed)) over the "
              "concatenation of the stream's sets, in the order listed")


def paired_name(set_name: str, stream: str) -> str:
    """Key of ``set_name``'s scores as scored in the per-set stream of OOD set ``stream``."""
    return f"{set_name}@{stream}"


def paired_scores(scores: dict[str, np.ndarray], set_name: str, ood: str) -> np.ndarray:
    """``set_name``'s scores to set against OOD set ``ood``: those of ``ood``'s own stream when a
    per-set stream scored them (:func:`paired_name`), else the set's own scores."""
    return scores.get(paired_name(set_name, ood), scores[set_name])


def stream_order(n: int, seed: int) -> np.ndarray:
    """(n,) int64 permutation of a stream of ``n`` images, fixed by ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen).numpy().astype(np.int64)


def score_stream(det: Detector, arrays: dict[str, np.ndarray], device: torch.device,
                 batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Reset ``det`` and feed it ``arrays`` (rows already in stream order) in consecutive batches
    of ``batch``: float64 scores and int64 predictions, in stream order."""
    det.reset_stream()
    return score_arrays(det, arrays, device, batch)  # one batch at a time, in order


@dataclass
class StreamScores:
    """What a streaming run produced: scores and predictions per key, the stream orders, and the
    record's ``info.stream`` entry."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    record: dict = field(default_factory=dict)


def plan_streams(scope: str, id_name: str, extra: Sequence[str],
                 ood: Sequence[str]) -> list[tuple[str, list[str], bool]]:
    """(stream name, its sets in concatenation order, shuffled?) for a protocol under ``scope``."""
    if scope not in SCOPES:
        raise ConfigError(f"stream scope {scope!r} unknown; use one of {list(SCOPES)}")
    if scope == "all-sets":
        return [("all-sets", [*ood, id_name, *extra], True)]
    alone = [(name, [name], False) for name in (id_name, *extra)]
    return alone + [(o, [o, id_name, *extra], True) for o in ood]


def score_protocol(det: Detector, id_name: str, extra: Sequence[str], ood: Sequence[str],
                   arrays: dict[str, dict[str, np.ndarray]], device: torch.device, seed: int,
                   check=None) -> StreamScores:
    """Score every set of a protocol through ``det``'s streams (module docstring).

    ``arrays`` maps a set name to its feature arrays; ``check(key, set_name, scores)`` (optional)
    refuses non-finite scores of a set. Keys of the result: a set's name, and for the ID and
    shifted-ID sets in a per-set stream also :func:`paired_name` (set, stream).
    """
    batch = det.stream_batch_size()
    if batch <= 0:
        raise ConfigError(f"{det.name}: stream batch size must be positive, got {batch}")
    out = StreamScores()
    streams = {}
    for name, sets, shuffled in plan_streams(det.stream_scope, id_name, extra, ood):
        sizes = [len(next(iter(arrays[s].values()))) for s in sets]
        n = sum(sizes)
        order = stream_order(n, seed) if shuffled else np.arange(n, dtype=np.int64)
        kinds = list(arrays[sets[0]])
        joined = {k: np.concatenate([np.asarray(arrays[s][k]) for s in sets])[order]
                  for k in kinds}
        sc, pr = score_stream(det, joined, device, batch)
        back_sc, back_pr = np.empty_like(sc), np.empty_like(pr)
        back_sc[order], back_pr[order] = sc, pr  # back to concatenation order
        start = 0
        for s, size in zip(sets, sizes, strict=True):
            key = s if (not shuffled or det.stream_scope == "all-sets" or s == name) \
                else paired_name(s, name)
            out.scores[key] = back_sc[start : start + size]
            out.preds[key] = back_pr[start : start + size]
            if check is not None:
                check(key, s, out.scores[key])
            start += size
        out.orders[name] = order
        streams[name] = {"sets": sets, "sizes": sizes,
                         "order": "seeded shuffle" if shuffled else "manifest order",
                         "order_sha256": hashlib.sha256(order.tobytes()).hexdigest()[:16],
                         "first": order[:8].tolist()}
    out.record = {"order_seed": int(seed), "scope": det.stream_scope, "batch_size": batch,
                  "batch_invariant": bool(det.stream_batch_invariant), "rule": ORDER_RULE,
                  "streams": streams}
    return out

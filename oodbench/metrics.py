"""OOD and ID metrics: the one place where oodbench turns scores into numbers.

Conventions (see docs/methods/zero-shot-and-metrics.md, section 6):

- A detector score is "higher = more in-distribution". ID is the **positive** class for every
  metric except ``fpr95_openood`` and ``aupr_out``.
- ``fpr95`` is the paper convention (MCM, NegLabel, CLIPN, CMA): the fraction of OOD samples
  accepted at the threshold where 95 % of ID samples are accepted, picked with the MCM/NegLabel
  ``fpr_and_fdr_at_recall`` argmin rule (nearest recall to 0.95, first index wins).
- ``fpr95_openood`` is the OpenOOD v1.5 convention, a different quantity: OOD is positive, the
  score is negated, and it is the fraction of ID samples flagged OOD at the first ROC point
  (sklearn ``roc_curve`` with its default ``drop_intermediate``) that catches >= 95 % of OOD.
- ``aupr_in`` / ``aupr_out`` are step-wise average precision (sklearn ``average_precision_score``)
  with ID positive on the score, and OOD positive on the negated score.
- Every value is a fraction in [0, 1]; multiply by 100 only for display (papers print x100, 2 dp).
- An "Average" row is the arithmetic mean over the OOD sets (``summarize``).

All curve metrics come from one sort: per distinct score value, how many ID and OOD samples share
it. Ties therefore form one threshold, as in sklearn and the reference code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from oodbench.errors import OodbenchError

METRICS_SCHEMA_VERSION = "1"
RECALL_LEVEL = 0.95
METRIC_KEYS = ("auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out")

Counts = NDArray[np.int64]


def ood_metrics(id_scores: ArrayLike, ood_scores: ArrayLike) -> dict[str, float]:
    """All OOD metrics for one ID/OOD pair, as fractions keyed by ``METRIC_KEYS``."""
    s_id = _as_scores(id_scores, "id_scores")
    s_ood = _as_scores(ood_scores, "ood_scores")
    n_id, n_ood = _tie_counts(s_id, s_ood)
    # OOD-positive on -score: descending -score is ascending score, so reverse the blocks.
    return {
        "auroc": _auroc(n_id, n_ood),
        "fpr95": _fpr_at_recall_argmin(n_id, n_ood, RECALL_LEVEL),
        "fpr95_openood": _fpr_at_first_tpr(n_ood[::-1], n_id[::-1], RECALL_LEVEL),
        "aupr_in": _average_precision(n_id, n_ood),
        "aupr_out": _average_precision(n_ood[::-1], n_id[::-1]),
    }


def id_accuracy(pred: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 accuracy from predicted class ids (N,) or class scores (N, K), argmax taken."""
    p = np.asarray(pred)
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    if p.ndim == 2:
        p = np.argmax(p, axis=1)
    if p.shape != y.shape:
        raise ValueError(
            f"pred has shape {np.shape(pred)} but labels has shape {y.shape}; expected (N,) "
            "predicted class ids or (N, K) class scores with N = len(labels)"
        )
    return float(np.mean(p == y))


def summarize(
    per_set: Mapping[str, Mapping[str, float]],
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, float]]:
    """Arithmetic mean of each metric over OOD sets: ``average`` (all sets) plus one per group."""
    out = {"average": _mean_over(per_set, list(per_set), "average")}
    for name, members in (groups or {}).items():
        if name in out:
            raise ValueError(f"group name {name!r} is reserved for the mean over all sets")
        out[name] = _mean_over(per_set, list(members), name)
    return out


def _mean_over(
    per_set: Mapping[str, Mapping[str, float]], names: list[str], label: str
) -> dict[str, float]:
    """Mean per metric over the named sets; every set must report the same metric keys."""
    if not names:
        raise ValueError(f"{label!r}: no OOD sets to average")
    unknown = [n for n in names if n not in per_set]
    if unknown:
        raise ValueError(f"{label!r}: unknown OOD set(s) {unknown}; known: {sorted(per_set)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{label!r}: an OOD set is listed twice in {names}")
    keys = list(per_set[names[0]])
    for n in names[1:]:
        if set(per_set[n]) != set(keys):
            raise ValueError(
                f"{label!r}: set {n!r} has metrics {sorted(per_set[n])}, "
                f"but {names[0]!r} has {sorted(keys)}; cannot average unlike rows"
            )
    return {k: math.fsum(float(per_set[n][k]) for n in names) / len(names) for k in keys}


class MetricsError(OodbenchError, ValueError):
    """Scores that no metric can use (non-finite, empty, misshapen); the message says which."""


def _as_scores(x: ArrayLike, name: str) -> NDArray[np.float64]:
    """Validate one side's scores: a non-empty, finite, 1-D float64 array."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise MetricsError(f"{name} must be 1-D (one score per sample), got shape {arr.shape}")
    if arr.size == 0:
        raise MetricsError(f"{name} is empty; metrics need at least one ID and one OOD score")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise MetricsError(
            f"{name} has {idx.size} non-finite value(s) of {arr.size} "
            f"({int(np.isnan(arr).sum())} NaN, {int(np.isinf(arr).sum())} inf), "
            f"first at index {idx[:5].tolist()}; the detector's scores cannot be ranked (check "
            "its features and hyperparameters, e.g. a temperature of 0 or inf)"
        )
    return arr


def _tie_counts(s_id: NDArray[np.float64], s_ood: NDArray[np.float64]) -> tuple[Counts, Counts]:
    """ID and OOD counts per distinct score value, highest score first (one sort for all)."""
    values, inverse = np.unique(np.concatenate([s_id, s_ood]), return_inverse=True)
    k = values.size
    n_id = np.bincount(inverse[: s_id.size], minlength=k)[::-1]
    n_ood = np.bincount(inverse[s_id.size :], minlength=k)[::-1]
    return n_id.astype(np.int64), n_ood.astype(np.int64)


def _auroc(pos: Counts, neg: Counts) -> float:
    """Area under ROC (positives ranked first), ties count 1/2; trapezoid in exact integers."""
    tp = np.cumsum(pos)
    twice_area = int(np.sum(neg * (2 * tp - pos)))
    return twice_area / (2 * int(tp[-1]) * int(neg.sum()))


def _average_precision(pos: Counts, neg: Counts) -> float:
    """Step-wise AP (sklearn semantics): mean over positives of precision at their tie block."""
    tp = np.cumsum(pos)
    precision = tp / (tp + np.cumsum(neg))
    return float(np.sum(pos * precision) / tp[-1])


def _fpr_at_recall_argmin(pos: Counts, neg: Counts, level: float) -> float:
    """FPR at the recall nearest ``level`` (first argmin), as MCM/NegLabel fpr_and_fdr_at_recall."""
    tps = np.cumsum(pos, dtype=np.float64)
    fps = np.cumsum(neg, dtype=np.float64)
    recall = tps / tps[-1]
    last = int(np.searchsorted(tps, tps[-1]))  # first point reaching full recall
    # Walk from full recall towards the highest threshold and append the reference's
    # (recall 1, fp 0) sentinel. It ties with the first point (recall exactly 1.0), so the
    # first-index argmin never selects it; kept only to mirror the reference curve.
    recall_curve = np.r_[recall[last::-1], 1.0]
    fp_curve = np.r_[fps[last::-1], 0.0]
    cutoff = int(np.argmin(np.abs(recall_curve - level)))
    return float(fp_curve[cutoff] / neg.sum())


def _fpr_at_first_tpr(pos: Counts, neg: Counts, level: float) -> float:
    """FPR at the first sklearn ``roc_curve`` point with TPR >= ``level`` (OpenOOD rule)."""
    tps = np.cumsum(pos, dtype=np.float64)
    fps = np.cumsum(neg, dtype=np.float64)
    if tps.size > 2:  # sklearn drop_intermediate=True: drop collinear, evenly spaced points
        corner = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        keep = np.r_[True, corner, True]
        tps, fps = tps[keep], fps[keep]
    tpr = np.r_[0.0, tps] / tps[-1]
    fpr = np.r_[0.0, fps] / fps[-1]
    return float(fpr[int(np.argmax(tpr >= level))])

"""Leaderboard pictures: ROC curves and score histograms per leaderboard row, and one ROC overlay
of every row per protocol.

Drawn from the per-image scores saved beside each result record (the lowest seed of a row), with
matplotlib's Agg backend so that no display is needed. ROC curves take ID as the positive class,
the paper convention of the tables. Histograms show ID against each OOD set, and the shifted-ID
sets (counted as ID) against ID in a panel of their own. Scores that pile up (CLIPN's
probabilities at 0 and 1) are drawn on a log-odds axis when they are probabilities, else on their
rank (:func:`histogram_scale`), and the axis says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oodbench.io import atomic_write

if TYPE_CHECKING:
    from oodbench.leaderboard import Layout, Row


def load_scores(run_path: Path, scores_file: str) -> dict[str, np.ndarray] | None:
    """Per-set score arrays of one record (None when the .npz beside it is gone)."""
    npz = Path(run_path).parent / scores_file
    if not npz.is_file():
        return None
    with np.load(npz, allow_pickle=False) as z:
        return {k.partition("/")[2]: z[k] for k in z.files if k.startswith("scores/")}


def roc_points(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the ROC curve with ID positive and higher score = more ID."""
    from sklearn.metrics import roc_curve

    y = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    fpr, tpr, _ = roc_curve(y, np.r_[id_scores, ood_scores])
    return fpr, tpr


OVERLAY = "all detectors"
"""The link label of a protocol's ROC overlay."""


def plot_links(layout: Layout, rows: Sequence[Row]) -> dict[str, list[tuple[str, str]]]:
    """What :func:`plot_rows` writes, without drawing: a row's label (detector on backbone) ->
    (what, path relative to the leaderboard folder), for rows whose scores file is there; then
    the protocol's ROC overlay when two or more rows have one."""
    links: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        if _row_scores(layout, row) is None:
            continue
        variant = f"_{row.variant}" if row.variant else ""  # a smoke run's own files
        stem = _slug(f"{row.label}{variant}__{row.backbone}")
        links[f"{row.label} on {row.backbone}" + (f" ({row.variant})" if variant else "")] = [
            ("ROC curves", f"{layout.protocol}/{stem}_roc.png"),
            ("score histograms", f"{layout.protocol}/{stem}_hist.png"),
        ]
    if len(links) > 1:
        links[OVERLAY] = [("ROC overlay", f"{layout.protocol}/roc_overlay.png")]
    return links


def plot_rows(layout: Layout, rows: Sequence[Row],
              out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Write ROC and histogram PNGs for each row, and the ROC overlay of all rows, under
    ``<out>/<protocol>/``; return the links of :func:`plot_links`."""
    links = plot_links(layout, rows)
    folder = Path(out_dir)
    curves = []
    for row in rows:
        scores = _row_scores(layout, row)
        if scores is None:
            continue
        run = row.runs[0]
        title = f"{row.label} · {row.backbone} · {layout.protocol} (seed {run.record.seed})"
        ood = [s for s in layout.ood_sets if s in scores]
        shifted = [s for s in layout.shifted if s in scores]
        key = f"{row.label} on {row.backbone}" + (f" ({row.variant})" if row.variant else "")
        roc, hist = (folder / path for _, path in links[key])
        _save(_roc_figure(scores, layout.id_set, ood, title), roc)
        _save(_hist_figure(scores, layout.id_set, ood, title, shifted), hist)
        curves.append((key, scores))
    if OVERLAY in links:
        _save(_overlay_figure(curves, layout), folder / links[OVERLAY][0][1])
    return links


def _row_scores(layout: Layout, row: Row) -> dict[str, np.ndarray] | None:
    if not row.runs:
        return None
    run = row.runs[0]
    scores = load_scores(run.path, run.record.scores_file)
    return scores if scores is not None and layout.id_set in scores else None


def histogram_scale(values: np.ndarray) -> str:
    """``linear``, or ``log-odds`` / ``rank`` when scores pile up: more than a quarter of them in
    one of 50 equal bins over their range. Probabilities (all in [0, 1], up to rounding) get
    log-odds (scores of exactly 0 or 1 still pile at the ends: float64 cannot tell them apart),
    others their rank (the share of pooled scores below each)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2 or v.min() == v.max():
        return "linear"
    counts, _ = np.histogram(v, bins=50)
    if counts.max() <= 0.25 * len(v):
        return "linear"
    probabilities = v.min() >= -1e-9 and v.max() <= 1.0 + 1e-9  # (1 + 2e-16 from rounding)
    return "log-odds" if probabilities else "rank"


def rescale(values: np.ndarray, scale: str, pooled: np.ndarray) -> np.ndarray:
    """Scores on the axis :func:`histogram_scale` chose: log(p / (1 - p)) clipped at 1e-12 of 0
    and 1, or the rank within ``pooled`` in [0, 1]; unchanged for ``linear``."""
    v = np.asarray(values, dtype=np.float64)
    if scale == "log-odds":
        p = np.clip(v, 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)
    if scale == "rank":
        ref = np.sort(np.asarray(pooled, dtype=np.float64))
        return np.searchsorted(ref, v, side="left") / max(len(ref) - 1, 1)
    return v


def _figure(**kw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kw)


def _roc_figure(scores: dict[str, np.ndarray], id_set: str, ood: list[str], title: str):
    from oodbench.features.stream import paired_scores  # lazily: it imports torch

    fig, ax = _figure(figsize=(5.5, 5))
    for name in ood:
        fpr, tpr = roc_points(paired_scores(scores, id_set, name), scores[name])
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="FPR (OOD accepted)", ylabel=f"TPR ({id_set} accepted)", xlim=(0, 1),
           ylim=(0, 1.01), title=title)
    ax.title.set_fontsize(8)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _hist_figure(scores: dict[str, np.ndarray], id_set: str, ood: list[str], title: str,
                 shifted: Sequence[str] = ()):
    from matplotlib.ticker import MaxNLocator

    from oodbench.features.stream import paired_name  # lazily: it imports torch

    panels = [(name, [(paired_name(id_set, name) if paired_name(id_set, name) in scores
                       else id_set, "ID"), (name, "OOD")]) for name in ood]
    if shifted:  # the shifted-ID sets count as ID: how far their scores drift from ID's
        panels.append(("shifted ID", [(id_set, "ID")] + [(s, "shifted ID") for s in shifted]))
    pooled = np.concatenate([scores[s] for s in dict.fromkeys([id_set, *ood, *shifted])])
    scale = histogram_scale(pooled)
    n = max(len(panels), 1)
    cols = min(n, 3)
    nrows = (n + cols - 1) // cols
    fig, axes = _figure(nrows=nrows, ncols=cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    xlabel = {"linear": "score", "log-odds": "log-odds of the score",
              "rank": "rank of the score (pooled, 0-1)"}[scale] + " (higher = more ID)"
    for ax, (name, members) in zip(list(axes.flat)[: len(panels)], panels, strict=True):
        shown = [rescale(scores[s], scale, pooled) for s, _ in members]
        both = np.concatenate(shown)
        bins = np.linspace(both.min(), both.max() + 1e-12, 50)
        for (s, role), v in zip(members, shown, strict=True):
            ax.hist(v, bins=bins, alpha=0.55, density=True, label=f"{s} ({role})")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _overlay_figure(curves: list[tuple[str, dict[str, np.ndarray]]], layout: Layout):
    """Every row's ROC of ID against all OOD sets pooled, on one axis."""
    from oodbench.features.stream import paired_name  # lazily: it imports torch

    fig, ax = _figure(figsize=(6, 5.5))
    for label, scores in curves:
        sets = [s for s in layout.ood_sets if s in scores]
        ood = np.concatenate([scores[s] for s in sets])
        paired = [paired_name(layout.id_set, s) for s in sets]  # a streaming detector's ID
        ids = (np.concatenate([scores[p] for p in paired]) if all(p in scores for p in paired)
               else scores[layout.id_set])
        fpr, tpr = roc_points(ids, ood)
        ax.plot(fpr, tpr, lw=1.2, label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="FPR (OOD accepted, all OOD sets pooled)",
           ylabel=f"TPR ({layout.id_set} accepted)", xlim=(0, 1), ylim=(0, 1.01),
           title=f"{layout.protocol}: every detector (lowest seed)")
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right", fontsize=7)
    return fig


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in text)

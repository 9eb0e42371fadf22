"""Leaderboard pictures: ROC curves and score histograms (ID vs each OOD set) per leaderboard row.

Drawn from the per-image scores saved beside each result record (the lowest seed of a row), with
matplotlib's Agg backend so that no display is needed. ROC curves take ID as the positive class,
the paper convention of the tables.
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


def plot_rows(layout: Layout, rows: Sequence[Row],
              out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Write ROC and histogram PNGs for each row under ``<out>/<protocol>/``; return the links.

    The links map a row's label (detector on backbone) to (what, path relative to ``out_dir``).
    """
    links: dict[str, list[tuple[str, str]]] = {}
    folder = Path(out_dir) / layout.protocol
    for row in rows:
        run = row.runs[0]
        scores = load_scores(run.path, run.record.scores_file)
        if scores is None or layout.id_set not in scores:
            continue
        variant = f"_{row.variant}" if row.variant else ""  # a smoke run's own files
        stem = _slug(f"{row.label}{variant}__{row.backbone}")
        title = f"{row.label} · {row.backbone} · {layout.protocol} (seed {run.record.seed})"
        ood = [s for s in layout.ood_sets if s in scores]
        roc, hist = folder / f"{stem}_roc.png", folder / f"{stem}_hist.png"
        _save(_roc_figure(scores, layout.id_set, ood, title), roc)
        _save(_hist_figure(scores, layout.id_set, ood, title), hist)
        links[f"{row.label} on {row.backbone}" + (f" ({row.variant})" if variant else "")] = [
            ("ROC curves", f"{layout.protocol}/{roc.name}"),
            ("score histograms", f"{layout.protocol}/{hist.name}"),
        ]
    return links


def _figure(**kw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kw)


def _roc_figure(scores: dict[str, np.ndarray], id_set: str, ood: list[str], title: str):
    fig, ax = _figure(figsize=(5.5, 5))
    for name in ood:
        fpr, tpr = roc_points(scores[id_set], scores[name])
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="FPR (OOD accepted)", ylabel=f"TPR ({id_set} accepted)", xlim=(0, 1),
           ylim=(0, 1.01), title=title)
    ax.title.set_fontsize(8)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _hist_figure(scores: dict[str, np.ndarray], id_set: str, ood: list[str], title: str):
    from matplotlib.ticker import MaxNLocator

    n = max(len(ood), 1)
    cols = min(n, 3)
    nrows = (n + cols - 1) // cols
    fig, axes = _figure(nrows=nrows, ncols=cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, name in zip(list(axes.flat)[: len(ood)], ood, strict=True):
        both = np.r_[scores[id_set], scores[name]]
        bins = np.linspace(both.min(), both.max() + 1e-12, 50)
        ax.hist(scores[id_set], bins=bins, alpha=0.55, density=True, label=f"{id_set} (ID)")
        ax.hist(scores[name], bins=bins, alpha=0.55, density=True, label=f"{name} (OOD)")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("score (higher = more ID)", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(ood):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in text)

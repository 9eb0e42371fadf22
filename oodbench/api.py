"""The Python API: what the CLI does, as functions that return pandas DataFrames.

- :func:`evaluate` runs detectors on a protocol and backbone (``runner.run``, records written as
  by ``oodbench run``) and returns the tidy frame of :mod:`oodbench.frames`: one row per detector x
  backbone x seed x ID set x OOD set or group, metrics in percent.
- :func:`load_results` reads a results folder's records back as the same frame.
- :func:`table` turns such a frame into the leaderboard's table (DataFrame, markdown, CSV, LaTeX).
- :func:`score` scores features you computed yourself (no protocol, no cache): a registered
  zero-shot detector set up from your class text features or your text encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oodbench.errors import ConfigError

FORMATS = ("frame", "markdown", "csv", "latex")


def evaluate(detectors: str | Iterable[str | type], protocol: str = "toy", backbone: str = "toy",
             seeds: int | Iterable[int] = (0,), *, params: Mapping[str, dict] | None = None,
             **options: Any) -> pd.DataFrame:
    """Run ``detectors`` (names, comma-separated names, or registered Detector classes) on
    ``protocol`` with ``backbone`` over ``seeds`` and return the tidy frame of the records.

    ``options`` are the fields of :class:`oodbench.runner.RunSpec` (``data_root``, ``cache_dir``,
    ``results_dir`` (default ``results``), ``device``, ``precision``, ``limit``, ``quiet`` (default
    True here), ...). A deterministic detector runs once, with the first seed.
    """
    from oodbench.leaderboard import backbone_label
    from oodbench.runner import RunSpec, make_detector, record_stem, run

    names = _detector_names(detectors)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    spec = RunSpec(detectors=names, protocol=protocol, backbone=backbone, seeds=seeds,
                   params={k: dict(v) for k, v in (params or {}).items()},
                   **{"quiet": True, **options})
    records = run(spec)
    labels = {n: record_stem(Path(), make_detector(n, spec.params.get(n)), 0).parent.name
              for n in names}
    variant = f"limit{spec.limit}" if spec.limit else ""
    from oodbench.frames import run_fields, tidy_frame

    return tidy_frame((r, run_fields(r, labels[r.detector["name"]], backbone_label(r.backbone),
                                     variant)) for r in records)


def load_results(results_dir: str | Path = "results", include_limited: bool = True,
                 ) -> pd.DataFrame:
    """Every result record under ``<results_dir>/runs`` as the tidy frame of :func:`evaluate`
    (with each record's ``path``); runs on random weights are left out as the leaderboard does,
    smoke runs (``--limit``) only when ``include_limited`` is False."""
    from oodbench.leaderboard import load_runs, random_weights, runs_frame

    runs = [r for r in load_runs(Path(results_dir)) if not random_weights(r.record)]
    if not include_limited:
        runs = [r for r in runs if not r.record.limit]
    return runs_frame(runs)


def table(frame: pd.DataFrame, format: str = "frame") -> pd.DataFrame | str:
    """The leaderboard table of a tidy frame: one line per detector x backbone (mean and sample
    std over seeds, best average FPR95 first), as a DataFrame (``frame``, one per protocol
    concatenated) or as text (``markdown``, ``csv``, ``latex``; protocols one after another)."""
    from oodbench import leaderboard as lb

    if format not in FORMATS:
        raise ConfigError(f"table format {format!r} unknown; use one of {', '.join(FORMATS)}")
    if not len(frame):
        raise ConfigError("the frame has no rows: nothing to tabulate")
    tables = lb.frame_tables(frame)
    if format == "frame":
        return pd.concat([lb.leaderboard_frame(lay, rows) for lay, rows in tables],
                         ignore_index=True)
    write = {"markdown": lambda lay, rows: lb.markdown_text(lay, rows, []),
             "csv": lb.csv_text, "latex": lb.latex_text}[format]
    return "\n".join(write(lay, rows) for lay, rows in tables)


@dataclass
class Scored:
    """What :func:`score` returns: per-image scores (higher = more ID), ID predictions, and the
    metrics (percent) of ID against each OOD set and their average, as a DataFrame."""

    id_scores: np.ndarray
    ood_scores: dict[str, np.ndarray]
    id_pred: np.ndarray
    metrics: pd.DataFrame
    id_accuracy: float | None = None
    info: dict = field(default_factory=dict)


def score(detector: str, id_features: Any, ood_features: Any, *,
          text: Any, classnames: list[str] | None = None, id_labels: Any = None,
          params: dict | None = None, device: str = "cpu") -> Scored:
    """Score your own L2-normalised image features with a registered detector.

    ``id_features``: (N, D) array or tensor; ``ood_features``: one such array or a mapping
    ``{set name: array}``. ``text`` is either the (C, D) text embeddings of the ID classes (for
    detectors that encode only the class prompts: mcm, msp, maxlogit, energy, gl-mcm without local
    features) or a callable ``encode(list of prompts) -> (P, D)`` (e.g. your CLIP text tower),
    which every zero-shot detector can use (``classnames`` then required). ``id_labels`` gives ID
    accuracy. Detectors that train, need patch features or stream run through :func:`evaluate`.
    """
    import torch

    from oodbench import metrics as M
    from oodbench.detectors.base import GLOBAL, Context
    from oodbench.features.scores import score_arrays
    from oodbench.runner import make_detector

    det = make_detector(detector, params)
    if set(det.needs) - {GLOBAL}:
        raise ConfigError(
            f"detector {detector!r} needs {sorted(set(det.needs) - {GLOBAL})} besides global "
            "features (a training split or patch features); run it with oodbench.evaluate on a "
            "protocol instead")
    if det.streaming:
        raise ConfigError(
            f"detector {detector!r} is streaming (its scores depend on a seeded ID + OOD stream, "
            "features/stream.py); run it with oodbench.evaluate on a protocol instead")
    ood = dict(ood_features) if isinstance(ood_features, Mapping) else {"OOD": ood_features}
    arrays = {"ID": _matrix(id_features, "id_features"),
              **{k: _matrix(v, f"ood_features[{k!r}]") for k, v in ood.items()}}
    if callable(text):
        if not classnames:
            raise ConfigError("score(): a text encoder needs the ID classnames")
        encode = _checked_encoder(text)
    else:
        class_text = torch.as_tensor(_matrix(text, "text"))
        classnames = list(classnames or [f"class {i}" for i in range(len(class_text))])
        if len(classnames) != len(class_text):
            raise ConfigError(f"score(): {len(classnames)} classnames but {len(class_text)} text "
                              "embeddings")
        encode = _fixed_encoder(class_text, detector)
    ctx = Context(backbone=None, protocol=_Classes(classnames), seed=0,
                  device=torch.device(device), encode_text=encode,
                  split_features=_no_split(detector), artifact_dir=Path("."), info={})
    det.setup(ctx)
    dev = torch.device(device)
    scored = {k: score_arrays(det, {GLOBAL: v}, dev) for k, v in arrays.items()}
    per_set = {k: M.ood_metrics(scored["ID"][0], scored[k][0]) for k in ood}
    groups = M.summarize(per_set, {})
    lines = [{"set": k, **{m: 100.0 * v for m, v in values.items()}} for k, values in
             [*per_set.items(), ("average", groups["average"])]]
    acc = None
    if id_labels is not None:
        acc = 100.0 * M.id_accuracy(scored["ID"][1], np.asarray(id_labels))
    return Scored(scored["ID"][0], {k: scored[k][0] for k in ood}, scored["ID"][1],
                  pd.DataFrame(lines), acc, dict(ctx.info))


class _Classes:
    """The little of a protocol that a zero-shot setup reads: the ID class names."""

    name = "user-features"
    version = "0"
    train = None

    def __init__(self, classnames: list[str]):
        self.classnames = list(classnames)

    def training_classnames(self) -> list[str]:
        return self.classnames


def _matrix(x: Any, what: str) -> np.ndarray:
    import torch

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or not np.isfinite(a).all():
        raise ConfigError(f"score(): {what} must be a finite (N, D) array, got shape {a.shape}")
    return a


def _checked_encoder(encode: Callable) -> Callable:
    import torch

    def wrapped(prompts: list[str]):
        return torch.as_tensor(_matrix(encode(list(prompts)), "text(prompts)"))

    return wrapped


def _fixed_encoder(class_text, detector: str) -> Callable:
    def encode(prompts: list[str]):
        if len(prompts) != len(class_text):
            raise ConfigError(
                f"score(): {detector!r} asks for {len(prompts)} text embeddings (it encodes more "
                "than the class prompts); pass text=your_text_encoder and classnames=...")
        return class_text

    return encode


def _no_split(detector: str) -> Callable:
    def split(*_a, **_k):
        raise ConfigError(f"score(): {detector!r} needs a training split; use oodbench.evaluate")

    return split


def _detector_names(detectors: str | Iterable[str | type]) -> list[str]:
    from oodbench.registry import DETECTORS

    if isinstance(detectors, str):
        return [d.strip() for d in detectors.split(",") if d.strip()]
    names = []
    for d in detectors:
        if isinstance(d, str):
            names.append(d)
            continue
        found = [n for n in DETECTORS.names() if DETECTORS.get(n) is d]
        if not found:
            raise ConfigError(f"{d!r} is not registered: decorate it with "
                              "@DETECTORS.register('name') first, or pass its name")
        names.append(found[0])
    return names

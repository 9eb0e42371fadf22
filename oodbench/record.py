"""The result record: one JSON per (detector, protocol, backbone, seed), its schema written down.

Every key a leaderboard or a reader relies on is a field here. Metrics are fractions (x100 only for
display); ``metrics`` holds one dict per OOD set with the keys of
:func:`oodbench.metrics.ood_metrics`
(``auroc``, ``fpr95`` ID-positive, ``fpr95_openood`` OOD-positive, ``aupr_in``, ``aupr_out``);
``groups`` holds their means over all sets (``average``) and over each OOD group. ``shifted`` is
present for protocols with shifted-ID sets (covariate shift): per shifted set its ID accuracy and
its metrics with that set as ID. Per-image scores sit beside the record in ``scores_file`` (.npz),
so metrics under another convention can be recomputed without rerunning.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oodbench.io import atomic_write_json

RECORD_SCHEMA_VERSION = "1"


@dataclass
class ResultRecord:
    """One run of one detector on one protocol with one backbone and seed."""

    detector: dict  # {name, version, params, stochastic (whether its scores depend on the seed)}
    # {name, version, n_classes, classnames_sha256,
    #  sets: {name: {role, group, n, manifest_sha256}}, templates (a protocol file's, if any)}
    protocol: dict
    # {spec, identity, precision (used), precision_requested, precision_reason, preprocess}
    backbone: dict
    seed: int
    metrics: dict[str, dict[str, float]]
    groups: dict[str, dict[str, float]]
    id_accuracy: float | None
    metrics_schema: str
    timings: dict[str, float]  # seconds: extract, setup, score, metrics, total
    cache: dict  # {images: {set: {kind: hit}}, text_hits, text_misses, scores_hit}
    # {oodbench, python, torch, open_clip, numpy, sklearn, git_commit, device, platform, and
    #  plugins: {"detector:NAME"|"protocol:NAME"|"backbone:NAME": {distribution, version, module}}
    #  when the run used entries from outside oodbench}
    environment: dict
    created: str
    scores_file: str
    shifted: dict[str, dict] = field(default_factory=dict)
    skipped_unreadable: dict[str, int] = field(default_factory=dict)
    limit: int | None = None
    train: dict | None = None  # few-shot split and trained artifact, for trainable detectors
    info: dict = field(default_factory=dict)  # what the detector reports about its setup
    schema_version: str = RECORD_SCHEMA_VERSION

    def to_dict(self) -> dict:
        """Plain dict (what is written to disk)."""
        return dataclasses.asdict(self)

    def write(self, path: Path) -> None:
        """Write atomically as JSON."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultRecord:
        """Parse a record, refusing a schema it does not know."""
        if d.get("schema_version") != RECORD_SCHEMA_VERSION:
            raise ValueError(
                f"record schema {d.get('schema_version')!r} is not {RECORD_SCHEMA_VERSION!r}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def read(cls, path: Path) -> ResultRecord:
        """Read one record file."""
        return cls.from_dict(json.loads(Path(path).read_text()))

"""What a protocol is: an ID test set, grouped OOD sets, a val split, class names, a version.

A :class:`ProtocolDef` (the registered class) knows where its sets live under a data root and how to
check them; ``build(data_root, cache_dir)`` resolves it into a :class:`Protocol` of manifests.
Hyperparameter choices may look at ``val`` only, never at the test sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from oodbench.data.manifest import Manifest

SMOKE_SHOTS = 16  # images per class a --limit'ed training split keeps (the papers' most shots)


@dataclass(frozen=True)
class ImageSet:
    """One evaluated set: its manifest, and for OOD sets the group it is averaged in."""

    name: str
    manifest: Manifest
    group: str = ""


@dataclass
class Protocol:
    """A resolved protocol: manifests under a concrete data root."""

    name: str
    version: str
    description: str
    classnames: list[str]
    id_test: ImageSet
    ood: list[ImageSet]
    val: ImageSet | None = None
    train: ImageSet | None = None
    train_classnames: list[str] | None = None
    extra_id: list[ImageSet] = field(default_factory=list)
    notes: str = ""
    templates: list[str] | None = None  # the protocol's prompt ensemble (a YAML protocol's)

    def groups(self) -> dict[str, list[str]]:
        """OOD group name -> names of its sets (sets without a group are only in the average)."""
        out: dict[str, list[str]] = {}
        for s in self.ood:
            if s.group:
                out.setdefault(s.group, []).append(s.name)
        return out

    def sets(self) -> list[ImageSet]:
        """Every set the test phase extracts: ID test set, shifted-ID sets, then the OOD sets."""
        return [self.id_test, *self.extra_id, *self.ood]

    def limit_training(self, n: int | None) -> Protocol:
        """A copy whose training split holds at most ``n`` images (``--limit``).

        The runner limits the test and val sets as it extracts them; this bounds what detectors
        train on as well, so that a smoke run of a trainable detector is as short as one of a
        zero-shot one. Few-shot samplers need whole classes, so the split keeps
        ``max(1, n // SMOKE_SHOTS)`` classes spread evenly over its label set, each with its first
        ``SMOKE_SHOTS`` images (all ``n`` in one class when ``n < SMOKE_SHOTS``): enough for the
        papers' 16-shot training.
        """
        if n is None or self.train is None or n >= len(self.train.manifest):
            return self
        from dataclasses import replace

        m = self.train.manifest
        by_class: dict[int, list[int]] = {}
        for i, y in enumerate(m.labels):
            by_class.setdefault(y, []).append(i)
        classes = sorted(by_class)
        k = max(1, min(len(classes), n // SMOKE_SHOTS))
        per_class = n if k == 1 else SMOKE_SHOTS
        chosen = [classes[int(j * len(classes) / k)] for j in range(k)]
        keep = sorted(i for c in chosen for i in by_class[c][:per_class])
        return replace(self, train=replace(self.train, manifest=m.subset(keep)))

    def training_classnames(self) -> list[str]:
        """Class names of the few-shot training split (not the test label set for unseen-ID)."""
        return self.train_classnames or self.classnames


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data root: what, where oodbench looked, and how to get it."""

    what: str
    where: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}\n    looked in: {self.where}\n    how to get it: {self.fix}"


class ProtocolDef:
    """Registry base for protocols. Subclasses set the class attributes and implement ``build``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    needs_data_root: ClassVar[bool] = True

    def build(self, data_root: Path | None, cache_dir: Path) -> Protocol:
        """Resolve the protocol's manifests (raises DataError naming what is missing)."""
        raise NotImplementedError

    def check(self, data_root: Path | None, cache_dir: Path) -> list[Problem]:
        """Problems with the data root for this protocol (empty when it is ready)."""
        return []

"""Protocols declared as data: a table of image sets, as folders or image lists under a data root.

Each :class:`SetSpec` says where a set lives relative to the data root, its role (id / ood / val /
train / shifted-id / ood-val), its OOD group, how many images the papers used, and where it comes
from. The same table drives ``build`` (manifests), ``check`` (what is missing, and how to get it),
``oodbench data index`` (checksums) and the data documentation.

A set is a folder (ImageFolder with class sub-folders, or flat) or an image list (OpenOOD's
``benchmark_imglist`` format, whose paths are relative to ``path``). ``classes`` fixes the label
order of class folders (and with ``only_listed`` reads just those folders, e.g. ImageNet-100 inside
ImageNet-1k val); ``label_range`` keeps a range of labels (half-class splits). OOD images are
always labelled -1. When ``oodbench data index`` has written a checksum table for a set's folder,
the manifest carries the checksums, so a result record names exactly which files it used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from oodbench.data.manifest import Manifest, read_manifest, scan_image_folder
from oodbench.errors import DataError
from oodbench.protocols.base import ImageSet, Problem, Protocol, ProtocolDef

ROLES = ("id", "ood", "val", "train", "shifted-id", "ood-val")


@dataclass(frozen=True)
class SetSpec:
    """Where one set lives under the data root, what it is, and where to get it."""

    name: str
    role: str
    path: str
    expected: int | None
    source: str
    group: str = ""
    imglist: str | None = None
    optional: bool = False
    classes: tuple[str, ...] | None = None
    only_listed: bool = False
    label_range: tuple[int, int] | None = None

    def locate(self, root: Path) -> Path:
        """The folder (or image-list file) this set is read from."""
        return root / (self.imglist or self.path)


class FolderProtocol(ProtocolDef):
    """A protocol whose sets are image folders (ImageFolder or flat) or OpenOOD image lists."""

    sets: ClassVar[tuple[SetSpec, ...]] = ()
    classnames_fn: ClassVar[Callable[[], list[str]] | None] = None
    train_classnames_fn: ClassVar[Callable[[], list[str]] | None] = None
    notes: ClassVar[str] = ""

    def classnames(self) -> list[str]:
        """The ID label set, in label-index order."""
        return type(self).classnames_fn()

    def train_classnames(self) -> list[str] | None:
        """Label set of the few-shot training split where it differs from the test one (unseen)."""
        fn = type(self).train_classnames_fn
        return fn() if fn is not None else None

    def class_folders(self, root: Path, spec: SetSpec) -> list[str] | None:
        """Expected class sub-folder order for an ID set (None: take the sorted folders)."""
        return None

    def manifest(self, root: Path, spec: SetSpec, checksums: bool = True) -> Manifest:
        """The manifest of one set (raises DataError when missing), with the indexed checksums."""
        m = self.raw_manifest(root, spec)
        if spec.label_range is not None:
            lo, hi = spec.label_range
            keep = [i for i, y in enumerate(m.labels) if lo <= y < hi]
            m = m.subset(keep)
            m = replace(m, labels=tuple(y - lo for y in m.labels))
        if spec.role in ("ood", "ood-val"):
            m = replace(m, labels=(-1,) * len(m))
        if checksums:
            from oodbench.data.prepare import attach_checksums

            m = attach_checksums(root, spec, m)
        return m

    def raw_manifest(self, root: Path, spec: SetSpec) -> Manifest:
        """The set's images and labels as found under the root (no label range, no checksums)."""
        if spec.imglist:
            return read_manifest(root / spec.imglist, root, name=spec.name, prefix=spec.path)
        classes = spec.classes if spec.classes is not None else self.class_folders(root, spec)
        if spec.only_listed and classes is not None:
            return scan_listed_folders(root, spec.path, spec.name, classes)
        return scan_image_folder(root, spec.path, spec.name, classes, ood=spec.role == "ood")

    def build(self, data_root: Path | None, cache_dir: Path) -> Protocol:
        root = _require_root(data_root, self.name)
        problems = [p for p in self.check(root, cache_dir, counts=False)]
        if problems:
            raise DataError(
                f"protocol {self.name}: data root {root} is not ready:\n"
                + "\n".join(f"  - {p}" for p in problems)
                + f"\nRun `oodbench data check {self.name} --data-root {root}` after fixing; "
                "docs/data.md walks through every set."
            )
        by_role: dict[str, list[ImageSet]] = {r: [] for r in ROLES}
        for spec in self.sets:
            if spec.optional and not spec.locate(root).exists():
                continue
            by_role[spec.role].append(ImageSet(spec.name, self.manifest(root, spec), spec.group))
        notes = [f"{s.name} is the OOD validation split ({len(s.manifest)} images): for tuning, "
                 "never a test set" for s in by_role["ood-val"]]
        if len(by_role["id"]) != 1:
            raise DataError(f"protocol {self.name} must have exactly one ID test set")
        n_classes = len(self.classnames())
        for s in by_role["id"] + by_role["shifted-id"] + by_role["val"]:
            check_labels(s, n_classes)
        return Protocol(
            name=self.name,
            version=self.version,
            description=self.description,
            classnames=self.classnames(),
            id_test=by_role["id"][0],
            ood=by_role["ood"],
            val=(by_role["val"] or [None])[0],
            train=(by_role["train"] or [None])[0],
            extra_id=by_role["shifted-id"],
            train_classnames=self.train_classnames(),
            notes=" ".join([self.notes, *notes]).strip(),
        )

    def check(self, data_root: Path | None, cache_dir: Path, counts: bool = True,
              deep: bool = False) -> list[Problem]:
        """Missing, empty or incomplete sets and stale indexes; with ``deep``, undecodable files."""
        root = _require_root(data_root, self.name)
        problems = []
        for spec in self.sets:
            where = spec.locate(root)
            if not where.exists():
                if not spec.optional:
                    n = f"{spec.expected:,} images, " if spec.expected else ""
                    problems.append(Problem(f"{spec.name} ({n}{spec.role}) is missing", str(where),
                                            spec.source))
                continue
            if counts:
                try:
                    m = self.manifest(root, spec)
                except DataError as e:
                    problems.append(Problem(f"{spec.name}: {e}", str(where), spec.source))
                    continue
                if len(m) == 0:
                    problems.append(Problem(f"{spec.name} has no images", str(where), spec.source))
                elif spec.imglist and (missing := m.missing()):
                    problems.append(Problem(
                        f"{spec.name}: {len(missing)} listed files are missing, e.g. {missing[:3]}",
                        str(root), spec.source))
                elif deep:
                    problems += _unreadable_problems(spec, m)
        return problems

    def link_notes(self, data_root: Path) -> list[str]:
        """Sets with images that link outside the data root (followed; noted by data check)."""
        out = []
        for spec in self.sets:
            if spec.locate(data_root).exists():
                links = outside_links(self.manifest(data_root, spec, checksums=False), data_root)
                if links:
                    out.append(f"{spec.name}: {len(links)} image(s) are symbolic links to files "
                               f"outside the data root (followed), e.g. {links[0]}; "
                               "`oodbench data index` pins their contents")
        return out

    def count_warnings(self, data_root: Path) -> list[str]:
        """Sets whose image count differs from the papers' (results then are not comparable)."""
        out = []
        for spec in self.sets:
            if spec.expected and spec.locate(data_root).exists():
                n = len(self.manifest(data_root, spec))
                if n != spec.expected:
                    out.append(f"{spec.name}: {n:,} images, the papers use {spec.expected:,}; "
                               "results will not be comparable with published numbers")
        return out


def outside_links(m: Manifest, root: Path) -> list[str]:
    """Images of ``m`` that are symbolic links (or under linked folders) resolving outside the
    data root: they are followed, and ``data check`` says so."""
    base = Path(root).resolve()
    out = []
    for i, rel in enumerate(m.paths):
        try:
            if not Path(os.path.realpath(m.absolute(i))).is_relative_to(base):
                out.append(rel)
        except (OSError, ValueError):
            continue
    return out


def scan_listed_folders(root: Path, subdir: str, name: str, folders: Sequence[str]) -> Manifest:
    """Manifest of only the listed class folders of ``root/subdir``; label = list position."""
    base = Path(root) / subdir
    missing = [f for f in folders if not (base / f).is_dir()]
    if missing:
        raise DataError(f"{name}: {len(missing)} of {len(folders)} class folders are missing under "
                        f"{base}, e.g. {missing[:3]}")
    paths: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        part = scan_image_folder(root, f"{subdir}/{folder}", name)
        paths += part.paths
        labels += [label] * len(part)
    return Manifest(name, Path(root), tuple(paths), tuple(labels), source=str(base))


def _unreadable_problems(spec: SetSpec, m: Manifest) -> list[Problem]:
    from oodbench.data.images import scan_unreadable

    bad = scan_unreadable(m)
    if not bad:
        return []
    shown = "; ".join(f"{m.paths[i]} ({why})" for i, why in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return [Problem(f"{spec.name}: {len(bad)} unreadable or corrupt images: {shown}{more}",
                    str(m.root), "re-extract or re-download those files (or run with "
                    "--skip-unreadable to leave them out, which the record notes)")]


def check_labels(s: ImageSet, n_classes: int) -> None:
    """Refuse an ID-role set whose labels fall outside the class list (or are -1, the OOD mark):
    accuracy would silently count them as wrong."""
    bad = [i for i, y in enumerate(s.manifest.labels) if not 0 <= y < n_classes]
    if bad:
        m = s.manifest
        shown = ", ".join(f"{m.paths[i]} ({m.labels[i]})" for i in bad[:3])
        raise DataError(f"{s.name}: {len(bad)} image(s) have a label outside 0..{n_classes - 1} "
                        f"(the protocol's {n_classes} classes), e.g. {shown}; read from "
                        f"{m.source or m.root}. Fix the labels (-1 marks OOD images only)")


def _require_root(data_root: Path | None, protocol: str) -> Path:
    if data_root is None:
        raise DataError(
            f"protocol {protocol} needs a data root: pass --data-root DIR or set OODBENCH_DATA "
            "(docs/data.md says how to prepare it)"
        )
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist (protocol {protocol}); create it and "
                        "lay out the sets as docs/data.md describes")
    return root

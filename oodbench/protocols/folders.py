"""Protocols declared as data: a table of image sets laid out as folders or image lists under a root.

Each :class:`SetSpec` says where a set lives relative to the data root, its role (id / ood / val /
train / shifted-id), its OOD group, how many images the papers used, and where it comes from. The
same table drives ``build`` (manifests), ``check`` (what is missing, and how to get it) and the
data documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from oodbench.data.manifest import Manifest, read_manifest, scan_image_folder
from oodbench.errors import DataError
from oodbench.protocols.base import ImageSet, Problem, Protocol, ProtocolDef

ROLES = ("id", "ood", "val", "train", "shifted-id")


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

    def locate(self, root: Path) -> Path:
        """The folder (or image-list file) this set is read from."""
        return root / (self.imglist or self.path)


class FolderProtocol(ProtocolDef):
    """A protocol whose sets are image folders (ImageFolder or flat) or OpenOOD image lists."""

    sets: ClassVar[tuple[SetSpec, ...]] = ()
    classnames_fn: ClassVar[Callable[[], list[str]] | None] = None

    def classnames(self) -> list[str]:
        """The ID label set, in label-index order."""
        return type(self).classnames_fn()

    def class_folders(self, root: Path, spec: SetSpec) -> list[str] | None:
        """Expected class sub-folder order for an ID set (None: take the sorted folders)."""
        return None

    def manifest(self, root: Path, spec: SetSpec) -> Manifest:
        """The manifest of one set (raises DataError when missing)."""
        if spec.imglist:
            return read_manifest(root / spec.imglist, root, name=spec.name)
        ood = spec.role == "ood"
        return scan_image_folder(root, spec.path, spec.name, self.class_folders(root, spec), ood=ood)

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
        if len(by_role["id"]) != 1:
            raise DataError(f"protocol {self.name} must have exactly one ID test set")
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
        )

    def check(self, data_root: Path | None, cache_dir: Path, counts: bool = True) -> list[Problem]:
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
        return problems

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

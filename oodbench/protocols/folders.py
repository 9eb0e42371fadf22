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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from oodbench.data.manifest import Manifest, read_manifest, scan_image_folder
from oodbench.errors import ConfigError, DataError
from oodbench.protocols.base import ImageSet, Problem, Protocol, ProtocolDef

ROLES = ("id", "ood", "val", "train", "shifted-id", "ood-val")
LABELLED = ("id", "val", "train", "shifted-id")  # roles whose images must carry class labels
_WNID = re.compile(r"^n\d{8}$")


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


@dataclass(frozen=True)
class Layout:
    """One way a data root can be laid out: where each of the default table's sets lives instead.

    ``moves`` maps a default set path (``imagenet/val``) to the fields that replace it (``path``,
    ``imglist``, ``source``); a set whose path is not listed stays where the default table puts it.
    ``markers`` are paths (under one of ``prefixes``) whose presence identifies the layout, so
    ``data check`` and runs find it without being told; ``source`` says which codebase or command
    produces it.
    """

    name: str
    description: str
    source: str
    markers: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ("",)
    moves: dict[str, dict] = field(default_factory=dict)

    def found(self, root: Path) -> tuple[str, str] | None:
        """(prefix, marker) of the first marker present under ``root``, or None."""
        for prefix in self.prefixes:
            for marker in self.markers:
                if (Path(root) / prefix / marker).exists():
                    return prefix, prefix + marker
        return None

    def remap(self, spec: SetSpec, prefix: str = "") -> SetSpec:
        """The set as this layout places it (unchanged when the layout does not move it)."""
        move = self.moves.get(spec.path)
        if move is None:
            return spec
        kw = dict(move)
        for k in ("path", "imglist"):
            if kw.get(k):
                kw[k] = prefix + kw[k]
        return replace(spec, **kw)


DEFAULT_LAYOUT = Layout("oodbench", "oodbench's own layout (docs/data.md)", "docs/data.md")
LAYOUT_ENV = "OODBENCH_LAYOUT"


class FolderProtocol(ProtocolDef):
    """A protocol whose sets are image folders (ImageFolder or flat) or OpenOOD image lists."""

    sets: ClassVar[tuple[SetSpec, ...]] = ()
    layouts: ClassVar[tuple[Layout, ...]] = ()
    classnames_fn: ClassVar[Callable[[], list[str]] | None] = None
    train_classnames_fn: ClassVar[Callable[[], list[str]] | None] = None
    notes: ClassVar[str] = ""

    def __init__(self, layout: str | None = None) -> None:
        """``layout`` names one of ``layouts`` (default: ``$OODBENCH_LAYOUT``, else detected).

        A layout named in the environment applies only to protocols that accept it (one
        ``OODBENCH_LAYOUT=mcm`` serves a whole ``make bench``); one named here must be accepted.
        """
        env = os.environ.get(LAYOUT_ENV) or None
        if layout is None and env not in self.layout_names():
            env = None
        self.layout_request = layout or env

    def layout_names(self) -> list[str]:
        """Names of the layouts this protocol accepts (the default first)."""
        return [DEFAULT_LAYOUT.name, *(lay.name for lay in type(self).layouts)]

    def resolve_layout(self, root: Path) -> tuple[Layout, str, str]:
        """(layout, prefix, how it was chosen) for ``root``: the requested one, else detected.

        Detection tries oodbench's own layout first (its markers are the default table's set
        folders), then the others in order; the first whose marker exists wins.
        """
        known = {lay.name: lay for lay in (DEFAULT_LAYOUT, *type(self).layouts)}
        if self.layout_request:
            lay = known.get(self.layout_request)
            if lay is None:
                raise ConfigError(
                    f"layout {self.layout_request!r} is not one protocol {self.name} accepts; "
                    f"use one of {', '.join(known)} (--layout or ${LAYOUT_ENV})")
            hit = lay.found(root)
            return lay, hit[0] if hit else "", f"named with --layout/${LAYOUT_ENV}"
        if not type(self).layouts:
            return DEFAULT_LAYOUT, "", "the only one"
        moved = {path for lay in type(self).layouts for path in lay.moves}
        own = [s.locate(root) for s in self.sets if not s.optional and s.path in moved]
        if any(p.exists() for p in own):
            return DEFAULT_LAYOUT, "", "detected"
        for lay in type(self).layouts:
            hit = lay.found(root)
            if hit:
                return lay, hit[0], f"detected from {hit[1]}"
        return DEFAULT_LAYOUT, "", "none of the others was found"

    def specs(self, root: Path) -> tuple[SetSpec, ...]:
        """The set table as laid out under ``root`` (see :meth:`resolve_layout`)."""
        lay, prefix, _ = self.resolve_layout(root)
        return tuple(lay.remap(s, prefix) for s in self.sets)

    def layout_note(self, root: Path) -> str:
        """One line for ``data check``: which layout was used and how it was chosen ('' when the
        protocol accepts only its own)."""
        if not type(self).layouts:
            return ""
        lay, prefix, how = self.resolve_layout(root)
        others = [n for n in self.layout_names() if n != lay.name]
        alt = f"; other layouts: {', '.join(others)} (--layout NAME)" if others else ""
        where = f" under {prefix.rstrip('/')}/" if prefix else ""
        return f"layout {lay.name}{where}, {how}{alt}"

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
        elif spec.role in LABELLED and (unlabelled := [p for p, y in zip(m.paths, m.labels,
                                                                        strict=True) if y < 0]):
            what = {"id": "the ID test set", "val": "the ID val split", "train": "the training "
                    "split", "shifted-id": "a shifted-ID set"}[spec.role]
            raise DataError(
                f"{spec.name} is {what}, so every image needs a class label, but "
                f"{len(unlabelled):,} of {len(m):,} have none (label -1), e.g. "
                f"{unlabelled[:3]}; give them labels (class folders, or an image list with "
                "labels)")
        if checksums:
            from oodbench.data.prepare import attach_checksums

            m = attach_checksums(root, spec, m)
        return m

    def raw_manifest(self, root: Path, spec: SetSpec) -> Manifest:
        """The set's images and labels as found under the root (no label range, no checksums)."""
        if spec.imglist:
            m = read_manifest(root / spec.imglist, root, name=spec.name, prefix=spec.path)
            return _only_listed_wnids(m, spec)
        classes = spec.classes if spec.classes is not None else self.class_folders(root, spec)
        if spec.role in LABELLED:
            prepared = _prepared_flat_val(root, spec)
            if prepared is not None:
                return _only_listed_wnids(prepared, spec)
        if spec.only_listed and classes is not None:
            return scan_listed_folders(root, spec.path, spec.name, classes)
        m = scan_image_folder(root, spec.path, spec.name, classes, ood=spec.role == "ood")
        if spec.role in LABELLED and len(m) and all(y < 0 for y in m.labels):
            raise DataError(
                f"{spec.name}: {root / spec.path} holds {len(m):,} images flat, with no class "
                f"folders, so they have no labels; a {spec.role} set needs them. Sort the images "
                "into one folder per class (or write an image list with labels)")
        return m

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
        for spec in self.specs(root):
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
        for spec in self.specs(root):
            where = spec.locate(root)
            if not where.exists():
                if not spec.optional:
                    n = f"{spec.expected:,} images, " if spec.expected else ""
                    problems.append(Problem(f"{spec.name} ({n}{spec.role}) is missing", str(where),
                                            spec.source))
                continue
            if not counts and spec.role in LABELLED and not spec.imglist:
                try:  # cheap, and a run must not start on an unlabelled flat val folder
                    _prepared_flat_val(root, spec)
                except DataError as e:
                    problems.append(Problem(str(e), str(where), spec.source))
            if counts:
                try:
                    m = self.manifest(root, spec)
                except DataError as e:
                    problems.append(Problem(_named(spec.name, str(e)), str(where), spec.source))
                    continue
                if len(m) == 0:
                    problems.append(Problem(f"{spec.name} has no images", str(where), spec.source))
                elif spec.imglist and (missing := m.missing()):
                    problems.append(Problem(
                        f"{spec.name}: {len(missing):,} listed files are missing, e.g. "
                        f"{missing[:3]}", str(root),
                        _sorted_instead_of_flat(root, missing) or spec.source))
                elif deep:
                    problems += _unreadable_problems(spec, m)
        return problems

    def link_notes(self, data_root: Path) -> list[str]:
        """Sets with images that link outside the data root (followed; noted by data check)."""
        out = []
        for spec in self.specs(data_root):
            if spec.locate(data_root).exists():
                try:
                    m = self.manifest(data_root, spec, checksums=False)
                except DataError:
                    continue  # reported by check()
                links = outside_links(m, data_root)
                if links:
                    out.append(f"{spec.name}: {len(links)} image(s) are symbolic links to files "
                               f"outside the data root (followed), e.g. {links[0]}; "
                               "`oodbench data index` pins their contents")
        return out

    def count_warnings(self, data_root: Path) -> list[str]:
        """Sets whose image count differs from the papers' (results then are not comparable)."""
        out = []
        for spec in self.specs(data_root):
            if spec.expected and spec.locate(data_root).exists():
                try:
                    n = len(self.manifest(data_root, spec, checksums=False))
                except DataError:
                    continue  # reported by check()
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


def _named(name: str, message: str) -> str:
    """``name: message`` without doubling a name the message already starts with."""
    return message if message.startswith(f"{name}:") or message.startswith(f"{name} ") \
        else f"{name}: {message}"


def _only_listed_wnids(m: Manifest, spec: SetSpec) -> Manifest:
    """An ImageNet-1k-labelled list narrowed to the spec's WNID classes (subset protocols)."""
    if not (spec.only_listed and spec.classes and all(_WNID.match(c) for c in spec.classes)):
        return m
    from oodbench.data.imagenet_val import filter_wnids

    return filter_wnids(m, spec.classes)


def _prepared_flat_val(root: Path, spec: SetSpec) -> Manifest | None:
    """The prepared image list of a flat ILSVRC val folder; DataError when it has none yet.

    None when the folder is not a flat ILSVRC val folder (class folders, or other files).
    """
    from oodbench.data.imagenet_val import flat_val_files, flat_val_message, read_val_list

    base = Path(root) / spec.path
    if not base.is_dir():
        return None
    files = flat_val_files(base)
    if not files or any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(base)):
        return None  # sorted (or mixed: scan_image_folder names the loose files)
    m = read_val_list(root, spec.path, spec.name)
    if m is None:
        raise DataError(f"{spec.name}: {flat_val_message(root, spec.path, len(files))}")
    return m


def _sorted_instead_of_flat(root: Path, missing: list[str]) -> str | None:
    """The fix when an image list wants flat files that sit in WNID folders (a sorted ILSVRC val
    reused for OpenOOD's lists), else None."""
    rel = Path(missing[0])
    parent = Path(root) / rel.parent
    if not parent.is_dir():
        return None
    if not any(parent.glob(f"n*/{rel.name}")):
        return None
    return (f"the images are in {parent}, but sorted into WNID folders, while the image list "
            f"names them flat ({rel.parent}/{rel.name}). Link them flat beside the folders, "
            f"without moving or copying them: cd {parent} && find . -mindepth 2 -name '*.JPEG' "
            "-exec ln -s {} . \\; (or let OpenOOD's download.py fetch images_largescale/"
            "imagenet_1k itself: python scripts/download/download.py --contents datasets "
            "--datasets imagenet-1k --save_dir DATA_ROOT)")


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

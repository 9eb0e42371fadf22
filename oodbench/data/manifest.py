"""Manifests: the image lists every dataset is read through.

A manifest is a list of (relative path, label, optional sha256) under a data root. Labels index the
protocol's class list; OOD images carry -1. The on-disk format is one entry per line,
``relative/path<TAB>label[<TAB>sha256]``; whitespace-separated ``path label`` lines (OpenOOD's
``benchmark_imglist`` format) read the same way. Paths must stay inside the root.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from oodbench.errors import DataError, short_repr

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


@dataclass(frozen=True)
class Manifest:
    """An ordered image list under ``root``; ``labels[i]`` is -1 for OOD/unlabelled images."""

    name: str
    root: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    checksums: tuple[str, ...] | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise DataError(f"manifest {self.name!r}: {len(self.paths)} paths but "
                            f"{len(self.labels)} labels")
        if self.checksums is not None and len(self.checksums) != len(self.paths):
            raise DataError(f"manifest {self.name!r}: checksum count does not match path count")
        for p in self.paths:
            check_relative(p, where=f"manifest {self.name!r}")

    def __len__(self) -> int:
        return len(self.paths)

    def digest(self) -> str:
        """sha256 of the entries (paths, labels, checksums): identifies exactly which images."""
        h = hashlib.sha256()
        for i, (p, y) in enumerate(zip(self.paths, self.labels, strict=True)):
            c = self.checksums[i] if self.checksums else ""
            h.update(f"{p}\t{y}\t{c}\n".encode())
        return h.hexdigest()

    def subset(self, indices: Sequence[int], name: str | None = None) -> Manifest:
        """A manifest of the given entries, in the given order."""
        return replace(
            self,
            name=name or self.name,
            paths=tuple(self.paths[i] for i in indices),
            labels=tuple(self.labels[i] for i in indices),
            checksums=tuple(self.checksums[i] for i in indices) if self.checksums else None,
        )

    def limit(self, n: int | None) -> Manifest:
        """At most ``n`` entries, evenly spaced so that every part of the list is represented."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise DataError(f"--limit must be positive, got {n}")
        step = len(self) / n
        return self.subset([int(i * step) for i in range(n)])

    def absolute(self, i: int) -> Path:
        """The file of entry ``i`` on disk."""
        return self.root / self.paths[i]

    def missing(self) -> list[str]:
        """Relative paths of entries that do not exist under the root."""
        return [p for p in self.paths if not (self.root / p).is_file()]


def check_relative(path: str, where: str) -> None:
    """Refuse absolute paths and paths that climb out of the data root with '..'."""
    pp = PurePosixPath(path.replace("\\", "/"))
    if pp.is_absolute() or path.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(path):
        raise DataError(f"{where}: path {path!r} is absolute; manifest paths must be relative to "
                        "the data root")
    if ".." in pp.parts:
        raise DataError(f"{where}: path {path!r} escapes the data root with '..'; refused")
    if not path.strip():
        raise DataError(f"{where}: empty path")


MAX_PATH = 4096  # Linux PATH_MAX: a longer list entry is not a file name


def parse_manifest_lines(lines: Iterable[str], name: str, root: Path, source: str = "",
                         prefix: str = "") -> Manifest:
    """Parse ``path<TAB>label[<TAB>sha256]`` or whitespace ``path label`` lines into a Manifest.

    Every path must be relative and stay inside the root; ``prefix`` (a folder under the root that
    an image list's paths are relative to) is joined on after that check.
    """
    paths: list[str] = []
    labels: list[int] = []
    sums: list[str] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\n").rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
        where = f"{source or name}, line {lineno}"
        if len(parts) < 2 or len(parts) > 3:
            raise DataError(f"{where}: expected 'path label [sha256]', got {short_repr(line)}")
        try:
            label = int(parts[1])
        except ValueError:
            raise DataError(f"{where}: label {short_repr(parts[1])} is not an integer") from None
        if label < -1:
            raise DataError(f"{where}: label {label} is below -1 (use -1 for OOD images)")
        if len(parts[0]) > MAX_PATH:
            raise DataError(f"{where}: a path of {len(parts[0]):,} characters "
                            f"({short_repr(parts[0])}) is longer than any file system allows")
        check_relative(parts[0], where)
        path = f"{prefix.rstrip('/')}/{parts[0]}" if prefix else parts[0]
        check_relative(path, where)
        paths.append(path)
        labels.append(label)
        if len(parts) == 3:
            digest = parts[2].strip().lower()
            if not _is_sha256(digest):
                raise DataError(f"{where}: checksum {short_repr(parts[2])} is not a sha256 "
                                "(64 hex digits)")
            sums.append(digest)
    if sums and len(sums) != len(paths):
        raise DataError(f"{source or name}: some lines have a checksum and some do not")
    return Manifest(name, root, tuple(paths), tuple(labels), tuple(sums) or None, source=source)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def read_manifest(path: Path, root: Path, name: str | None = None, prefix: str = "") -> Manifest:
    """Read a manifest or an OpenOOD image list file; its paths are relative to ``root/prefix``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image list {path} does not exist")
    try:
        # utf-8-sig: a byte-order mark (Windows editors) would otherwise join the first path
        text = path.read_text(encoding="utf-8-sig", errors="strict").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"image list {path} is not UTF-8 text (byte {e.start}); is it the right "
                        "file?") from None
    return parse_manifest_lines(text, name or path.stem, Path(root), source=str(path),
                                prefix=prefix)


def write_manifest(manifest: Manifest, path: Path) -> None:
    """Write a manifest atomically in the tab-separated format."""
    from oodbench.io import atomic_write_text

    lines = [f"# oodbench manifest {manifest.name}: path<TAB>label[<TAB>sha256], root-relative"]
    for i, (p, y) in enumerate(zip(manifest.paths, manifest.labels, strict=True)):
        lines.append(f"{p}\t{y}\t{manifest.checksums[i]}" if manifest.checksums else f"{p}\t{y}")
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def scan_image_folder(
    root: Path, subdir: str, name: str, classes: Sequence[str] | None = None, ood: bool = False
) -> Manifest:
    """Manifest of ``root/subdir``: class sub-folders in sorted order (ImageFolder) or flat.

    With ``ood=True`` every label is -1. With ``classes`` given, sub-folders are matched to that
    order and an unexpected folder is an error.
    """
    base = Path(root) / subdir
    if not base.is_dir():
        raise DataError(f"{name}: folder {base} does not exist")
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError as e:
        raise DataError(_unreadable_folder(name, base, e)) from None
    kinds = {e.name: _kind(e) for e in entries}
    broken = [n for n, k in kinds.items() if k is None]
    if broken:
        raise DataError(f"{name}: {len(broken)} entr{'y' if len(broken) == 1 else 'ies'} of {base} "
                        f"cannot be followed (a symbolic link loop?): "
                        f"{', '.join(map(repr, broken[:5]))}; remove or fix them")
    dirs = [n for n, k in kinds.items() if k == "dir" and not n.startswith(".")]
    files = [n for n, k in kinds.items() if k == "file" and n.lower().endswith(IMAGE_SUFFIXES)]
    bad_names = [n for n in dirs + files if not _safe_name(n)]
    if bad_names:
        raise DataError(f"{name}: names in {base} that image lists cannot hold (not UTF-8, "
                        f"or with a tab or line break): {', '.join(map(repr, bad_names[:5]))}; "
                        "rename them")
    if dirs and files:
        raise DataError(
            f"{name}: {base} mixes {len(dirs):,} class folders with {len(files):,} loose image "
            f"file(s) at its top: {', '.join(files[:10])}{' ...' if len(files) > 10 else ''}. "
            "Every image must sit in a class folder (or none may): move the loose files into "
            "their class folders, or out of this folder")
    if not dirs and not files:
        tars = [n for n, k in kinds.items() if k == "file" and n.endswith(".tar")]
        if tars:
            raise DataError(
                f"{name}: {base} holds {len(tars):,} .tar file(s) (e.g. {tars[0]}) and no images; "
                "ILSVRC2012_img_train.tar unpacks into one tar per class. Unpack each into a "
                f"folder of its own name: cd {base} && for f in *.tar; do "
                'mkdir -p "${f%.tar}" && tar -xf "$f" -C "${f%.tar}"; done '
                "(then delete the tars)")
    paths: list[str] = []
    labels: list[int] = []
    if dirs and not files:
        order = list(classes) if classes is not None else dirs
        index = {c: i for i, c in enumerate(order)}
        for d in dirs:
            if d not in index:
                raise DataError(f"{name}: unexpected class folder {base / d}")
            for f in sorted(_images_below(base / d, name)):
                paths.append(f"{subdir}/{d}/{f}")
                labels.append(-1 if ood else index[d])
    else:
        for f in files:
            paths.append(f"{subdir}/{f}")
            labels.append(-1)
    return Manifest(name, Path(root), tuple(paths), tuple(labels), source=str(base))


def _kind(entry: os.DirEntry) -> str | None:
    """'dir', 'file' or 'other' (a dangling link, a socket); None when it cannot be followed."""
    try:
        return "dir" if entry.is_dir() else "file" if entry.is_file() else "other"
    except OSError:  # ELOOP: a symbolic link loop
        return None


def _safe_name(name: str) -> bool:
    """Whether a file name survives an image list: UTF-8, no tab, no line break."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, held as surrogate escapes
        return False
    return not any(c in name for c in "\t\n\r")


def _unreadable_folder(name: str, folder: Path | str, e: OSError) -> str:
    return (f"{name}: cannot read the folder {folder} ({e.strerror or e}); its images would be "
            "silently missing. Give this user read access (chmod -R a+rX), or move the folder "
            "out of the data root")


def _images_below(folder: Path, name: str = "") -> list[str]:
    """Image files under ``folder`` (relative paths); an unreadable sub-folder is an error."""
    def refuse(e: OSError) -> None:
        raise DataError(_unreadable_folder(name or str(folder), e.filename or folder, e))

    out = []
    for dirpath, _, fnames in os.walk(folder, onerror=refuse):
        rel = os.path.relpath(dirpath, folder)
        bad = [f for f in fnames if f.lower().endswith(IMAGE_SUFFIXES)
               and not _safe_name(os.path.join(rel, f))]
        if bad:
            raise DataError(f"{name or folder}: file names in {dirpath} that image lists cannot "
                            f"hold (not UTF-8, or with a tab or line break): "
                            f"{', '.join(map(repr, bad[:5]))}; rename them")
        for f in fnames:
            if f.lower().endswith(IMAGE_SUFFIXES):
                out.append(f if rel == "." else f"{rel}/{f}")
    return out

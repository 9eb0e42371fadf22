"""Data preparation: ``oodbench data index`` writes sha256 checksum tables for a protocol's sets.

One table per set location (folder or image list) under ``<data root>/.oodbench/index/``, shared
by every protocol that reads that location: ``relative/path<TAB>sha256`` lines, written
atomically. Later runs attach the checksums to the manifests, so the manifest hash in a result
record covers the file contents, not only their names. A table that lacks a file the manifest
lists is stale and stops the run with the command that refreshes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from oodbench.data.manifest import Manifest
from oodbench.errors import DataError
from oodbench.io import atomic_write_text

if TYPE_CHECKING:
    from oodbench.protocols.folders import FolderProtocol, SetSpec

INDEX_DIR = ".oodbench/index"


def index_path(root: Path, spec: SetSpec) -> Path:
    """Where the checksum table of a set's folder or image list lives."""
    where = (spec.imglist or spec.path).strip("/")
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in where)
    return Path(root) / INDEX_DIR / f"{name}.sha256"


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def read_index(path: Path) -> dict[str, str]:
    """relative path -> sha256 of one checksum table."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            rel, _, digest = line.partition("\t")
            out[rel] = digest
    return out


def attach_checksums(root: Path, spec: SetSpec, m: Manifest) -> Manifest:
    """The manifest with the indexed checksums, unchanged when the set was never indexed."""
    table = index_path(root, spec)
    if not table.is_file():
        return m
    sums = read_index(table)
    missing = [p for p in m.paths if p not in sums]
    if missing:
        raise DataError(
            f"{spec.name}: the checksum index {table} lacks {len(missing)} of its files (e.g. "
            f"{missing[:3]}); the folder changed since it was indexed. Rerun `oodbench data index "
            "PROTOCOL`, or delete the index file to run without checksums")
    return replace(m, checksums=tuple(sums[p] for p in m.paths))


def index_protocol(proto: FolderProtocol, root: Path, workers: int = 4,
                   report: Callable[[str], None] = print) -> list[Path]:
    """Hash every file of every present set of a protocol and write the checksum tables."""
    written = []
    for spec in proto.specs(root):
        if not spec.locate(root).exists():
            if not spec.optional:
                report(f"skipped {spec.name}: {spec.locate(root)} does not exist ({spec.source})")
            continue
        m = proto.raw_manifest(root, spec)
        missing = m.missing()
        if missing:
            raise DataError(f"{spec.name}: {len(missing)} listed files do not exist under {root}, "
                            f"e.g. {missing[:3]}; fix the set before indexing it")
        table = index_path(root, spec)
        old = read_index(table) if table.is_file() else {}
        with ThreadPoolExecutor(max(1, workers)) as pool:
            digests = list(pool.map(lambda p: sha256_file(root / p), m.paths))
        sums = {**old, **dict(zip(m.paths, digests, strict=True))}
        changed = sorted(p for p in m.paths if p in old and old[p] != sums[p])
        lines = [f"# oodbench checksum index of {spec.imglist or spec.path}: path<TAB>sha256"]
        lines += [f"{p}\t{d}" for p, d in sorted(sums.items())]
        atomic_write_text(table, "\n".join(lines) + "\n")
        note = f" ({len(changed)} files changed since the last index, e.g. {changed[:3]})" \
            if changed else ""
        report(f"indexed {spec.name}: {len(m):,} files -> {table}{note}")
        written.append(table)
    return written

"""The content-addressed cache: ``.npy`` arrays with a JSON sidecar that spells out their key.

Three levels share one layout, ``<root>/<level>/<key[:2]>/<key>/{data.npy, meta.json}``:
``text`` (backbone + weights + prompt strings), ``images`` (backbone + weights + preprocessing +
manifest + feature kind + dtype) and ``scores`` (image-feature key + detector, version,
hyperparameters, seed). The key is the sha256 of the canonical JSON of the spec, so anything that
changes the bytes changes the key. The array is written first and the sidecar last, both atomically:
an entry without a valid sidecar does not exist. The sidecar records the array's sha256, which is
checked before an entry is trusted; a damaged entry is dropped and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oodbench.io import atomic_save_npy, atomic_write_json

LEVELS = ("text", "images", "scores")
DEFAULT_CACHE = Path(".oodbench-cache")


def default_cache_dir() -> Path:
    """``$OODBENCH_CACHE`` or ``./.oodbench-cache``."""
    return Path(os.environ.get("OODBENCH_CACHE", DEFAULT_CACHE)).expanduser()


def spec_key(spec: dict) -> str:
    """sha256 (hex, 32 chars) of the canonical JSON of ``spec``."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def array_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class EntryInfo:
    """One cache entry as listed by ``oodbench cache ls``."""

    level: str
    key: str
    path: Path
    bytes: int
    created: float
    spec: dict


class Cache:
    """A directory of content-addressed array entries."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def entry_dir(self, level: str, key: str) -> Path:
        """Folder of one entry."""
        if level not in LEVELS:
            raise ValueError(f"unknown cache level {level!r}")
        return self.root / level / key[:2] / key

    def load(self, level: str, spec: dict, mmap: bool = True) -> np.ndarray | None:
        """The cached array for ``spec``, or None when absent or damaged (a damaged one is removed)."""
        key = spec_key(spec)
        d = self.entry_dir(level, key)
        meta = self._valid_meta(d, key, level)
        if meta is None:
            return None
        try:
            arr = np.load(d / "data.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception:
            self._drop(d)
            return None
        if list(arr.shape) != meta["shape"] or str(arr.dtype) != meta["dtype"]:
            self._drop(d)
            return None
        return arr

    def save(self, level: str, spec: dict, array: np.ndarray, **info) -> Path:
        """Store ``array`` under ``spec`` atomically (array first, then the sidecar)."""
        key = spec_key(spec)
        d = self.entry_dir(level, key)
        atomic_save_npy(d / "data.npy", array)
        meta = {
            "level": level, "key": key, "spec": spec, "shape": list(array.shape),
            "dtype": str(array.dtype), "sha256": array_sha256(d / "data.npy"),
            "created": time.time(), **info,
        }
        atomic_write_json(d / "meta.json", meta)
        return d

    def chunk_dir(self, level: str, spec: dict) -> Path:
        """Folder for the partial chunks of an entry being built (resumable extraction)."""
        return self.entry_dir(level, spec_key(spec)) / "chunks"

    def _valid_meta(self, d: Path, key: str, level: str, check_sum: bool = True) -> dict | None:
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            ok = (isinstance(meta, dict) and meta.get("key") == key and meta.get("level") == level
                  and spec_key(meta["spec"]) == key and isinstance(meta.get("shape"), list)
                  and isinstance(meta.get("sha256"), str))
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok and check_sum:
            data = d / "data.npy"
            ok = data.is_file() and array_sha256(data) == meta["sha256"]
        if not ok:
            self._drop(d)
            return None
        return meta

    def _drop(self, d: Path) -> None:
        """Remove a damaged entry's sidecar and data (chunks of a rebuild are kept)."""
        for name in ("meta.json", "data.npy"):
            try:
                (d / name).unlink()
            except FileNotFoundError:
                pass

    def entries(self) -> list[EntryInfo]:
        """Every complete entry (sidecar present), without checking sums."""
        out = []
        for level in LEVELS:
            for meta_path in sorted((self.root / level).glob("*/*/meta.json")):
                try:
                    meta = json.loads(meta_path.read_text())
                    size = (meta_path.parent / "data.npy").stat().st_size
                except (OSError, ValueError):
                    continue
                out.append(EntryInfo(level, meta.get("key", "?"), meta_path.parent, size,
                                     float(meta.get("created", 0)), meta.get("spec", {})))
        return out

    def verify(self) -> list[tuple[Path, str]]:
        """Check every entry's sidecar and checksum; returns (entry, problem) for the damaged ones."""
        bad = []
        for level in LEVELS:
            for d in sorted(p for p in (self.root / level).glob("*/*") if p.is_dir()):
                meta_path = d / "meta.json"
                if not meta_path.exists():
                    if (d / "data.npy").exists():
                        bad.append((d, "data without a sidecar (interrupted write)"))
                    continue
                try:
                    meta = json.loads(meta_path.read_text())
                    if spec_key(meta["spec"]) != d.name or meta.get("key") != d.name:
                        bad.append((d, "sidecar spec does not hash to the entry's key"))
                    elif array_sha256(d / "data.npy") != meta["sha256"]:
                        bad.append((d, "data does not match its recorded sha256"))
                except (OSError, ValueError, KeyError, TypeError) as e:
                    bad.append((d, f"unreadable entry ({type(e).__name__})"))
        return bad

    def gc(self, older_than_days: float | None = None, level: str | None = None,
           dry_run: bool = False) -> list[Path]:
        """Remove damaged entries, stale chunks and (optionally) entries older than N days."""
        removed = [d for d, _ in self.verify()]
        now = time.time()
        for e in self.entries():
            if level and e.level != level:
                continue
            if older_than_days is not None and now - e.created > older_than_days * 86400:
                removed.append(e.path)
        for chunks in self.root.glob("*/*/*/chunks"):
            if (chunks.parent / "meta.json").exists():
                removed.append(chunks)
        if not dry_run:
            for p in removed:
                shutil.rmtree(p, ignore_errors=True)
        return removed

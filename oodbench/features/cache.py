"""The content-addressed cache: ``.npy`` arrays with a JSON sidecar that spells out their key.

Three levels share one layout, ``<root>/<level>/<key[:2]>/<key>/{data.npy, meta.json}``:
``text`` (backbone + weights + prompt strings), ``images`` (backbone + weights + preprocessing +
manifest + feature kind + dtype) and ``scores`` (image-feature key + detector, version,
hyperparameters, seed). The key is the sha256 of the canonical JSON of the spec, so anything that
changes the bytes changes the key. The array is written first and the sidecar last, both atomically:
an entry without a valid sidecar does not exist. The sidecar records the array's sha256, which is
checked before an entry is trusted; a damaged entry is dropped and recomputed.

Processes may share one cache. Every read, write and drop of an entry holds that entry's file lock
(:mod:`oodbench.locks`), and a write never replaces a valid entry (first writer wins), so a reader
never sees one writer's array with another's sidecar. :meth:`Cache.lock` gives callers a named lock
for work that must happen once (extracting one set). A fourth level, ``checks``, holds the results
of image readability checks.
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

from oodbench.errors import DataError
from oodbench.io import atomic_save_npy, atomic_write_json
from oodbench.locks import FileLock

LEVELS = ("text", "images", "scores", "checks")
STALE_TMP_S = 3600.0  # a temporary file older than this belongs to a writer that died
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

    def entry_lock(self, level: str, key: str) -> FileLock:
        """The lock guarding one entry's files (striped over 256 lock files by key prefix)."""
        return FileLock(self.root / "locks" / f"entry-{level}-{key[:2]}.lock")

    def lock(self, name: str, what: str = "") -> FileLock:
        """A named lock for work that must run once across processes (e.g. extracting one set)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return FileLock(self.root / "locks" / f"{safe}.lock", what=what)

    def has(self, level: str, spec: dict) -> bool:
        """Whether a complete entry for ``spec`` exists (sidecar present; checksum not verified)."""
        return (self.entry_dir(level, spec_key(spec)) / "meta.json").is_file()

    def load(self, level: str, spec: dict, mmap: bool = True) -> np.ndarray | None:
        """The cached array for ``spec``; None when absent or damaged (a damaged one is removed)."""
        key = spec_key(spec)
        d = self.entry_dir(level, key)
        if not (d / "meta.json").is_file():
            return None
        with self.entry_lock(level, key):
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

    def meta(self, level: str, spec: dict) -> dict:
        """The sidecar of a valid entry (its spec, shape, checksum and the ``info`` saved with
        it); {} when there is none."""
        key = spec_key(spec)
        d = self.entry_dir(level, key)
        if not (d / "meta.json").is_file():
            return {}
        with self.entry_lock(level, key):
            return self._valid_meta(d, key, level, check_sum=False) or {}

    def save(self, level: str, spec: dict, array: np.ndarray, **info) -> Path:
        """Store ``array`` under ``spec`` atomically (array first, then the sidecar).

        A valid entry already there (written by a concurrent run) is kept, not replaced. When the
        spec says how many rows the array has (``n``) and the array disagrees, nothing is stored.
        """
        key = spec_key(spec)
        d = self.entry_dir(level, key)
        check_rows(level, key, spec, array, self.chunk_dir(level, spec))
        with self.entry_lock(level, key):
            if self._valid_meta(d, key, level) is not None:
                return d
            atomic_save_npy(d / "data.npy", array)
            meta = {
                "level": level, "key": key, "spec": spec, "shape": list(array.shape),
                "dtype": str(array.dtype), "sha256": array_sha256(d / "data.npy"),
                "created": time.time(), **info,
            }
            try:
                atomic_write_json(d / "meta.json", meta)
            except BaseException:
                _unlink(d / "data.npy")  # no entry rather than data without its sidecar
                raise
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
            _unlink(d / name)

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
        """Check every entry's sidecar and checksum; returns (entry, problem) for the damaged ones.

        Leftovers of an interrupted write (data without a sidecar, partial chunks, temporary
        files) are not damage: no reader ever uses them. :meth:`leftovers` lists them.
        """
        bad = []
        for level in LEVELS:
            for d in sorted(p for p in (self.root / level).glob("*/*") if p.is_dir()):
                if not (d / "meta.json").exists():
                    continue
                with self.entry_lock(level, d.name):
                    problem = _entry_problem(d, level)
                if problem:
                    bad.append((d, problem))
        return bad

    def leftovers(self, stale_s: float = STALE_TMP_S) -> list[Path]:
        """What interrupted runs left that no reader uses: orphan arrays, stale chunks, temp files.

        Chunks of an entry still being built are kept (a rerun resumes from them); temporary files
        younger than ``stale_s`` may belong to a live writer and are kept too.
        """
        out: list[Path] = []
        now = time.time()
        for level in LEVELS:
            for d in sorted(p for p in (self.root / level).glob("*/*") if p.is_dir()):
                complete = (d / "meta.json").exists()
                if not complete and (d / "data.npy").exists():
                    out.append(d / "data.npy")
                if complete and (d / "chunks").exists():
                    out.append(d / "chunks")
                for tmp in d.rglob(".*.tmp"):
                    try:
                        if now - tmp.stat().st_mtime > stale_s:
                            out.append(tmp)
                    except FileNotFoundError:
                        pass
        return out

    def gc(self, older_than_days: float | None = None, level: str | None = None,
           dry_run: bool = False) -> list[Path]:
        """Remove damaged entries, leftovers of interrupted runs and (optionally) old entries."""
        removed = [d for d, _ in self.verify()]
        now = time.time()
        for e in self.entries():
            if level and e.level != level:
                continue
            if older_than_days is not None and now - e.created > older_than_days * 86400:
                removed.append(e.path)
        removed += self.leftovers()
        if not dry_run:
            for p in removed:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    _unlink(p)
        return removed


def check_rows(level: str, key: str, spec: dict, array: np.ndarray, chunks: Path) -> None:
    """Refuse an array whose row count differs from the spec's ``n`` (stale chunks are removed).

    Resumable extraction joins chunk files by index; chunks left by a run with another chunk size
    would join into the wrong rows. The count exposes that, and removing the chunks makes the
    rerun start clean.
    """
    n = spec.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or (array.ndim and array.shape[0] == n):
        return
    shutil.rmtree(chunks, ignore_errors=True)
    raise DataError(
        f"cache {level}/{key}: the joined array has {array.shape[0] if array.ndim else 0} rows "
        f"but {n} images were extracted. Partial chunks from an interrupted run with another "
        f"--chunk-size were mixed in; they have been removed ({chunks}). Rerun the same command."
    )


def _entry_problem(d: Path, level: str) -> str | None:
    """Why a complete entry cannot be trusted, or None when its sidecar and checksum hold."""
    try:
        meta = json.loads((d / "meta.json").read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
            return "sidecar is not a JSON object with a spec"
        if spec_key(meta["spec"]) != d.name or meta.get("key") != d.name:
            return "sidecar spec does not hash to the entry's key"
        if meta.get("level") != level:
            return f"sidecar says level {meta.get('level')!r}"
        if not (d / "data.npy").is_file():
            return "sidecar without data"
        if array_sha256(d / "data.npy") != meta["sha256"]:
            return "data does not match its recorded sha256"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable entry ({type(e).__name__})"
    return None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass

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

The cache folder carries a marker file of its own (:data:`MARKER`, with the layout version),
written when the cache is created. ``cache ls``, ``verify`` and ``gc`` act only on a folder that
carries it, and only on files named as the cache names them (``<level>/<hex2>/<hex32>/`` with
``meta.json``, ``data.npy``, ``chunks/`` and temporaries): anything else is reported, never removed.
A folder made by an older oodbench (no marker) is adopted when everything in it is a cache folder;
otherwise maintenance refuses and says how to proceed (runs still work: they touch only their own
files).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oodbench.errors import DataError, OodbenchError
from oodbench.io import atomic_save_npy, atomic_write_json
from oodbench.locks import FileLock

LEVELS = ("text", "images", "scores", "checks")
STALE_TMP_S = 3600.0  # a temporary file older than this belongs to a writer that died
CACHE_ENV = "OODBENCH_CACHE"
MARKER = "OODBENCH-CACHE.json"  # the cache's own marker: {"oodbench_cache": true, "layout": N}
CACHE_LAYOUT = 1
TOY_WORLD = "toy-world"  # oodbench.protocols.toy.world_root: the toy images, derived data
# what a cache folder holds at its top: levels, locks, trained artifacts, the toy world
OWN_TOP = frozenset({*LEVELS, "locks", "artifacts", TOY_WORLD, MARKER})
OWN_TOP_PREFIXES = (f".{MARKER}.",)
_PREFIX = re.compile(r"[0-9a-f]{2}")
_KEY = re.compile(r"[0-9a-f]{32}")
_CHUNK = re.compile(r"\d{9}-\d{9}\.npy")
_ENTRY_FILES = ("meta.json", "data.npy")


class CacheError(OodbenchError):
    """Cache maintenance refused: the folder is not (or not only) an oodbench cache."""


def default_cache_dir() -> Path:
    """``$OODBENCH_CACHE``, else ``$XDG_CACHE_HOME/oodbench``, else ``~/.cache/oodbench``.

    One cache per user, whatever the current folder (as the Hugging Face hub cache does), so that
    changing directory never re-extracts features. An empty variable counts as unset.
    """
    own = os.environ.get(CACHE_ENV)
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "oodbench"


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
    info: dict = field(default_factory=dict)  # the sidecar's other fields (set, detector, ...)

    def describe(self) -> str:
        """What the entry holds, in words: backbone, set, kind or detector (for ``cache ls``)."""
        sp, info = self.spec, self.info
        bb = _backbone_name(sp.get("backbone"))
        if self.level == "images":
            return f"{bb} {sp.get('kind', '?')} features of {info.get('source', '?')} " \
                   f"({sp.get('n', '?')} images)"
        if self.level == "text":
            return f"{bb} text embeddings ({sp.get('n', '?')} prompts)"
        if self.level == "scores":
            det = sp.get("detector")
            name = det.get("name") if isinstance(det, dict) else info.get("detector", "?")
            proto = sp.get("protocol", {}).get("name", "?") if isinstance(
                sp.get("protocol"), dict) else "?"
            return (f"{name} scores on {proto}/{info.get('set', '?')}, "
                    f"seed {sp.get('seed', '?')}, {bb}")
        if self.level == "checks":
            return f"readability check of {info.get('source', '?')}"
        return self.level


class Cache:
    """A directory of content-addressed array entries."""

    def __init__(self, root: Path | str | None = None):
        # an empty path is "unset", never the current folder
        self.root = Path(root).expanduser() if root not in (None, "") else default_cache_dir()
        self._marked = False
        self._tried = False  # ensure_marker ran once (locks ask on every entry)

    # ------------------------------------------------------------------ the marker

    def marker(self) -> dict | None:
        """The marker's contents, or None when the folder carries no valid marker."""
        try:
            meta = json.loads((self.root / MARKER).read_text())
        except (OSError, ValueError):
            return None
        ok = isinstance(meta, dict) and meta.get("oodbench_cache") is True
        return meta if ok and isinstance(meta.get("layout"), int) else None

    def foreign(self) -> list[Path]:
        """Top-level items of the folder that are not the cache's (sorted)."""
        try:
            names = sorted(os.listdir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [self.root / n for n in names
                if n not in OWN_TOP and not n.startswith(OWN_TOP_PREFIXES)]

    def ensure_marker(self, once: bool = False) -> bool:
        """Mark the folder as a cache when it is new, empty or holds only cache folders (an
        older oodbench's cache is adopted); False when it holds other files (left unmarked).
        With ``once`` (every lock asks) a folder found unmarkable is not listed again."""
        if once and self._tried:
            return self._marked
        self._tried = True
        if self._marked or self.marker() is not None:
            self._marked = True
            return True
        if self.root.exists() and not self.root.is_dir() or self.foreign():
            return False
        try:
            atomic_write_json(self.root / MARKER, {"oodbench_cache": True,
                                                   "layout": CACHE_LAYOUT, "created": time.time()})
        except OSError:  # a read-only shared cache: runs may still read it
            return False
        self._marked = True
        return True

    def require_marker(self, action: str) -> None:
        """Refuse ``action`` (ls, verify, gc) on a folder that is not an oodbench cache."""
        where = "(check --cache-dir / $OODBENCH_CACHE)"
        if not self.root.is_dir():
            raise CacheError(f"no cache at {self.root}: it is not a folder; nothing to {action} "
                             f"{where}")
        meta = self.marker()
        if meta is not None:
            if meta["layout"] > CACHE_LAYOUT:
                raise CacheError(f"the cache {self.root} has layout {meta['layout']}, newer than "
                                 f"this oodbench's {CACHE_LAYOUT}; use the newer oodbench to "
                                 f"{action} it")
            return
        if (self.root / MARKER).exists():
            raise CacheError(f"{self.root / MARKER} is not a valid cache marker; it was not "
                             "written by oodbench. Nothing was touched")
        if self.ensure_marker():
            return
        strangers = self.foreign()
        shown = ", ".join(p.name for p in strangers[:5])
        more = f" and {len(strangers) - 5} more" if len(strangers) > 5 else ""
        raise CacheError(
            f"{self.root} does not carry the oodbench cache marker ({MARKER}) and holds files "
            f"that are not the cache's ({shown}{more}); refusing to {action} it, nothing was "
            f"touched. If it is the right folder {where}, move those files out (a cache made by "
            f"an older oodbench is then adopted), or start a new cache with another --cache-dir")

    def entry_dir(self, level: str, key: str) -> Path:
        """Folder of one entry."""
        if level not in LEVELS:
            raise ValueError(f"unknown cache level {level!r}")
        return self.root / level / key[:2] / key

    def entry_lock(self, level: str, key: str) -> FileLock:
        """The lock guarding one entry's files (striped over 256 lock files by key prefix)."""
        self.ensure_marker(once=True)
        return FileLock(self.root / "locks" / f"entry-{level}-{key[:2]}.lock")

    def lock(self, name: str, what: str = "") -> FileLock:
        """A named lock for work that must run once across processes (e.g. extracting one set)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        self.ensure_marker(once=True)
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

    def entry_dirs(self, level: str) -> list[Path]:
        """The folders of ``level`` named as the cache names entries (``<hex2>/<hex32>``)."""
        out = []
        for prefix in _subdirs(self.root / level):
            if _PREFIX.fullmatch(prefix.name):
                out += [d for d in _subdirs(prefix)
                        if _KEY.fullmatch(d.name) and d.name[:2] == prefix.name]
        return out

    def strangers(self) -> list[Path]:
        """Files and folders in the cache that it did not name: reported, never removed."""
        out = list(self.foreign())
        for level in LEVELS:
            top = self.root / level
            if not top.is_dir() or top.is_symlink():
                continue
            for p in sorted(top.iterdir()):
                if not (_PREFIX.fullmatch(p.name) and p.is_dir() and not p.is_symlink()):
                    out.append(p)
                    continue
                for d in sorted(p.iterdir()):
                    if not (_KEY.fullmatch(d.name) and d.name[:2] == p.name and d.is_dir()
                            and not d.is_symlink()):
                        out.append(d)
                        continue
                    out += [f for f in sorted(d.iterdir()) if not _own_entry_file(f)]
                    chunks = d / "chunks"
                    if chunks.is_dir() and not chunks.is_symlink():
                        out += [f for f in sorted(chunks.iterdir()) if not _own_chunk_file(f)]
        return out

    def entries(self) -> list[EntryInfo]:
        """Every complete entry (sidecar present), without checking sums."""
        out = []
        for level in LEVELS:
            for d in self.entry_dirs(level):
                meta_path = d / "meta.json"
                try:
                    meta = json.loads(meta_path.read_text())
                    size = (d / "data.npy").stat().st_size
                except (OSError, ValueError):
                    continue
                if not isinstance(meta, dict):
                    continue
                out.append(EntryInfo(level, str(meta.get("key", "?")), d, size,
                                     _number(meta.get("created")),
                                     meta.get("spec") if isinstance(meta.get("spec"), dict)
                                     else {},
                                     {k: v for k, v in meta.items() if k not in _META_KEYS}))
        return out

    def derived(self) -> list[tuple[str, Path, int]]:
        """(what, folder, bytes) of the cache's folders that are not entries: the toy world and
        the trained detectors' artifacts (``cache ls`` counts them too)."""
        out = []
        for name, what in ((TOY_WORLD, "toy world (generated images)"),
                           ("artifacts", "trained detectors' artifacts")):
            d = self.root / name
            if d.is_dir() and not d.is_symlink():
                out.append((what, d, _folder_bytes(d)))
        return out

    def verify(self) -> list[tuple[Path, str]]:
        """Check every entry's sidecar and checksum; returns (entry, problem) for the damaged ones.

        Leftovers of an interrupted write (data without a sidecar, partial chunks, temporary
        files) are not damage: no reader ever uses them. :meth:`leftovers` lists them.
        """
        bad = []
        for level in LEVELS:
            for d in self.entry_dirs(level):
                if not (d / "meta.json").exists():
                    continue
                with self.entry_lock(level, d.name):
                    problem = _entry_problem(d, level)
                if problem:
                    bad.append((d, problem))
        return bad

    def leftovers(self, stale_s: float = STALE_TMP_S) -> list[Path]:
        """What interrupted runs left that no reader uses: orphan arrays, stale chunks, temp files.

        Only what is older than ``stale_s`` counts: a younger orphan array or temporary file may
        belong to a live writer (between the two writes of :meth:`save`). Chunks of an entry
        still being built are kept (a rerun resumes from them). Each entry is looked at under
        its lock.
        """
        out: list[Path] = []
        for level in LEVELS:
            for d in self.entry_dirs(level):
                with self.entry_lock(level, d.name):
                    out += _entry_leftovers(d, stale_s)
        for p in (self.root / TOY_WORLD).glob(".toy-tmp-*"):  # worlds whose writer died
            if p.is_dir() and not p.is_symlink() and _age(p) > stale_s:
                out.append(p)
        return out

    def gc(self, older_than_days: float | None = None, level: str | None = None,
           dry_run: bool = False, stale_s: float = STALE_TMP_S) -> list[Path]:
        """Remove damaged entries, leftovers of interrupted runs and (optionally) old entries.

        Only the cache's own files are removed (never a whole folder tree), each under its
        entry's lock; what the cache did not name is left alone (see :meth:`strangers`).
        """
        removed: list[Path] = []
        now = time.time()
        for lv in LEVELS:
            for d in self.entry_dirs(lv):
                with self.entry_lock(lv, d.name):
                    complete = (d / "meta.json").exists()
                    drop = complete and _entry_problem(d, lv) is not None
                    if complete and not drop and older_than_days is not None and (
                            level is None or level == lv):
                        created = _number(_read_json(d / "meta.json").get("created"))
                        drop = now - created > older_than_days * 86400
                    if drop:
                        removed.append(d)
                        if not dry_run:
                            _remove_entry(d)
                        continue
                    gone = _entry_leftovers(d, stale_s)
                    removed += gone
                    if not dry_run:
                        for p in gone:
                            _remove_entry(p) if p.name == "chunks" else _unlink(p)
                        _rmdir(d)
        for p in (self.root / TOY_WORLD).glob(".toy-tmp-*"):
            if p.is_dir() and not p.is_symlink() and _age(p) > stale_s:
                from oodbench.toy.world import remove_world_tmp

                removed.append(p)
                if not dry_run:
                    remove_world_tmp(p)
        return removed


_META_KEYS = frozenset({"level", "key", "spec", "shape", "dtype", "sha256", "created"})


def _backbone_name(key: object) -> str:
    """``ARCH:WEIGHTS[@precision]`` from a backbone key (a path shown by its file name)."""
    if not isinstance(key, dict):
        return "?"
    weights = str(key.get("weights", "?"))
    if "/" in weights or "\\" in weights:
        weights = Path(weights).name
    arch = key.get("arch", "?")
    name = arch if weights in ("toy_clip.safetensors", "random-init-seed0") else f"{arch}:{weights}"
    precision = key.get("precision")
    return name + (f"@{precision}" if precision and precision != "fp32" else "")


def _folder_bytes(folder: Path) -> int:
    """Total size of the regular files under ``folder`` (links not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            total += st.st_size
    return total


def _subdirs(folder: Path) -> list[Path]:
    """Real (not symlinked) sub-folders, sorted; [] when ``folder`` is not one."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())


def _own_entry_file(p: Path) -> bool:
    """Whether ``p`` (inside an entry folder) is named as the cache names its files."""
    if p.is_symlink():
        return False
    if p.name in _ENTRY_FILES:
        return p.is_file()
    if p.name == "chunks":
        return p.is_dir()
    return _own_tmp(p)


def _own_chunk_file(p: Path) -> bool:
    return not p.is_symlink() and p.is_file() and (bool(_CHUNK.fullmatch(p.name)) or _own_tmp(p))


def _own_tmp(p: Path) -> bool:
    """A temporary of an atomic write of one of the cache's files (``.data.npy.<rand>.tmp``)."""
    return (p.is_file() and not p.is_symlink() and p.name.endswith(".tmp")
            and (p.name.startswith((".data.npy.", ".meta.json."))
                 or bool(re.fullmatch(r"\.\d{9}-\d{9}\.npy\..+\.tmp", p.name))))


def _entry_leftovers(d: Path, stale_s: float) -> list[Path]:
    """One entry's leftovers (see :meth:`Cache.leftovers`); only the cache's own names."""
    out = []
    complete = (d / "meta.json").is_file()
    data = d / "data.npy"
    if not complete and data.is_file() and not data.is_symlink() and _age(data) > stale_s:
        out.append(data)
    chunks = d / "chunks"
    if complete and chunks.is_dir() and not chunks.is_symlink():
        out.append(chunks)
    for folder in (d, chunks):
        if folder.is_dir() and not folder.is_symlink():
            out += [t for t in sorted(folder.iterdir()) if _own_tmp(t) and _age(t) > stale_s
                    and not (complete and folder == chunks)]
    return out


def _remove_entry(d: Path) -> None:
    """Remove the cache's own files of an entry (sidecar first), then its folders if empty."""
    if d.name == "chunks":
        for f in list(d.iterdir()) if d.is_dir() else []:
            if _own_chunk_file(f):
                _unlink(f)
        _rmdir(d)
        return
    for name in _ENTRY_FILES:
        _unlink(d / name)
    for f in list(d.iterdir()) if d.is_dir() else []:
        if f.name == "chunks" and f.is_dir() and not f.is_symlink():
            _remove_entry(f)
        elif _own_tmp(f):
            _unlink(f)
    _rmdir(d)


def _rmdir(d: Path) -> None:
    """Remove an entry folder and its prefix folder when they are empty (else keep them)."""
    for folder in (d, d.parent):
        try:
            folder.rmdir()
        except OSError:
            return


def _age(p: Path) -> float:
    try:
        return time.time() - p.stat().st_mtime
    except OSError:
        return 0.0


def _number(v: object) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


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

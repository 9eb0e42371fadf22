"""Feature provision for a run: every set's features extracted (or loaded) once, under a lock.

:class:`Features` hands the runner and the detectors the features of a protocol's sets with one
backbone and preprocessing, extracting each set's missing kinds in one pass under a per-set lock
(so two processes sharing a cache extract once), and says where each kind came from for the
record. :func:`locked_extract` serves detectors' own requests (a few-shot subset, a tuned
backbone's features) through the same lock and decode path.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import numpy as np

from oodbench.detectors.base import GLOBAL, Context
from oodbench.errors import ConfigError
from oodbench.features import distributed
from oodbench.features.cache import Cache, spec_key
from oodbench.features.extract import KIND_ENCODERS, ExtractStats, extract
from oodbench.features.text import encode_text_cached
from oodbench.protocols.base import ImageSet, Protocol

if TYPE_CHECKING:
    from oodbench.runner import RunSpec


class Features:
    """Features of every set of a protocol with one backbone, extracted (or loaded) once per run.

    Where a kind came from (cache or extraction, with the pass's details) and the seconds spent
    extracting are reported once: to the first detector whose record asks for that kind, and to
    the next record written (:meth:`take_seconds`); later requests read ``memory``.
    """

    def __init__(
        self,
        backbone,
        protocol: Protocol,
        cache: Cache,
        spec: RunSpec,
        bar,
        checked: dict | None = None,
        skipped: dict[str, int] | None = None,
    ):
        self.backbone, self.protocol, self.cache, self.spec, self.bar = (
            backbone,
            protocol,
            cache,
            spec,
            bar,
        )
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        self.seconds = 0.0  # extraction seconds not yet counted in a record
        self.pending: dict[str, dict] = {}  # set -> origins of kinds not yet reported
        self.checked = checked or {}  # set name -> its manifest without unreadable images
        self.skipped = skipped or {}

    def manifest(self, s: ImageSet):
        if s.name in self.checked:
            return self.checked[s.name]
        return s.manifest.limit(self.spec.limit)

    def get(self, s: ImageSet, kinds: list[str], log: dict | None = None) -> dict[str, np.ndarray]:
        """Features of one set, extracting only the kinds not already held.

        ``log[set][kind]`` says where each came from: memory (already reported this run), cache,
        or extracted (``chunks_reused`` of them from an interrupted earlier run).
        """
        held = self.arrays.setdefault(s.name, {})
        need = [k for k in kinds if k not in held]
        if need:
            t = time.perf_counter()
            st = ExtractStats()
            with self.extract_lock(s):
                held.update(
                    extract(
                        self.backbone,
                        self.manifest(s),
                        need,
                        self.cache,
                        batch_size=self.spec.batch_size,
                        workers=self.spec.workers,
                        chunk_size=self.spec.chunk_size,
                        progress=self.bar,
                        stats=st,
                        decode=self.spec.decode,
                    )
                )
            self.seconds += time.perf_counter() - t
            pending = self.pending.setdefault(s.name, {})
            pending.update({k: "cache" if st.hits[k] else "extracted" for k in need})
            if st.images_encoded or st.chunks_reused:
                pending["images_encoded"] = pending.get("images_encoded", 0) + st.images_encoded
                pending["chunks_reused"] = pending.get("chunks_reused", 0) + st.chunks_reused
            if st.decode_check is not None:  # device JPEG decoding: its check on a sample
                pending["decode"] = {
                    "used": st.decode,
                    "check": st.decode_check,
                    "fallbacks": st.decode_fallbacks,
                }
        if log is not None:
            pending = self.pending.get(s.name, {})
            entry = {k: pending.pop(k, "memory") for k in kinds}
            if any(v != "memory" for v in entry.values()):
                for extra in ("images_encoded", "chunks_reused", "decode"):
                    if extra in pending:
                        entry[extra] = pending.pop(extra)
            log[s.name] = entry
        return {k: held[k] for k in kinds}

    def prefetch(self, sets: list[ImageSet], kinds: list[str]) -> None:
        """Extract (or load) ``kinds`` of every set in one pass per set, reporting nothing yet."""
        for s in sets:
            self.get(s, kinds)

    def take_seconds(self) -> float:
        """Extraction seconds not yet counted in a record (then zero)."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def context(self, seed: int, info: dict, text_stats: dict) -> Context:
        """Everything a detector's ``setup`` gets for one seed: the backbone, cached text
        encoding, the splits' and any manifest's features, the artifact folder."""
        bb, cache, spec = self.backbone, self.cache, self.spec
        return Context(
            backbone=bb,
            protocol=self.protocol,
            seed=seed,
            device=bb.device,
            encode_text=lambda prompts: encode_text_cached(bb, prompts, cache, text_stats),
            split_features=lambda split, ks: split_features(self, self.protocol, split, ks),
            artifact_dir=cache.root / "artifacts",
            quiet=spec.quiet,
            info=info,
            manifest_features=lambda m, ks: locked_extract(bb, m, ks, cache, spec, self.bar),
            cache=cache,
        )

    def extract_with(self, backbone, s: ImageSet, kinds: list[str]) -> dict[str, np.ndarray]:
        """Features of set ``s`` through another backbone (a detector's fine-tuned one)."""
        return locked_extract(backbone, self.manifest(s), kinds, self.cache, self.spec, self.bar)

    def extract_lock(self, s: ImageSet):
        """One extraction of a set at a time across processes sharing the cache."""
        return extract_lock(self.cache, self.backbone, self.manifest(s))


def extract_lock(cache: Cache, backbone, manifest):
    """The lock under which one process at a time extracts ``manifest`` with ``backbone`` (not
    torchrun's ranks, which extract one set together): a second process waits, then reads the
    cache entry the first one wrote instead of joining chunks the first one is removing."""
    if distributed.world_size() > 1:
        return contextlib.nullcontext()
    key = spec_key([backbone.key(), manifest.digest()])
    return cache.lock(f"extract-{key}", what=f"features of {manifest.name}")


def locked_extract(backbone, manifest, kinds, cache: Cache, spec: RunSpec, bar):
    """:func:`extract` under :func:`extract_lock` (for detectors' own feature requests), with
    the run's decode path, as the score keys that name these features assume."""
    with extract_lock(cache, backbone, manifest):
        return extract(backbone, manifest, list(kinds), cache, batch_size=spec.batch_size,
                       workers=spec.workers, chunk_size=spec.chunk_size, progress=bar,
                       decode=spec.decode)


def feature_kinds(needs: frozenset[str]) -> list[str]:
    """The extractable feature kinds among ``needs`` (``global`` first; at least ``global``)."""
    kinds = sorted(k for k in needs if k in KIND_ENCODERS and k != GLOBAL)
    return [GLOBAL, *kinds] if GLOBAL in needs or not kinds else kinds


def split_features(
    feats: Features, protocol: Protocol, split: str, kinds
) -> dict[str, np.ndarray]:
    """Features of the protocol's ``train`` or ``val`` split (never a test set)."""
    s = {"train": protocol.train, "val": protocol.val}.get(split)
    if s is None:
        raise ConfigError(
            f"protocol {protocol.name} has no {split!r} split, which this detector needs"
        )
    arrays = feats.get(s, list(kinds))
    return {**arrays, "labels": np.asarray(s.manifest.limit(feats.spec.limit).labels)}

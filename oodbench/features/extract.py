"""Image-feature extraction: once per (backbone, preprocessing, manifest, kind), chunked and resumable.

Images are decoded and resized on CPU workers into uint8 batches; the device normalises and encodes.
Each chunk of ``chunk_size`` images is saved atomically as soon as it is done, so a killed
extraction resumes from the finished chunks; when all are done they are joined into one cache entry.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from oodbench.data.images import ImageListDataset, collate_uint8
from oodbench.data.manifest import Manifest
from oodbench.features.cache import Cache
from oodbench.io import atomic_save_npy

EXTRACTOR_VERSION = "1"
DEFAULT_CHUNK = 4096

# kind -> (encoder(backbone, uint8 batch) -> tensor, storage dtype)
KIND_ENCODERS: dict[str, tuple[Callable, np.dtype]] = {
    "global": (lambda bb, x: bb.encode_image(x), np.dtype(np.float32)),
}


def register_kind(kind: str, encoder: Callable, dtype: np.dtype) -> None:
    """Add a feature kind (e.g. ``local`` patch embeddings) the runner can extract and cache."""
    KIND_ENCODERS[kind] = (encoder, np.dtype(dtype))


def feature_spec(backbone, manifest: Manifest, kind: str) -> dict:
    """Everything that changes the bytes of one feature array (its cache key)."""
    return {
        "backbone": backbone.key(),
        "preprocess": backbone.preprocess.to_dict(),
        "manifest": manifest.digest(),
        "root": str(manifest.root.resolve()),
        "n": len(manifest),
        "kind": kind,
        "dtype": str(KIND_ENCODERS[kind][1]),
        "extractor": EXTRACTOR_VERSION,
    }


@dataclass
class ExtractStats:
    """What one extraction did, for the result record."""

    hits: dict[str, bool] = field(default_factory=dict)
    images_encoded: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0


def default_workers() -> int:
    """Loader workers sized to the machine (leave one core for the main process)."""
    return max(0, min(16, (os.cpu_count() or 1) - 1))


def extract(
    backbone,
    manifest: Manifest,
    kinds: list[str],
    cache: Cache,
    batch_size: int = 128,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress=None,
    stats: ExtractStats | None = None,
) -> dict[str, np.ndarray]:
    """Features of every image in ``manifest`` for each kind, from the cache or freshly encoded."""
    stats = stats if stats is not None else ExtractStats()
    out: dict[str, np.ndarray] = {}
    missing = []
    for kind in kinds:
        if kind not in KIND_ENCODERS:
            raise KeyError(f"unknown feature kind {kind!r}; known: {sorted(KIND_ENCODERS)}")
        arr = cache.load("images", feature_spec(backbone, manifest, kind))
        stats.hits[kind] = arr is not None
        if arr is not None:
            out[kind] = arr
        else:
            missing.append(kind)
    if missing:
        out.update(_extract_missing(backbone, manifest, missing, cache, batch_size, workers,
                                    chunk_size, progress, stats))
    return out


def _extract_missing(backbone, manifest, kinds, cache, batch_size, workers, chunk_size,
                     progress, stats) -> dict[str, np.ndarray]:
    n = len(manifest)
    specs = {k: feature_spec(backbone, manifest, k) for k in kinds}
    dirs = {k: cache.chunk_dir("images", specs[k]) for k in kinds}
    n_chunks = (n + chunk_size - 1) // chunk_size
    todo = [c for c in range(n_chunks)
            if not all((dirs[k] / f"{c:06d}.npy").is_file() for k in kinds)]
    stats.chunks_reused += n_chunks - len(todo)
    if todo:
        task = progress.add_task(f"extract {manifest.name}", total=n, extra=backbone.name) \
            if progress is not None else None
        if task is not None:
            progress.update(task, completed=(n_chunks - len(todo)) * chunk_size)
        for c, feats in _encode_chunks(backbone, manifest, kinds, todo, chunk_size, batch_size,
                                       workers, progress, task):
            for k in kinds:
                atomic_save_npy(dirs[k] / f"{c:06d}.npy", feats[k])
            stats.images_encoded += len(next(iter(feats.values())))
    out = {}
    for k in kinds:
        parts = [np.load(dirs[k] / f"{c:06d}.npy") for c in range(n_chunks)]
        arr = np.concatenate(parts) if parts else np.zeros((0,), KIND_ENCODERS[k][1])
        cache.save("images", specs[k], arr, source=manifest.name)
        shutil.rmtree(dirs[k], ignore_errors=True)
        out[k] = cache.load("images", specs[k])
    return out


def _encode_chunks(backbone, manifest, kinds, chunks, chunk_size, batch_size, workers,
                   progress, task):
    """Yield (chunk index, {kind: array}) for each chunk in ``chunks``, in order."""
    n = len(manifest)
    batches = []
    for c in chunks:
        lo, hi = c * chunk_size, min(n, (c + 1) * chunk_size)
        batches += [(c, list(range(i, min(hi, i + batch_size)))) for i in range(lo, hi, batch_size)]
    workers = default_workers() if workers is None else workers
    dataset = ImageListDataset(manifest, backbone.preprocess)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=[b for _, b in batches], num_workers=workers,
        collate_fn=collate_uint8, pin_memory=backbone.device.type == "cuda",
        persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
    )
    current, acc = None, {k: [] for k in kinds}
    for (c, _), (images, _) in zip(batches, loader):
        if current is not None and c != current:
            yield current, {k: np.concatenate(v) for k, v in acc.items()}
            acc = {k: [] for k in kinds}
        current = c
        for k in kinds:
            enc, dtype = KIND_ENCODERS[k]
            acc[k].append(enc(backbone, images).cpu().numpy().astype(dtype, copy=False))
        if task is not None:
            progress.advance(task, len(images))
    if current is not None:
        yield current, {k: np.concatenate(v) for k, v in acc.items()}

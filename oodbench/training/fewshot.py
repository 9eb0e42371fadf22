"""Few-shot training splits: K images per class drawn by seed, saved as manifests.

Every detector trained on "4-shot, seed 1" of a protocol's training split sees the same images: the
draw depends only on the source manifest, K and the seed, and the first draw is written under
``<artifacts>/fewshot/<source>-<digest>/shot_<K>-seed_<S>.txt`` and read back from there afterwards.
``FewShotSplit.describe()`` is what a result record stores to name its split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oodbench.data.manifest import Manifest, read_manifest, write_manifest
from oodbench.errors import DataError

SAMPLER_VERSION = "1"


@dataclass(frozen=True)
class FewShotSplit:
    """A K-shot subset of a training manifest, with the indices it took from the source."""

    manifest: Manifest
    indices: tuple[int, ...]
    shots: int
    seed: int
    source_sha256: str
    path: Path | None = None

    def describe(self) -> dict:
        """The split's identity for a result record."""
        return {"name": self.manifest.name, "shots": self.shots, "seed": self.seed,
                "n": len(self.manifest), "manifest_sha256": self.manifest.digest(),
                "source_sha256": self.source_sha256, "sampler": SAMPLER_VERSION,
                "path": str(self.path) if self.path else None}


def sample_indices(labels: list[int] | tuple[int, ...], shots: int, seed: int) -> list[int]:
    """Indices of ``shots`` entries per class (labels >= 0), drawn by ``seed``, in source order.

    Raises DataError naming the class when it has fewer than ``shots`` images.
    """
    if shots <= 0:
        raise DataError(f"few-shot K must be positive, got {shots}")
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng([seed, shots])
    chosen: list[int] = []
    for c in np.unique(labels_arr[labels_arr >= 0]):
        idx = np.flatnonzero(labels_arr == c)
        if len(idx) < shots:
            raise DataError(f"class {int(c)} has only {len(idx)} training images, fewer than the "
                            f"{shots} shots asked for; lower the shots hyperparameter")
        chosen.extend(int(i) for i in rng.choice(idx, size=shots, replace=False))
    return sorted(chosen)


def split_path(artifact_dir: Path, source: Manifest, shots: int, seed: int) -> Path:
    """Where the K-shot manifest of ``source`` with ``seed`` is saved."""
    return (Path(artifact_dir) / "fewshot" / f"{source.name}-{source.digest()[:12]}"
            / f"shot_{shots}-seed_{seed}.txt")


def fewshot_split(source: Manifest, shots: int, seed: int,
                  artifact_dir: Path | None = None) -> FewShotSplit:
    """The K-shot split of ``source`` for ``seed``, saved under ``artifact_dir`` (or read back).

    ``shots=0`` means the whole source list (no sampling).
    """
    name = f"{source.name}-shot{shots}-seed{seed}" if shots else source.name
    if shots == 0:
        return FewShotSplit(source, tuple(range(len(source))), 0, seed, source.digest())
    path = split_path(artifact_dir, source, shots, seed) if artifact_dir is not None else None
    if path is not None and path.is_file():
        manifest = read_manifest(path, source.root, name=name)
        where = {p: i for i, p in enumerate(source.paths)}
        missing = [p for p in manifest.paths if p not in where]
        if missing:
            raise DataError(f"saved few-shot split {path} names images not in {source.name} "
                            f"(e.g. {missing[0]}); delete the file to redraw it")
        indices = tuple(where[p] for p in manifest.paths)
    else:
        indices = tuple(sample_indices(source.labels, shots, seed))
        manifest = source.subset(indices, name=name)
        if path is not None:
            write_manifest(manifest, path)
    return FewShotSplit(manifest, indices, shots, seed, source.digest(), path)


def fewshot_features(ctx, shots: int, seed: int,
                     kinds) -> tuple[FewShotSplit, dict[str, np.ndarray]]:
    """The K-shot split of ``ctx.protocol.train`` and its cached features (``labels`` included).

    Features come from the runner's cache of the whole training split and are indexed by the
    split's entries, so a split is extracted once however many detectors train on it.
    """
    arrays = ctx.split_features("train", frozenset(kinds))
    source = ctx.protocol.train.manifest.limit(len(arrays["labels"]))
    split = fewshot_split(source, shots, seed, ctx.artifact_dir)
    idx = np.asarray(split.indices, dtype=np.int64)
    return split, {k: np.asarray(v[idx]) for k, v in arrays.items()}

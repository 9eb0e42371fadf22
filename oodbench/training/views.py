"""Augmented training views, encoded by the frozen image tower at the cost the user chooses.

The trained detectors that learn on image crops (LoCoOp, Local-Prompt, KR-NFT) train, in their
authors' code, on a RandomResizedCrop + flip redrawn for every image at every epoch. Encoding those
crops is most of the training cost, so the ``augment`` hyperparameter chooses it:

- ``official``: every epoch draws ``n`` new views per image (view slots ``e*n .. e*n+n-1`` of
  epoch ``e``), decoded and cropped by loader workers, prefetched to the run's device and encoded
  there in batches (the data path of feature extraction). Nothing is stored: an epoch's views are
  recomputed from the seed, so a run killed midway resumes to the same weights.
- ``views:K``: K views per image drawn once with the seed, encoded once and saved as an artifact;
  epoch ``e`` takes slots ``(e*n + j) mod K``. CPU and quick runs; with K = n every epoch sees the
  same views.

A view slot is a pure function of (seed, image index, slot), so ``views:K`` and ``official`` give
the very same crop for the same slot, whatever the batching or the number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from oodbench.data.manifest import Manifest
from oodbench.errors import ConfigError
from oodbench.features.extract import BatchBackoff, Prefetcher, loader_workers
from oodbench.io import atomic_save_npz
from oodbench.progress import progress
from oodbench.training.augment import slot_crops

VIEWS_VERSION = "1"
AUGMENT_HELP = ("'official' (views redrawn every epoch, as the authors' code) or 'views:K' (K "
                "views per image drawn once with the seed and cycled across epochs)")
Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Augment:
    """The parsed ``augment`` hyperparameter: ``official`` or ``views:K``."""

    mode: str
    k: int | None = None

    @classmethod
    def parse(cls, text: str, field: str = "augment") -> Augment:
        """``official`` or ``views:K`` (K >= 1); anything else is a ConfigError naming ``field``."""
        if text == "official":
            return cls("official")
        m = re.fullmatch(r"views:(\d+)", text.strip())
        if m and int(m.group(1)) >= 1:
            return cls("views", int(m.group(1)))
        raise ConfigError(f"hyperparameter {field}={text!r}: use {AUGMENT_HELP}")

    def check(self, per_epoch: int, field: str = "augment") -> None:
        """Refuse ``views:K`` with fewer views than one epoch takes from an image."""
        if self.mode == "views" and self.k < per_epoch:
            raise ConfigError(f"hyperparameter {field}=views:{self.k} gives fewer views than the "
                              f"{per_epoch} each image needs per epoch; use views:{per_epoch} or "
                              "more, or 'official'")

    def slots(self, epoch: int, per_epoch: int) -> list[int]:
        """The view slots an image uses in ``epoch`` when each epoch takes ``per_epoch`` views."""
        first = epoch * per_epoch
        if self.mode == "official":
            return list(range(first, first + per_epoch))
        return [(first + j) % self.k for j in range(per_epoch)]

    def __str__(self) -> str:
        return "official" if self.mode == "official" else f"views:{self.k}"


@dataclass(frozen=True)
class CropRecipe:
    """One recipe's training crop: torchvision's RandomResizedCrop (scale, ratio, interpolation)
    to ``size`` pixels, then a horizontal flip with p = 0.5 when ``flip``; ``source`` names the
    official file it follows."""

    size: int
    interpolation: str = "bilinear"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    source: str = ""

    def to_dict(self) -> dict:
        """Plain dict for records and artifact keys."""
        return asdict(self)


class _ViewDataset:
    """Map-style dataset: item i -> (views of image i for the epoch's slots, i)."""

    def __init__(self, manifest: Manifest, recipe: CropRecipe, seed: int, slots: list[int]):
        self.manifest, self.recipe, self.seed, self.slots = manifest, recipe, seed, slots

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        r = self.recipe
        return slot_crops(self.manifest, i, self.slots, r.size, self.seed, r.interpolation,
                          r.scale, r.ratio, r.flip), i


def _collate(items):
    return torch.stack([x for x, _ in items]), torch.tensor([i for _, i in items])


class TrainingViews:
    """Encoded training views of a few-shot split, served batch by batch.

    ``encode`` maps a uint8 image batch on the device to a tuple of feature tensors, one per
    entry of ``kinds`` (e.g. the Context's ``encode_global_local``); ``dtypes`` rounds each kind
    as it is stored (the ``local`` kind as float16, as in the feature cache), in both modes.
    ``plan(epoch)`` lists the batches (manifest indices) of an epoch in step order.
    :meth:`get` returns ``{kind: (B, per_epoch, ...)}`` float32 tensors on ``device``.
    ``field`` names the hyperparameter in errors (e.g. ``krnft.augment``).
    """

    def __init__(self, manifest: Manifest, recipe: CropRecipe, augment: Augment, per_epoch: int,
                 seed: int, encode: Encoder, kinds: tuple[str, ...], device: torch.device,
                 plan: Callable[[int], list[torch.Tensor]], artifact: Path | None = None,
                 dtypes: dict[str, np.dtype] | None = None, workers: int | None = None,
                 encode_batch: int = 256, quiet: bool = True, field: str = "augment"):
        augment.check(per_epoch, field)
        self.manifest, self.recipe, self.augment = manifest, recipe, augment
        self.per_epoch, self.seed, self.encode, self.kinds = per_epoch, seed, encode, kinds
        self.device, self.plan, self.artifact = torch.device(device), plan, artifact
        self.dtypes = {k: np.dtype((dtypes or {}).get(k, np.float32)) for k in kinds}
        self.workers, self.quiet = workers, quiet
        self.backoff = BatchBackoff(encode_batch)
        self.images_encoded = 0
        self._all: dict[str, torch.Tensor] | None = None
        self._stream: Iterator | None = None
        self._at: tuple[int, int] | None = None  # (epoch, batch) the stream yields next
        self._last: tuple[tuple[int, int], torch.Tensor, dict] | None = None

    def describe(self) -> dict:
        """What the record's ``train`` says about the views."""
        return {"augment": str(self.augment), "views_per_epoch": self.per_epoch,
                "crop": self.recipe.to_dict(), "version": VIEWS_VERSION,
                "artifact": str(self.artifact) if self._all is not None and self.artifact
                else None}

    def get(self, epoch: int, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(manifest indices (B,), {kind: (B, per_epoch, ...)}) of batch ``batch`` of ``epoch``."""
        if self._last is not None and self._last[0] == (epoch, batch):
            return self._last[1], self._last[2]
        if self.augment.mode == "views":
            idx = self.plan(epoch)[batch].long()
            slots = torch.tensor(self.augment.slots(epoch, self.per_epoch))
            every = self._load_all()
            feats = {k: v[idx.to(v.device)][:, slots.to(v.device)].float()
                     for k, v in every.items()}
        else:
            if self._at != (epoch, batch):
                self._stream = self._epoch_stream(epoch, batch)
            idx, feats = next(self._stream)
            self._at = (epoch, batch + 1)
        self._last = ((epoch, batch), idx, feats)
        return idx, feats

    def _encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of (B, V, 3, S, S) uint8 views: {kind: (B, V, ...)} rounded to its dtype."""
        b, v = images.shape[:2]
        flat = images.reshape(b * v, *images.shape[2:])
        with torch.no_grad(), _no_autocast(self.device):
            out = self.backoff(lambda x: tuple(self.encode(x)), flat)
        if isinstance(out, torch.Tensor):
            out = (out,)
        self.images_encoded += len(flat)
        res = {}
        for k, f in zip(self.kinds, out, strict=True):
            f = f.detach().reshape(b, v, *f.shape[1:])
            if self.dtypes[k] == np.float16:
                f = f.half()
            res[k] = f.float().clone()
        return res

    def _loader(self, batches: list[list[int]], slots: list[int]):
        workers = loader_workers(self.workers, len(batches))
        loader = torch.utils.data.DataLoader(
            _ViewDataset(self.manifest, self.recipe, self.seed, slots), batch_sampler=batches,
            num_workers=workers, collate_fn=_collate, pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if workers > 0 else None)

        def transfer(batch):
            return batch[0].to(self.device, non_blocking=True), batch[1]

        return Prefetcher(loader, self.device, transfer)

    def _epoch_stream(self, epoch: int, start: int) -> Iterator:
        """Encode the views of ``epoch``'s batches from batch ``start`` on, one batch ahead."""
        batches = [b.tolist() for b in self.plan(epoch)][start:]
        for images, idx in self._loader(batches, self.augment.slots(epoch, self.per_epoch)):
            yield idx.to(self.device), self._encode(images)

    def _load_all(self) -> dict[str, torch.Tensor]:
        """All K views of every image ({kind: (N, K, ...)}), from the artifact or encoded once."""
        if self._all is not None:
            return self._all
        path = self.artifact
        if path is not None and path.is_file():
            with np.load(path) as z:
                arrays = {k: z[k] for k in self.kinds}
        else:
            n, k = len(self.manifest), self.augment.k
            parts: dict[str, list[np.ndarray]] = {kind: [] for kind in self.kinds}
            batch = max(1, 64 // k)
            batches = [list(range(i, min(n, i + batch))) for i in range(0, n, batch)]
            with progress(self.quiet) as bar:
                task = bar.add_task("encode training views", total=n, extra=str(self.augment))
                for images, _ in self._loader(batches, list(range(k))):
                    for kind, f in self._encode(images).items():
                        parts[kind].append(f.cpu().numpy().astype(self.dtypes[kind]))
                    bar.advance(task, len(images))
            arrays = {kind: np.concatenate(v) for kind, v in parts.items()}
            if path is not None:
                atomic_save_npz(path, **arrays)
        self._all = {k: torch.as_tensor(v).to(self.device) for k, v in arrays.items()}
        return self._all


@contextlib.contextmanager
def _no_autocast(device: torch.device):
    """Encode in the backbone's own precision, not under the trainer's bf16 autocast."""
    with torch.autocast(device.type, enabled=False):
        yield


def views_artifact_spec(backbone, split, recipe: CropRecipe, augment: Augment, seed: int,
                        kinds: tuple[str, ...]) -> dict:
    """Everything that changes the bytes of a ``views:K`` artifact (its key)."""
    return {"backbone": backbone.key(), "preprocess": backbone.preprocess.to_dict(),
            "split": split.manifest.digest(), "root": str(split.manifest.root),
            "crop": recipe.to_dict(), "augment": str(augment), "seed": seed,
            "kinds": list(kinds), "version": VIEWS_VERSION}


def dassl_local_views(ctx, split, augment: str, per_epoch: int, batch_size: int,
                      batches: int, name: str, source: str, drop_last: bool = False,
                      field: str = "augment") -> TrainingViews:
    """Dassl's train transform (bicubic RandomResizedCrop + flip) of a few-shot split, ``per_epoch``
    views per image and epoch, encoded global + local (``local`` stored as float16) through the
    Context; the batches of epoch e are ``epoch_batch`` steps e * batches .. e * batches + batches
    - 1. ``views:K`` views are saved under ``<artifact_dir>/<name>``. LoCoOp and Local-Prompt."""
    from oodbench.detectors.base import GLOBAL, LOCAL
    from oodbench.training.trainer import epoch_batch

    aug = Augment.parse(augment)
    recipe = CropRecipe(size=ctx.backbone.preprocess.crop, interpolation="bicubic", source=source)
    kinds = (GLOBAL, LOCAL)
    path = ctx.artifact_path(name, views_artifact_spec(
        ctx.backbone, split, recipe, aug, ctx.seed, kinds)) if aug.mode == "views" else None
    n = len(split.manifest)

    def plan(epoch):
        return [epoch_batch(n, batch_size, epoch * batches + j, ctx.seed, drop_last=drop_last)
                for j in range(batches)]

    return TrainingViews(split.manifest, recipe, aug, per_epoch, ctx.seed,
                         ctx.encode_global_local, kinds, ctx.device, plan, artifact=path,
                         dtypes={LOCAL: np.float16}, quiet=ctx.quiet, field=field)


def with_toy_views(given, used, protocol_name: str, per_epoch: int):
    """``used`` with ``augment=views:<per_epoch>`` when the toy preset applies and the user left
    ``augment`` alone: the views a toy run needs per epoch, drawn once and reused every epoch,
    which keeps its cost in CPU seconds whatever its view count."""
    from oodbench.training.presets import is_toy

    applies = given.preset == "toy" or (given.preset == "auto" and is_toy(protocol_name))
    if not applies or "augment" in given.given_fields():
        return used
    return dataclasses.replace(used, augment=f"views:{per_epoch}")

"""Seeded training augmentation: random resized crops and flips of few-shot images (uint8).

Every draw comes from an explicit ``torch.Generator``, so a crop set is reproducible from the seed
(and resumable), unlike torchvision's transforms, which use the global RNG. The crop rule is
torchvision's ``RandomResizedCrop.get_params`` (ten tries at a random area and log-uniform aspect
ratio, then a centre crop with the ratio clamped).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from oodbench.data.images import INTERPOLATIONS, load_rgb
from oodbench.data.manifest import Manifest


def crop_box(width: int, height: int, gen: torch.Generator, scale=(0.08, 1.0),
             ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, w, h) of one random resized crop (torchvision's rule, drawn from ``gen``)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(3, generator=gen).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def slot_generator(seed: int, index: int, slot: int) -> torch.Generator:
    """The generator of view ``slot`` of image ``index``: independent of batching and workers."""
    return torch.Generator().manual_seed((seed * 1_000_003 + index * 7_919 + slot * 104_729
                                          + 13) % (2**63))


def slot_crops(manifest: Manifest, index: int, slots: list[int], size: int, seed: int,
               interpolation: str = "bilinear", scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
               flip: bool = True) -> torch.Tensor:
    """(len(slots), 3, size, size) uint8: the random resized crops ``slots`` of manifest entry
    ``index`` (each flipped with p = 0.5 when ``flip``); the same seed gives the same crops."""
    image = load_rgb(manifest.absolute(index))
    out = np.empty((len(slots), size, size, 3), np.uint8)
    for j, slot in enumerate(slots):
        gen = slot_generator(seed, index, slot)
        left, top, w, h = crop_box(image.width, image.height, gen, scale, ratio)
        crop = image.resize((size, size), INTERPOLATIONS[interpolation],
                            box=(left, top, left + w, top + h))
        arr = np.asarray(crop, dtype=np.uint8)
        out[j] = arr[:, ::-1] if flip and float(torch.rand(1, generator=gen)) < 0.5 else arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

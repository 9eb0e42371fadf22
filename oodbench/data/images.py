"""Reading images from a manifest and the CPU half of preprocessing.

The CPU resizes and crops to uint8 (cheap to pin and copy); scaling to [0, 1] and normalising by
the weights' mean/std happen on the device (:func:`normalize`). Every image is converted to RGB
(grayscale, CMYK, palette, alpha and 16-bit inputs included).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from oodbench.data.manifest import Manifest
from oodbench.errors import DataError

INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """Test-time preprocessing: resize the shorter side, center-crop, normalise (part of cache keys)."""

    resize: int = 224
    crop: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise DataError(
                f"interpolation {self.interpolation!r} unknown; use one of {sorted(INTERPOLATIONS)}"
            )
        if self.crop > self.resize:
            raise DataError(f"crop {self.crop} is larger than resize {self.resize}")

    def to_dict(self) -> dict:
        """Plain dict for records and cache keys."""
        return asdict(self)


def load_rgb(path: Path) -> Image.Image:
    """Open an image file as 8-bit RGB; raises DataError naming the file when it is unreadable."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except Exception as e:  # PIL raises many types for corrupt data
        raise DataError(f"image {path} cannot be read ({type(e).__name__}: {e})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, P, CMYK, RGBA, I;16, ...) to 8-bit RGB; alpha is put on white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def resize_crop(im: Image.Image, pp: Preprocess) -> np.ndarray:
    """Resize the shorter side to ``pp.resize`` and center-crop ``pp.crop``: HxWx3 uint8."""
    w, h = im.size
    # torchvision Resize(int) semantics: the short side becomes pp.resize, the long one is truncated
    if w <= h:
        nw, nh = pp.resize, int(pp.resize * h / w)
    else:
        nw, nh = int(pp.resize * w / h), pp.resize
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), INTERPOLATIONS[pp.interpolation])
    left = int(round((nw - pp.crop) / 2.0))
    top = int(round((nh - pp.crop) / 2.0))
    im = im.crop((left, top, left + pp.crop, top + pp.crop))
    return np.asarray(im, dtype=np.uint8)


class ImageListDataset:
    """A map-style dataset over a manifest yielding (CHW uint8 array, index)."""

    def __init__(self, manifest: Manifest, pp: Preprocess):
        self.manifest = manifest
        self.pp = pp

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        arr = resize_crop(load_rgb(self.manifest.absolute(i)), self.pp)
        return np.ascontiguousarray(arr.transpose(2, 0, 1)), i


def collate_uint8(batch: list[tuple[np.ndarray, int]]):
    """Stack uint8 CHW arrays into one uint8 tensor (normalisation happens on the device)."""
    import torch

    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    index = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, index


def normalize(images_uint8, pp: Preprocess, dtype=None):
    """uint8 NCHW -> float, scaled to [0,1] and normalised with the weights' mean/std, on-device."""
    import torch

    dtype = dtype or torch.float32
    x = images_uint8.to(dtype=torch.float32).div_(255.0)
    mean = torch.tensor(pp.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


def find_unreadable(manifest: Manifest, limit: int | None = None) -> list[tuple[str, str]]:
    """(relative path, reason) of entries that are missing or cannot be decoded."""
    bad = []
    for i in range(len(manifest)):
        try:
            load_rgb(manifest.absolute(i))
        except DataError as e:
            bad.append((manifest.paths[i], str(e)))
            if limit and len(bad) >= limit:
                break
    return bad

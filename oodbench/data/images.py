"""Reading images from a manifest and the CPU half of preprocessing.

The CPU resizes and crops to uint8 (cheap to pin and copy); scaling to [0, 1] and normalising by
the weights' mean/std happen on the device (:func:`normalize`). Every image is converted to RGB
(grayscale, CMYK, palette, alpha and 16-bit inputs included).

Before any work the runner calls :func:`readable_manifests`: every image of every test set is
decoded once, and a set with unreadable files (missing, empty, corrupt, truncated) stops the run
with the list of them, unless the user chose to skip them, in which case the sets shrink and the
counts are returned for the result record. The check's outcome is cached under the files' sizes
and modification times, so a rerun only stats the files.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from oodbench.data.manifest import Manifest
from oodbench.errors import DataError, short_repr

INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT = 50  # the readability check refuses thinner images: a center crop sees a sliver
# Beyond this, resize_crop resamples only the crop's region (bounded memory). Up to it the whole
# image is resized, bit-identical with torchvision's Resize + CenterCrop (~10 MB at 224).
BOXED_ASPECT = MAX_ASPECT


@dataclass(frozen=True)
class Preprocess:
    """Test-time preprocessing: resize the shorter side, center-crop, normalise (in cache keys)."""

    resize: int = 224
    crop: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise DataError(f"preprocessing field {name!r} must be a positive integer, "
                                f"got {short_repr(v)}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if (not isinstance(v, (tuple, list)) or len(v) != 3
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                raise DataError(f"preprocessing field {name!r} must be three numbers, "
                                f"got {short_repr(v)}")
        if any(x <= 0 for x in self.std):
            raise DataError(f"preprocessing field 'std' must be positive, got {self.std!r}")
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
        hi = 65535.0 if im.mode.startswith("I;16") else _full_scale(float(arr.max()))
        gray = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def _full_scale(peak: float) -> float:
    """White level of a 32-bit integer image: 8-bit or 16-bit range when the values fit one."""
    if peak <= 255:
        return 255.0
    return 65535.0 if peak <= 65535 else peak


def resize_crop(im: Image.Image, pp: Preprocess) -> np.ndarray:
    """Resize the shorter side to ``pp.resize`` and center-crop ``pp.crop``: HxWx3 uint8.

    A thin image (long side beyond ``BOXED_ASPECT`` x the short one) is not resized whole: that
    would cost ``resize`` x ``resize * aspect`` pixels (~5 GB for a 1x30000 PNG). Only the crop's
    region of the source is resampled, with the same filter scale and pixel centres.
    """
    w, h = im.size
    # torchvision Resize(int) semantics: the short side becomes pp.resize, the long one is truncated
    if w <= h:
        nw, nh = pp.resize, int(pp.resize * h / w)
    else:
        nw, nh = int(pp.resize * w / h), pp.resize
    left = int(round((nw - pp.crop) / 2.0))
    top = int(round((nh - pp.crop) / 2.0))
    interp = INTERPOLATIONS[pp.interpolation]
    if max(nw, nh) > BOXED_ASPECT * pp.resize:
        sx, sy = w / nw, h / nh
        box = (left * sx, top * sy, (left + pp.crop) * sx, (top + pp.crop) * sy)
        return np.asarray(im.resize((pp.crop, pp.crop), interp, box=box), dtype=np.uint8)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), interp)
    im = im.crop((left, top, left + pp.crop, top + pp.crop))
    return np.asarray(im, dtype=np.uint8)


def aspect_problem(size: tuple[int, int]) -> str | None:
    """Why an image of ``size`` (w, h) is too thin to use, or None."""
    w, h = size
    if max(w, h) > MAX_ASPECT * min(w, h):
        return (f"is {w}x{h} pixels, an aspect ratio beyond {MAX_ASPECT}:1 (a center crop would "
                "see a sliver of it)")
    return None


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
    bad = [(manifest.paths[i], why) for i, why in scan_unreadable(manifest)]
    return bad[:limit] if limit else bad


def why_unreadable(path: Path) -> str | None:
    """Why the image at ``path`` cannot be used (missing, empty, undecodable), or None if it can."""
    try:
        size = os.stat(path).st_size
    except PermissionError as e:
        return f"cannot be read ({e.strerror}: a folder above it is not readable by this user)"
    except (OSError, ValueError):
        return "file does not exist"
    if size == 0:
        return "file is empty (0 bytes)"
    try:
        im = load_rgb(path)
    except DataError as e:
        return str(e).replace(f"image {path} ", "", 1)
    return aspect_problem(im.size)


def scan_unreadable(manifest: Manifest, workers: int | None = None) -> list[tuple[int, str]]:
    """(index, reason) of every unreadable entry, decoding the images on a thread pool."""
    workers = workers or min(8, os.cpu_count() or 1)
    paths = [manifest.absolute(i) for i in range(len(manifest))]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(why_unreadable, paths, chunksize=64))
    return [(i, why) for i, why in enumerate(reasons) if why is not None]


def files_signature(manifest: Manifest) -> str:
    """sha256 over the manifest and each file's size and mtime: changes when any file changes."""
    h = hashlib.sha256(f"{manifest.root.resolve()}\n{manifest.digest()}\n".encode())
    for i in range(len(manifest)):
        try:
            st = os.stat(manifest.absolute(i))
            h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
        except (OSError, ValueError):
            h.update(b"missing\n")
    return h.hexdigest()


def unreadable_indices(manifest: Manifest, cache=None) -> list[int]:
    """Indices of unreadable entries; from ``cache`` (level ``checks``) when no file changed."""
    spec = {"kind": "readability-check", "version": 2, "files": files_signature(manifest)}
    if cache is not None:
        hit = cache.load("checks", spec, mmap=False)
        if hit is not None:
            return [int(i) for i in hit]
    bad = [i for i, _ in scan_unreadable(manifest)]
    if cache is not None:
        cache.save("checks", spec, np.asarray(bad, dtype=np.int64), source=manifest.name)
    return bad


def readable_manifests(
    manifests: dict[str, Manifest], skip: bool, cache=None, show: int = 10
) -> tuple[dict[str, Manifest], dict[str, int]]:
    """Check every image of every set before any work; the sets to use and how many were skipped.

    An empty set, or any unreadable image when ``skip`` is False, raises DataError listing the
    files and the fix. With ``skip`` the unreadable entries are dropped (never silently: the
    returned counts go into the result record) and a set left empty is still an error.
    """
    for name, m in manifests.items():
        if len(m) == 0:
            raise DataError(f"set {name!r} has no images (read from {m.source or m.root}); a set "
                            "without images has no metrics. Put the images there or fix the list")
    bad = {name: unreadable_indices(m, cache) for name, m in manifests.items()}
    bad = {name: idx for name, idx in bad.items() if idx}
    if bad and not skip:
        raise DataError(_unreadable_message(manifests, bad, show))
    out = dict(manifests)
    for name, idx in bad.items():
        drop = set(idx)
        m = manifests[name]
        if len(drop) == len(m):
            raise DataError(f"set {name!r}: all {len(m)} images are unreadable (e.g. "
                            f"{m.absolute(idx[0])}: {why_unreadable(m.absolute(idx[0]))})")
        out[name] = m.subset([i for i in range(len(m)) if i not in drop])
    return out, {name: len(idx) for name, idx in bad.items()}


def _unreadable_message(manifests: dict[str, Manifest], bad: dict[str, list[int]],
                        show: int) -> str:
    total = sum(len(v) for v in bad.values())
    lines = [f"{total} image(s) cannot be read; nothing was scored:"]
    for name, idx in bad.items():
        m = manifests[name]
        lines.append(f"  set {name!r} ({len(idx)} of {len(m)}, under {m.root}):")
        for i in idx[:show]:
            lines.append(f"    {m.paths[i]}: {why_unreadable(m.absolute(i)) or 'unreadable'}")
        if len(idx) > show:
            lines.append(f"    ... and {len(idx) - show} more")
    lines.append("Replace or delete these files (and fix any image list that names them), or rerun "
                 "with --skip-unreadable to score without them (the result record then says how "
                 "many were skipped in each set).")
    return "\n".join(lines)

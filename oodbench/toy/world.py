"""Split layout of the toy protocols and their materialisation as PNG files.

Class partition (sets disjoint; every shape and no-object kind is in the toy CLIP's pretraining):
- ``ID_CLASSES``: the in-distribution label set of protocol ``toy`` (stands in for ImageNet-1k).
- ``NEAR_OOD_CLASSES``: shapes each visually close to one ID shape (ellipse~circle,
  rectangle~square, pentagon~hexagon, sparkle~star, diamond~square); near OOD of ``toy``.
- ``UNSEEN_ID_CLASSES``: swapped-in ID label set of protocol ``toy-unseen`` (unseen-ID
  generalisation).
- ``UNSEEN_NEAR_OOD_CLASSES``: shapes close to unseen-ID ones (flower~cloud, leaf~fish, bone~key,
  hourglass~lightning, drop~bell); near OOD of ``toy-unseen``.
- far OOD: images without any labelled object (``FAR_OOD_KINDS``: textures, noise, clutter, blank
  backgrounds, landscape and city scenes), shared by the test protocols.
- ``shift_<style>``: ID classes rendered in a covariate-shift style (protocol ``toy-shift``).
- validation (protocol ``toy-val``, for choosing presets): its own ID images (``id_val``) against
  OOD of kinds that no test set holds (``VAL_NEAR_OOD_CLASSES``, ``VAL_FAR_OOD_KINDS``).

Object images of every split carry, as the pretraining images do, background clutter and a small
textured patch at times (``generator.CLUTTER_P``, ``generator.PATCH_P``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.locks import FileLock
from oodbench.toy import generator as gen

WORLD_VERSION = 3  # v3: clutter, texture patches, scenes, val OOD kinds, milder noise style
WORLD_DIR = "toy"
MARKER = "COMPLETE.json"
LOCK = ".toy.lock"  # beside the world; never deleted (see oodbench.locks)

ID_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "cross",
    "hexagon",
    "arrow",
    "moon",
    "house",
)
NEAR_OOD_CLASSES: tuple[str, ...] = ("ellipse", "rectangle", "pentagon", "sparkle", "diamond")
UNSEEN_ID_CLASSES: tuple[str, ...] = (
    "tree",
    "fish",
    "key",
    "lightning",
    "cloud",
    "mushroom",
    "bell",
)
UNSEEN_NEAR_OOD_CLASSES: tuple[str, ...] = ("flower", "leaf", "bone", "hourglass", "drop")
FAR_OOD_KINDS: tuple[str, ...] = (
    "stripes",
    "checkers",
    "dots",
    "waves",
    "noise",
    "clutter",
    "blank",
    "landscape",
    "city",
)
VAL_NEAR_OOD_CLASSES: tuple[str, ...] = ("octagon", "trapezoid")
VAL_FAR_OOD_KINDS: tuple[str, ...] = ("zigzag", "rings")


@dataclass(frozen=True)
class SplitSpec:
    """One split: its classes (shapes or no-object kinds), images per class, labelled or OOD."""

    classes: tuple[str, ...]
    per_class: int
    labelled: bool = True
    style: str | None = None
    no_object: bool = False


SPLITS: dict[str, SplitSpec] = {
    "id_test": SplitSpec(ID_CLASSES, 100),
    "id_val": SplitSpec(ID_CLASSES, 20),
    "id_train": SplitSpec(ID_CLASSES, 50),
    "near": SplitSpec(NEAR_OOD_CLASSES, 100, labelled=False),
    "far": SplitSpec(FAR_OOD_KINDS, 111, labelled=False, no_object=True),
    "val_near": SplitSpec(VAL_NEAR_OOD_CLASSES, 100, labelled=False),
    "val_far": SplitSpec(VAL_FAR_OOD_KINDS, 100, labelled=False, no_object=True),
    "unseen_id_test": SplitSpec(UNSEEN_ID_CLASSES, 100),
    "unseen_train": SplitSpec(UNSEEN_ID_CLASSES, 50),
    "unseen_near": SplitSpec(UNSEEN_NEAR_OOD_CLASSES, 100, labelled=False),
    **{f"shift_{s}": SplitSpec(ID_CLASSES, 50, style=s) for s in gen.SHIFT_STYLES},
}

# Which splits make up each toy protocol (the real protocol each stands in for is in docs/toy.md).
PROTOCOLS: dict[str, dict] = {
    "toy": {
        "classes": ID_CLASSES,
        "id": "id_test",
        "val": "id_val",
        "train": "id_train",
        "ood": ("near", "far"),
    },
    "toy-unseen": {
        "classes": UNSEEN_ID_CLASSES,
        "id": "unseen_id_test",
        "train": "unseen_train",
        "ood": ("unseen_near", "far"),
    },
    "toy-shift": {
        "classes": ID_CLASSES,
        "id": "id_test",
        "train": "id_train",
        "shifted": tuple(f"shift_{s}" for s in gen.SHIFT_STYLES),
        "ood": ("near", "far"),
    },
    "toy-val": {
        "classes": ID_CLASSES,
        "id": "id_val",
        "train": "id_train",
        "ood": ("val_near", "val_far"),
    },
}
# Splits that only the validation protocol reads (never a test set)
VAL_SPLITS: tuple[str, ...] = ("id_val", "val_near", "val_far")


def split_seed(seed: int, split: str) -> list[int]:
    """Seed sequence of a split, independent of the other splits and of dict order."""
    return [seed, WORLD_VERSION, *split.encode()]


def split_items(split: str) -> list[tuple[str, str, int]]:
    """(class name, relative path, label) of every image of a split, in generation order."""
    spec = SPLITS[split]
    items = []
    for ci, name in enumerate(spec.classes):
        for k in range(spec.per_class):
            rel = f"{WORLD_DIR}/{split}/{name}/{k + 1:05d}.png"
            items.append((name, rel, ci if spec.labelled else -1))
    return items


def render_split(split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, 64, 64, 3 uint8) and labels of a split, exactly as materialize writes them."""
    spec = SPLITS[split]
    rng = np.random.default_rng(split_seed(seed, split))
    items = split_items(split)
    images = np.empty((len(items), gen.SIZE, gen.SIZE, 3), np.uint8)
    for i, (name, _, _) in enumerate(items):
        if spec.no_object:
            images[i] = gen.render_no_object(name, rng)[0]
        else:
            images[i] = gen.render_object(name, rng, spec.style)[0]
    return images, np.array([lab for _, _, lab in items], np.int64)


def _listing() -> dict[str, list[tuple[str, int]]]:
    """Per split, (relative path, label) pairs."""
    return {s: [(rel, lab) for _, rel, lab in split_items(s)] for s in SPLITS}


def _marker_ok(world: Path, seed: int) -> bool:
    """True when a complete world with this seed and version is already on disk."""
    try:
        meta = json.loads((world / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("seed") == seed and meta.get("world_version") == WORLD_VERSION


def _write_world(tmp_world: Path, seed: int) -> None:
    """Write every split's PNGs and the completion marker into a fresh directory."""
    for split in SPLITS:
        images, _ = render_split(split, seed)
        for img, (_, rel, _) in zip(images, split_items(split), strict=True):
            path = tmp_world / Path(rel).relative_to(WORLD_DIR)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, compress_level=1)
    counts = {s: len(split_items(s)) for s in SPLITS}
    meta = {"seed": seed, "world_version": WORLD_VERSION, "counts": counts}
    (tmp_world / MARKER).write_text(json.dumps(meta, indent=1))


def materialize(root: Path, seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """Write the toy world under root/toy (atomic, idempotent); list each split's (path, label).

    Processes sharing ``root`` take its lock (``root/.toy.lock``): one generates, the others
    wait and reuse its world, so no process swaps the folder out under a reader. Folders get
    the umask's mode (a group-shared cache stays shared); half-written worlds of killed
    processes (``.toy-tmp-*``) are removed under the lock, where no live writer can own one.
    """
    root = Path(root)
    world = root / WORLD_DIR
    if _marker_ok(world, seed):
        return _listing()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / LOCK, what="the toy world"):
        if not _marker_ok(world, seed):  # another process may have written it meanwhile
            for stale in root.glob(".toy-tmp-*"):
                remove_world_tmp(stale)
            logging.getLogger("oodbench").info(
                f"generating the toy world under {world} (once per cache, about half a minute) ...")
            tmp = root / f".toy-tmp-{os.getpid()}-{secrets.token_hex(4)}"
            tmp.mkdir()  # 0o777 less the umask, unlike mkdtemp's 0o700
            try:
                _write_world(tmp, seed)
                if world.exists():  # another seed or version: set it aside, then remove it
                    old = root / f".toy-tmp-old-{os.getpid()}-{secrets.token_hex(4)}"
                    os.replace(world, old)
                    remove_world_tmp(old)
                os.replace(tmp, world)
            finally:
                if tmp.exists():
                    remove_world_tmp(tmp)
    return _listing()


def remove_world_tmp(tmp: Path) -> None:
    """Remove a half-written world folder (``.toy-tmp-*``): only the PNGs and marker a world
    holds, then its folders once empty; anything else in it is left where it is."""
    for dirpath, _dirnames, filenames in os.walk(tmp, topdown=False):
        for name in filenames:
            f = Path(dirpath) / name
            if (name.endswith(".png") or name == MARKER) and not f.is_symlink():
                f.unlink(missing_ok=True)
        try:
            os.rmdir(dirpath)
        except OSError:
            pass

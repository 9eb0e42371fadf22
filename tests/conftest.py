"""Shared fixtures: offline mode, a stand-in ImageNet/MOS data root, a tiny cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A run without --cache-dir uses the default cache, which is the user's (~/.cache/oodbench): the
# suite keeps its own, git-ignored, in the checkout (reused across sessions for the toy world), or
# where $OODBENCH_TEST_CACHE says; subprocesses inherit it.
os.environ["OODBENCH_CACHE"] = os.environ.get("OODBENCH_TEST_CACHE") or str(
    Path(__file__).resolve().parents[1] / ".oodbench-cache")

STANDIN_CLASSES = 3


def make_standin_root(root: Path, seed: int = 0, per_class: int = 4, per_ood: int = 5) -> Path:
    """A data root laid out like imagenet1k-mos4 (3 ImageNet classes, tiny OOD sets, train)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    wnids = [
        ln.strip()
        for ln in (Path(__file__).parents[1] / "oodbench/data/files/imagenet1k_wnids.txt")
        .read_text()
        .splitlines()
    ][:STANDIN_CLASSES]

    def save(path: Path, tint: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)
        arr[..., tint % 3] = 255
        Image.fromarray(arr).save(path)

    for c, w in enumerate(wnids):
        for i in range(per_class):
            save(root / "imagenet" / "val" / w / f"ILSVRC2012_val_{c:03d}{i:02d}.JPEG", c)
            save(root / "imagenet" / "train" / w / f"{w}_{i}.JPEG", c)
    for s in ("iNaturalist", "SUN", "Places"):
        for i in range(per_ood):
            save(root / s / "images" / f"{s}_{i}.jpg", 3 + i)
    for t in ("banded", "blotchy"):
        for i in range(3):
            save(root / "dtd" / "images" / t / f"{t}_{i}.jpg", i)
    return root


@pytest.fixture(scope="session")
def standin_root(tmp_path_factory) -> Path:
    """Session-wide stand-in MOS-four data root (do not modify it in tests)."""
    return make_standin_root(tmp_path_factory.mktemp("standin"))


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """A fresh cache directory per test."""
    return tmp_path / "cache"

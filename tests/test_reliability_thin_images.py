"""Thin images (issue 16, case 5): a 196-byte 1x30000 PNG must not need gigabytes.

``resize_crop`` resamples only the crop's region of a thin image, and the readability check
refuses absurd aspect ratios, naming the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oodbench.cli import main
from oodbench.data.images import BOXED_ASPECT, Preprocess, resize_crop

ROOT = Path(__file__).resolve().parents[1]

CAPPED = """
import resource, sys
from PIL import Image
from oodbench.data.images import Preprocess, resize_crop
im = Image.new("RGB", (int(sys.argv[1]), int(sys.argv[2])), (10, 200, 30))
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB of address space from here
out = resize_crop(im, Preprocess())
assert out.shape == (224, 224, 3) and (out == (10, 200, 30)).all(), out[0, 0]
print("ok")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is a Linux limit")
@pytest.mark.parametrize("size", [(1, 30000), (30000, 1)])
def test_a_thin_image_resizes_within_a_memory_cap(size):
    # The whole-image resize needed 224 x 6,720,000 x 3 bytes (4.5 GB): a MemoryError under the cap.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CAPPED, *map(str, size)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("size", [(20, 2000), (2000, 20), (30, 2000)])
def test_the_bounded_resize_matches_resizing_the_whole_image(size, interpolation):
    rng = np.random.default_rng(0)
    small = (rng.random((size[1] // 10, size[0] // 10, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(small).resize(size, Image.BICUBIC)  # smooth content
    pp = Preprocess(resize=64, crop=56, interpolation=interpolation)
    w, h = size
    nw, nh = (64, int(64 * h / w)) if w <= h else (int(64 * w / h), 64)
    assert max(nw, nh) > BOXED_ASPECT * 64  # the bounded path
    full = np.asarray(im.resize((nw, nh), getattr(Image, interpolation.upper())))
    left, top = int(round((nw - 56) / 2.0)), int(round((nh - 56) / 2.0))
    ref = full[top:top + 56, left:left + 56].astype(int)
    got = resize_crop(im, pp).astype(int)
    assert got.shape == ref.shape == (56, 56, 3)
    # The same filter and centres, up to rounding: Pillow resamples in two passes through an
    # 8-bit intermediate, so a last-bit change of a weight can move an intermediate pixel by 1,
    # which bicubic's weights (their absolute sum is above 1) carry to at most 2 levels.
    diff = np.abs(got - ref)
    assert diff.max() <= 2 and diff.mean() < 0.1


def test_an_absurd_aspect_ratio_is_refused_naming_the_file(standin_root, tmp_path, capsys):
    root = Path(shutil.copytree(standin_root, tmp_path / "data"))
    thin = root / "SUN" / "images" / "thin.png"
    Image.new("RGB", (1, 30000)).save(thin)
    code = main(["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
                 "tiny-random", "--workers", "0", "--quiet", "--data-root", str(root),
                 "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "thin.png: is 1x30000 pixels, an aspect ratio beyond 50:1" in err
    assert not (tmp_path / "r").exists()


def test_the_device_decode_path_hands_thin_images_to_the_bounded_resize():
    import torch

    from oodbench.features.extract import resize_crop_tensor

    img = torch.full((3, 30000, 1), 77, dtype=torch.uint8)  # CHW, as decoded on the device
    out = resize_crop_tensor(img, Preprocess())  # a full-size float resize: 224 x 6.7M x 3 x 4 B
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8 and (out == 77).all()

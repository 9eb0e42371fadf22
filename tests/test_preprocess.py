"""CPU preprocessing equals torchvision's Resize + CenterCrop (the official repos' transform)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from oodbench.data.images import Preprocess, normalize, resize_crop


@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
def test_resize_crop_is_bit_identical_to_torchvision(interp):
    mode = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[
        interp
    ]
    rng = np.random.default_rng(0)
    for w, h in [(500, 375), (375, 500), (224, 224), (300, 225), (97, 411), (640, 97)]:
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        ref = np.asarray(T.Compose([T.Resize(224, interpolation=mode), T.CenterCrop(224)])(im))
        got = resize_crop(im, Preprocess(interpolation=interp))
        np.testing.assert_array_equal(got, ref)


def test_openood_resize_256_crop_224():
    im = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    ref = np.asarray(T.Compose([T.Resize(256), T.CenterCrop(224)])(im))
    np.testing.assert_array_equal(
        resize_crop(im, Preprocess(resize=256, crop=224, interpolation="bilinear")), ref
    )


def test_device_normalisation_equals_to_tensor_then_normalize():
    pp = Preprocess()
    arr = np.random.default_rng(2).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    ref = T.Compose([T.ToTensor(), T.Normalize(pp.mean, pp.std)])(Image.fromarray(arr))
    got = normalize(torch.from_numpy(arr.transpose(2, 0, 1)[None].copy()), pp)[0]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)

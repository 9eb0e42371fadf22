"""Local (v-path) patch features: shapes, and the identities that define them."""

from __future__ import annotations

import torch

from oodbench.backbones import load_backbone
from oodbench.features.extract import KIND_ENCODERS
from oodbench.features.local import encode_global_local, encode_local, global_and_local


def _images(n=3, size=32):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def test_kind_registered_with_shapes_and_unit_norm():
    bb = load_backbone("tiny-random")
    assert KIND_ENCODERS["local"][1] == "float16"
    loc = encode_local(bb, _images())
    assert loc.shape == (3, 16, 32)  # 32 px / patch 8 -> 16 patches; joint dim 32
    torch.testing.assert_close(loc.norm(dim=-1), torch.ones(3, 16))


def test_global_part_equals_encode_image():
    bb = load_backbone("tiny-random")
    g, _ = encode_global_local(bb, _images())
    torch.testing.assert_close(g, bb.encode_image(_images()), atol=1e-6, rtol=0)


def test_value_path_is_the_last_block_with_identity_attention():
    """Masking attention to the diagonal turns the ordinary last block into the v-path."""
    bb = load_backbone("tiny-random")
    visual = bb.model.visual
    x = bb.prepare_images(_images())
    with torch.no_grad():
        _, local = global_and_local(visual, x)
        h = visual._embeds(x)
        for block in visual.transformer.resblocks[:-1]:
            h = block(h)
        t = h.shape[1]
        diag = torch.full((t, t), float("-inf"))
        diag.fill_diagonal_(0.0)
        out = visual.transformer.resblocks[-1](h, attn_mask=diag)
        ref = visual.ln_post(out[:, 1:]) @ visual.proj
    torch.testing.assert_close(local, ref, atol=1e-5, rtol=1e-5)


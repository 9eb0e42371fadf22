"""A tiny randomly initialised open_clip CLIP for tests: real code paths, no weights, no network."""

from __future__ import annotations

import torch

from oodbench.backbones.base import Backbone, BackboneDef, finish, preprocess_for
from oodbench.data.images import Preprocess

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def build_tiny_clip(seed: int = 0):
    """The tiny CLIP, deterministically initialised from ``seed``."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**TINY_CONFIG)


class TinyRandomBackbone(BackboneDef):
    """Tiny randomly initialised open_clip ViT (tests only; its numbers mean nothing)."""

    description = "tiny random-init open_clip ViT, for tests (numbers mean nothing)"

    def load(self, spec, device="cpu", precision="fp32", preprocess=None) -> Backbone:
        import open_clip

        model = finish(build_tiny_clip(), device, precision)
        size = TINY_CONFIG["vision_cfg"]["image_size"]
        pp = preprocess_for(Preprocess(resize=size, crop=size), preprocess)
        tok = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
        identity = {"arch": "tiny-random", "weights": "random-init-seed0"}
        return Backbone(spec, model, tok, pp, precision, identity, torch.device(device))

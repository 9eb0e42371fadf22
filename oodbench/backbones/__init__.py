"""Backbones: open_clip models with the preprocessing that belongs to their weights.

``load_backbone("ViT-B-16:openai")`` resolves any open_clip ``ARCH:TAG``, ``ARCH:/path`` or
``ARCH:random`` (seeded random weights for smoke runs, marked ``random_weights`` in the identity);
registered names (``toy``, ``tiny-random``, the papers' presets and plugins' backbones from the
``oodbench.backbones`` entry-point group) are listed by ``oodbench list backbones``, with every
open_clip architecture and tag and whether its weights are in the local cache.

:func:`check_backbone` resolves a spec and checks that its weights are there (offline) without
building the model, so that a run refuses a bad backbone before any data work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oodbench.registry import BACKBONES

if TYPE_CHECKING:
    from oodbench.backbones.base import Backbone

_OPENCLIP = "oodbench.backbones.openclip:OpenClipBackbone"
BACKBONES.register_lazy("toy", "oodbench.backbones.toy:ToyBackbone",
                        "built-in toy CLIP (ViT) trained on the toy world; runs offline on a CPU")
BACKBONES.register_lazy("tiny-random", "oodbench.backbones.tiny:TinyRandomBackbone",
                        "tiny random-init open_clip ViT, for tests (numbers mean nothing)")
BACKBONES.register_lazy("ViT-B-16:openai", _OPENCLIP,
                        "OpenAI CLIP ViT-B/16 (MCM, NegLabel, CMA, LAPT, KR-NFT, Local-Prompt)")
BACKBONES.register_lazy("ViT-B-16:laion2b_s34b_b88k", _OPENCLIP,
                        "open_clip ViT-B/16 LAION-2B (CLIPN's base model)")
BACKBONES.register_lazy("ViT-B-32:openai", _OPENCLIP, "OpenAI CLIP ViT-B/32")
BACKBONES.register_lazy("ViT-L-14:openai", _OPENCLIP, "OpenAI CLIP ViT-L/14")
BACKBONES.register_lazy("ViT-B-16:random", _OPENCLIP,
                        "ViT-B/16 with seeded random weights (any ARCH:random works): smoke runs "
                        "of the real path without weights; numbers mean nothing, never ranked")


def backbone_class(spec: str):
    """The BackboneDef class that loads ``spec``: a registered name, else open_clip's."""
    if spec in BACKBONES or ":" not in spec:
        return BACKBONES.get(spec)  # unknown names raise with suggestions
    from oodbench.backbones.openclip import OpenClipBackbone

    return OpenClipBackbone


def check_backbone(spec: str) -> None:
    """Resolve ``spec`` and check its architecture, tag and weights (present offline) without
    loading it: raises BackboneError/UnknownNameError saying what to do."""
    backbone_class(spec)().check(spec)


def load_backbone(
    spec: str, device: str = "cpu", precision: str = "fp32", preprocess: dict | None = None
) -> Backbone:
    """Load a registered backbone or any open_clip ``ARCH:WEIGHTS`` spec."""
    cls = backbone_class(spec)
    bb = cls().load(spec, device=device, precision=precision, preprocess=preprocess)
    check_input_size(bb)  # before any image is read
    return bb


def check_input_size(bb: Backbone) -> None:
    """Refuse a crop that differs from the image tower's input size (its positional embeddings
    fit that size only; the forward pass would fail with a shape error)."""
    size = getattr(getattr(bb.model, "visual", None), "image_size", None)
    if isinstance(size, int):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        return
    crop = bb.preprocess.crop
    if (crop, crop) != tuple(int(x) for x in size):
        from oodbench.errors import BackboneError

        raise BackboneError(
            f"crop {crop} differs from the input size of {bb.name} ({size[0]}x{size[1]}): its "
            f"image tower takes {size[0]}x{size[1]} images only. Drop --crop (or pass "
            f"--crop {size[0]}); --resize may differ")

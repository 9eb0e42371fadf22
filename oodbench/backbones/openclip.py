"""open_clip backbones: ``ARCH:TAG`` (a pretrained tag) or ``ARCH:/path/to/weights``.

Nothing is downloaded unless the user allows it: with ``HF_HUB_OFFLINE=1`` (or no network) a
missing pretrained tag fails at once with instructions for supplying the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from oodbench.backbones.base import (
    Backbone,
    BackboneDef,
    apply_state_dict,
    file_sha256,
    finish,
    load_state_dict_file,
    preprocess_for,
)
from oodbench.data.images import Preprocess
from oodbench.errors import BackboneError
from oodbench.registry import UnknownNameError


def split_spec(spec: str) -> tuple[str, str]:
    """'ViT-B-16:openai' -> ('ViT-B-16', 'openai'); the weights part may be a path with colons."""
    if ":" not in spec:
        raise BackboneError(f"backbone {spec!r} must be ARCH:WEIGHTS, e.g. ViT-B-16:openai")
    arch, weights = spec.split(":", 1)
    return arch, weights


def looks_like_path(weights: str) -> bool:
    """True for a local checkpoint file rather than a pretrained tag."""
    return (
        "/" in weights
        or "\\" in weights
        or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))
    )


def weights_preprocess(model: torch.nn.Module) -> Preprocess:
    """The preprocessing that travels with open_clip weights (size, interpolation, mean/std)."""
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return Preprocess(
        resize=size,
        crop=size,
        interpolation=cfg.get("interpolation", "bicubic"),
        mean=tuple(cfg.get("mean", Preprocess().mean)),
        std=tuple(cfg.get("std", Preprocess().std)),
    )


class OpenClipBackbone(BackboneDef):
    """Any open_clip architecture with a pretrained tag or a local checkpoint (ARCH:WEIGHTS)."""

    description = "open_clip ARCH:TAG or ARCH:/path/to/weights (e.g. ViT-B-16:openai)"

    def load(self, spec, device="cpu", precision="fp32", preprocess=None) -> Backbone:
        import open_clip

        arch, weights = split_spec(spec)
        if arch not in open_clip.list_models():
            raise UnknownNameError("open_clip architecture", arch, open_clip.list_models())
        if looks_like_path(weights):
            path = Path(weights).expanduser()
            sd = load_state_dict_file(path)  # refuse a bad file before building the model
            model = open_clip.create_model(arch, pretrained=None)
            apply_state_dict(model, sd, str(path))
            identity = {"arch": arch, "weights": str(path.resolve()), "sha256": file_sha256(path)}
        else:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if weights not in tags:
                raise UnknownNameError(f"pretrained tag for {arch}", weights, list(tags))
            model = _create_pretrained(open_clip, arch, weights)
            identity = {"arch": arch, "weights": weights}
        model = finish(model, device, precision)
        pp = preprocess_for(weights_preprocess(model), preprocess)
        return Backbone(
            spec,
            model,
            open_clip.get_tokenizer(arch),
            pp,
            precision,
            identity,
            torch.device(device),
        )


def _create_pretrained(open_clip, arch: str, tag: str):
    try:
        return open_clip.create_model(arch, pretrained=tag)
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise BackboneError(
            f"could not load weights {arch}:{tag} ({type(e).__name__}: {str(e)[:200]}).\n"
            + ("HF_HUB_OFFLINE=1 is set, so nothing is downloaded.\n" if offline else "")
            + "To supply them: on a machine with network run\n"
            f"  python -c \"import open_clip; "
            f"open_clip.create_model('{arch}', pretrained='{tag}')\"\n"
            "and copy the Hugging Face cache (~/.cache/huggingface) here, "
            "or download the checkpoint "
            f"file and pass it as a path: --backbone {arch}:/path/to/weights.safetensors"
        ) from None

"""The built-in toy backbone: a small open_clip CLIP trained on the toy world, shipped inside."""

from __future__ import annotations

import torch

from oodbench.backbones.base import Backbone, BackboneDef, file_sha256, finish, preprocess_for
from oodbench.data.images import Preprocess


class ToyBackbone(BackboneDef):
    """Small open_clip ViT trained on the procedural toy world (weights ship in the package)."""

    description = "built-in toy CLIP (ViT) trained on the toy world; runs offline on a CPU"

    def load(self, spec, device="cpu", precision="fp32", preprocess=None) -> Backbone:
        from oodbench.toy import model as toy

        model = finish(toy.load_toy_clip(), device, precision)
        p = toy.TOY_PREPROCESS
        pp = preprocess_for(
            Preprocess(
                resize=p["image_size"],
                crop=p["image_size"],
                interpolation=p.get("interpolation", "bicubic"),
                mean=tuple(p["mean"]),
                std=tuple(p["std"]),
            ),
            preprocess,
        )
        identity = {
            "arch": "toy",
            "weights": "toy_clip.safetensors",
            "sha256": file_sha256(toy.WEIGHTS_PATH),
        }
        return Backbone(
            spec, model, toy.toy_tokenizer(), pp, precision, identity, torch.device(device)
        )

"""MCM: Maximum Concept Matching (Ming et al., NeurIPS 2022).

score(x) = max_i softmax(s / T)_i with s_i the raw cosine (no x100) between the image and
"a photo of a <class_i>" (no trailing period), T = 1, in float32 — as the official code computes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oodbench.detectors.base import Recipe, ZeroShotDetector, ZeroShotParams, require
from oodbench.registry import DETECTORS


@dataclass
class MCMParams(ZeroShotParams):
    """MCM's defaults: template 'a photo of a {}', temperature 1 on raw cosines."""

    temperature: float = 1.0

    def validate(self) -> None:
        super().validate()
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@DETECTORS.register("mcm")
class MCM(ZeroShotDetector):
    """Maximum Concept Matching: max softmax of raw image-text cosines at T=1 (zero-shot)."""

    name = "mcm"
    version = "1"
    stochastic = False  # zero-shot softmax: no draw
    Params = MCMParams
    recipe = Recipe(
        source="deeplearning-wisc/MCM: utils/train_eval_util.py (set_model_clip), "
               "utils/detection_util.py (get_ood_scores_clip), eval_ood_detection.py",
        interpolation="bilinear", resize_ratio=1.0,
        prompts="'a photo of a {c}' (no period), one per class",
        precision="fp32 (Hugging Face CLIPModel.from_pretrained)",
        seeds="none (deterministic)")
    precision = "bf16"
    precision_reason = ("zero-shot softmax of fp32 cosines; the official code runs fp32 towers "
                        "(Hugging Face CLIPModel), reduced precision changes scores by rounding")

    def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
        return torch.softmax(s / self.params.temperature, dim=1).max(dim=1).values

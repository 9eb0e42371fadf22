"""GL-MCM: global-local maximum concept matching (Miyai et al., IJCV 2025), zero-shot.

S(x) = max_c softmax(g / T)_c + lambda_local * max_{r, c} softmax(l_r / T)_c, with g the raw cosines
of the global image feature and l_r those of patch r's v-path feature (``local`` kind) to
"a photo of a {c}" (no period, ``utils/detection_util.py``), T = 1. lambda_local = 0.5 as in the
official ImageNet script (its argparse default, and LoCoOp's GL score, use 1.0). Prediction: argmax
of the global cosines. Images: torchvision ``Resize(224)`` (bilinear) then ``CenterCrop(224)``
(``utils/train_eval_util.py``), not clip.load's bicubic transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oodbench.detectors.base import (
    GLOBAL,
    LOCAL,
    Recipe,
    ZeroShotDetector,
    ZeroShotParams,
    require,
)
from oodbench.registry import DETECTORS


def gl_mcm_score(global_cos: torch.Tensor, local_cos: torch.Tensor, temperature: float,
                 weight: float) -> torch.Tensor:
    """(N,) GL-MCM from (N, C) global and (N, P, C) local cosines."""
    g = torch.softmax(global_cos.float() / temperature, dim=-1).amax(dim=-1)
    loc = torch.softmax(local_cos.float() / temperature, dim=-1).flatten(1).amax(dim=1)
    return g + weight * loc


@dataclass
class GLMCMParams(ZeroShotParams):
    """Official defaults: template "a photo of a {}" (no period), T = 1, lambda_local = 0.5."""

    template: str = "a photo of a {}"
    temperature: float = 1.0
    lambda_local: float = 0.5

    def validate(self) -> None:
        super().validate()
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        require(self.lambda_local >= 0, "lambda_local", "must be >= 0")


@DETECTORS.register("gl-mcm")
class GLMCM(ZeroShotDetector):
    """GL-MCM: global MCM plus the weighted max local (v-path patch) softmax, zero-shot."""

    name = "gl-mcm"
    version = "2"
    stochastic = False  # zero-shot: no draw
    Params = GLMCMParams
    needs = frozenset({GLOBAL, LOCAL})
    recipe = Recipe(
        source="AtsuMiyai/GL-MCM: utils/detection_util.py (get_ood_scores_clip), "
               "utils/train_eval_util.py (set_model_clip), scripts/eval_imagenet.sh",
        interpolation="bilinear", resize_ratio=1.0,
        prompts="'a photo of a {c}' (no period)",
        precision="fp16 (OpenAI clip.load on CUDA); scores in fp32",
        seeds="none (deterministic)")
    precision = "bf16"
    precision_reason = ("zero-shot softmax of fp32 cosines; the official code runs OpenAI CLIP's "
                        "fp16 towers on GPU (and the local kind is stored as float16)")

    def score_and_predict(self, feats):
        g = self.logits(feats)
        loc = feats[LOCAL].float() @ self.text.T
        return gl_mcm_score(g, loc, self.params.temperature, self.params.lambda_local), g.argmax(1)

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[0]

"""Logit baselines on CLIP's zero-shot cosines: MSP, max-logit, energy.

Energy and max-logit follow MCM's code (``utils/detection_util.py``, ``get_ood_scores_clip``),
which reports them for zero-shot CLIP on **raw cosines** (no x100): energy = T logsumexp(s / T),
max-logit = max_k s_k. MSP, which MCM's code does not compute, follows CLIPN's
``src/zero_shot_infer.py``: the maximum softmax of 100 x cosine (a fixed 100, OpenAI CLIP's logit
scale; on the toy CLIP, whose own scale is 17, that saturates the softmax; ``logit_scale=null``
uses the backbone's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oodbench.detectors.base import Recipe, ZeroShotDetector, ZeroShotParams, require
from oodbench.registry import DETECTORS

# MCM's code runs Hugging Face's CLIPModel in fp32 (utils/train_eval_util.py, set_model_clip);
# bf16 towers move these scores by rounding only (AUROC within 0.003 on the toy world and the
# perf benchmark), so a user who asks for bf16 gets it; fp32 is the default.
MCM_RECIPE = Recipe(
    source="deeplearning-wisc/MCM: utils/detection_util.py (get_ood_scores_clip: --score energy, "
           "max-logit), utils/train_eval_util.py (set_model_clip)",
    interpolation="bilinear", resize_ratio=1.0,
    prompts="'a photo of a {c}' (no period)", precision="fp32 (Hugging Face CLIPModel)",
    seeds="none (deterministic)")
PRECISION_REASON = ("zero-shot function of fp32 cosines; the official code (MCM's) runs "
                    "fp32 towers, reduced precision changes scores by rounding only")


@dataclass
class LogitParams(ZeroShotParams):
    """Template and the factor on the cosines: 100 for MSP, as CLIPN's code fixes it; ``None``:
    the backbone's own ``logit_scale.exp()``."""

    logit_scale: float | None = 100.0

    def validate(self) -> None:
        super().validate()
        require(self.logit_scale is None or self.logit_scale > 0, "logit_scale",
                f"must be > 0 (or null: the backbone's), got {self.logit_scale}")


@dataclass
class RawLogitParams(LogitParams):
    """MCM's code: raw cosines (``logit_scale`` 1). ``logit_scale=100`` gives CLIP's scaled
    logits, the convention of CLIPN's code and of tables that quote it."""

    logit_scale: float | None = 1.0

    def validate(self) -> None:
        super().validate()
        require(self.logit_scale is not None, "logit_scale", "must be a number (1: MCM's code)")


@dataclass
class EnergyParams(RawLogitParams):
    """Energy adds a temperature: T logsumexp(logit_scale * s / T), T = 1 (MCM's ``--T``)."""

    temperature: float = 1.0

    def validate(self) -> None:
        super().validate()
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@DETECTORS.register("msp")
class MSP(ZeroShotDetector):
    """Maximum softmax probability of the 100 x cosine zero-shot logits."""

    name = "msp"
    version = "1"
    stochastic = False  # zero-shot: no draw
    Params = LogitParams
    recipe = Recipe(
        source="xmed-lab/CLIPN: src/zero_shot_infer.py (MSP on 100 x cosine), "
               "src/classification.py; preprocessing: the weights' own",
        prompts="'a photo of a {c}'", precision="as the weights (fp32 default)",
        seeds="none (deterministic)")
    precision = "bf16"
    precision_reason = PRECISION_REASON

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.scale = (self.params.logit_scale if self.params.logit_scale is not None
                      else float(ctx.backbone.model.logit_scale.detach().exp()))

    def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
        return torch.softmax(s * self.scale, dim=1).max(dim=1).values


@DETECTORS.register("maxlogit")
class MaxLogit(ZeroShotDetector):
    """Largest zero-shot cosine (MCM's code; x ``logit_scale``, 1 by default)."""

    name = "maxlogit"
    version = "2"
    stochastic = False  # zero-shot: no draw
    Params = RawLogitParams
    recipe = MCM_RECIPE
    precision = "bf16"
    precision_reason = PRECISION_REASON

    def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
        return (s * self.params.logit_scale).max(dim=1).values


@DETECTORS.register("energy")
class Energy(ZeroShotDetector):
    """Negative free energy T * logsumexp(s / T) of the raw zero-shot cosines (MCM's code)."""

    name = "energy"
    version = "2"
    stochastic = False  # zero-shot: no draw
    Params = EnergyParams
    recipe = MCM_RECIPE
    precision = "bf16"
    precision_reason = PRECISION_REASON

    def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
        t = self.params.temperature
        return t * torch.logsumexp(s * self.params.logit_scale / t, dim=1)

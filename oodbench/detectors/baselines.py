"""Logit baselines on CLIP's scaled cosine logits (100 x cosine): MSP, max-logit, energy."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oodbench.detectors.base import ZeroShotDetector, ZeroShotParams, require
from oodbench.registry import DETECTORS


@dataclass
class LogitParams(ZeroShotParams):
    """Template and CLIP's logit scale (100 for OpenAI CLIP)."""

    logit_scale: float = 100.0

    def validate(self) -> None:
        super().validate()
        require(self.logit_scale > 0, "logit_scale", f"must be > 0, got {self.logit_scale}")


@dataclass
class EnergyParams(LogitParams):
    """Energy adds a temperature on the scaled logits."""

    temperature: float = 1.0

    def validate(self) -> None:
        super().validate()
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@DETECTORS.register("msp")
class MSP(ZeroShotDetector):
    """Maximum softmax probability of the 100 x cosine zero-shot logits."""

    name = "msp"
    Params = LogitParams
    precision = "bf16"
    precision_reason = ("zero-shot function of fp32 cosines; MCM's code, which reports this "
                        "CLIP baseline, runs OpenAI CLIP's fp16 towers on GPU")

    def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
        return torch.softmax(s * self.params.logit_scale, dim=1).max(dim=1).values


@DETECTORS.register("maxlogit")
class MaxLogit(ZeroShotDetector):
    """Largest 100 x cosine zero-shot logit."""

    name = "maxlogit"
    Params = LogitParams
    precision = "bf16"
    precision_reason = ("zero-shot function of fp32 cosines; MCM's code, which reports this "
                        "CLIP baseline, runs OpenAI CLIP's fp16 towers on GPU")

    def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
        return (s * self.params.logit_scale).max(dim=1).values


@DETECTORS.register("energy")
class Energy(ZeroShotDetector):
    """Negative free energy T * logsumexp(logits / T) of the 100 x cosine logits."""

    name = "energy"
    Params = EnergyParams
    precision = "bf16"
    precision_reason = ("zero-shot function of fp32 cosines; MCM's code, which reports this "
                        "CLIP baseline, runs OpenAI CLIP's fp16 towers on GPU")

    def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
        t = self.params.temperature
        return t * torch.logsumexp(s * self.params.logit_scale / t, dim=1)

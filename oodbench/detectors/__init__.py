"""Detectors, one module each; ``base.py`` holds the contract. Registered lazily by name here."""

from oodbench.registry import DETECTORS

_BUILTIN = {
    "mcm": ("oodbench.detectors.mcm:MCM",
            "Maximum Concept Matching: max softmax of raw cosines at T=1 (Ming et al. 2022)"),
    "msp": ("oodbench.detectors.baselines:MSP", "max softmax of 100 x cosine zero-shot logits"),
    "maxlogit": ("oodbench.detectors.baselines:MaxLogit", "largest 100 x cosine zero-shot logit"),
    "energy": ("oodbench.detectors.baselines:Energy", "T * logsumexp of 100 x cosine logits"),
}

for _name, (_target, _description) in _BUILTIN.items():
    DETECTORS.register_lazy(_name, _target, _description)

"""Detectors, one module each; ``base.py`` holds the contract. Registered lazily by name here."""

from oodbench.registry import DETECTORS

_BUILTIN = {
    "mcm": (
        "oodbench.detectors.mcm:MCM",
        "Maximum Concept Matching: max softmax of raw cosines at T=1 (Ming et al. 2022)",
    ),
    "msp": ("oodbench.detectors.baselines:MSP", "max softmax of 100 x cosine zero-shot logits"),
    "maxlogit": ("oodbench.detectors.baselines:MaxLogit", "largest 100 x cosine zero-shot logit"),
    "energy": ("oodbench.detectors.baselines:Energy", "T * logsumexp of 100 x cosine logits"),
    "neglabel": (
        "oodbench.detectors.neglabel:NegLabel",
        "NegLabel: ID mass against mined WordNet negative labels, grouped (Jiang 2024)",
    ),
    "csp": (
        "oodbench.detectors.csp:CSP",
        "CSP: NegLabel with a conjugated pool of '<adjective> <superclass>' negatives (Chen 2024)",
    ),
    "adaneg": (
        "oodbench.detectors.adaneg:AdaNeg",
        "AdaNeg: negative proxies from a memory of test images, scored on a stream (Zhang 2024)",
    ),
    "cma": (
        "oodbench.detectors.cma:CMA",
        "CMA: CLIP fine-tuned with cross-modal alignment, ungrouped NegLabel score (Kim 2025)",
    ),
    "clipn": (
        "oodbench.detectors.clipn:CLIPN",
        "CLIPN: learned 'no' text tower, ATD yes/no score (Wang et al. 2023; trained)",
    ),
    "krnft": (
        "oodbench.detectors.krnft:KRNFT",
        "KR-NFT: image-conditioned scale/shift of frozen ID + negative text features (trained)",
    ),
    "gl-mcm": (
        "oodbench.detectors.glmcm:GLMCM",
        "GL-MCM: global MCM + weighted max local (v-path patch) softmax, zero-shot",
    ),
    "locoop": (
        "oodbench.detectors.locoop:LoCoOp",
        "LoCoOp: CoOp context + entropy maximisation on background patches (trained)",
    ),
    "lapt": (
        "oodbench.detectors.lapt:LAPT",
        "LAPT: learned ID and negative prompt contexts, grouped NegLabel score (trained)",
    ),
    "local-prompt": (
        "oodbench.detectors.local_prompt:LocalPrompt",
        "Local-Prompt: class-specific local prompts + negative prompts (trained)",
    ),
}

for _name, (_target, _description) in _BUILTIN.items():
    DETECTORS.register_lazy(_name, _target, _description)

"""Text embeddings, encoded once per (backbone, prompt list) and cached."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from oodbench.features.cache import Cache


def text_spec(backbone, prompts: list[str]) -> dict:
    """Cache key of a prompt list's embeddings under one backbone."""
    h = hashlib.sha256("\n".join(prompts).encode()).hexdigest()
    return {"backbone": backbone.key(), "prompts_sha256": h, "n": len(prompts), "norm": "l2",
            "forward": "to-last-eot"}  # backbones.base.encode_tokens (rounding differs from 77)


def encode_text_cached(backbone, prompts: list[str], cache: Cache | None,
                       stats: dict | None = None) -> torch.Tensor:
    """L2-normalised float32 (N, D) embeddings on the backbone's device; cached by content."""
    prompts = list(prompts)
    spec = text_spec(backbone, prompts)
    arr = cache.load("text", spec, mmap=False) if cache is not None else None
    if stats is not None:
        stats["text_hits" if arr is not None else "text_misses"] = \
            stats.get("text_hits" if arr is not None else "text_misses", 0) + 1
    if arr is None:
        emb = backbone.encode_text(prompts)
        if cache is not None:
            cache.save("text", spec, emb.cpu().numpy().astype(np.float32), n_prompts=len(prompts),
                       first_prompt=prompts[0] if prompts else "")
        return emb
    return torch.from_numpy(np.array(arr)).to(backbone.device)

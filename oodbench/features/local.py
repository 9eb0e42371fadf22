"""Local (patch) features: the value path of the last vision block, projected into the joint space.

GL-MCM, LoCoOp and Local-Prompt score patches with the "v-v" path of CLIP's last residual block:
the block run with an identity attention map (each token keeps its own value vector, passed through
the attention output projection), plus the residual and the MLP. The patch tokens of that path then
go through ``ln_post`` and ``proj`` and are L2-normalised: (N, P, D) features comparable with text
embeddings. open_clip's ``output_tokens`` gives ordinary (not v-path) tokens without ``proj``, so
the last block is re-run here. Importing this module registers the ``local`` feature kind, and
the joint encoder that gives ``global`` and ``local`` from one pass when both are extracted.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.features.extract import register_joint, register_kind

LOCAL = "local"


def value_path(block, x: torch.Tensor) -> torch.Tensor:
    """One residual block run with an identity attention map (batch-first x: (N, T, W))."""
    attn = block.attn
    y = block.ln_1(x)
    width = y.shape[-1]
    w_v = attn.in_proj_weight[2 * width:]
    b_v = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    v = attn.out_proj(F.linear(y, w_v, b_v))
    x = x + block.ls_1(v)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def global_and_local(visual, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised global (N, D) and v-path patch (N, P, D) features from normalised images."""
    x = visual._embeds(images)
    tr = visual.transformer
    if not tr.batch_first:
        x = x.transpose(0, 1)
    for block in tr.resblocks[:-1]:
        x = block(x)
    last = tr.resblocks[-1]
    out = last(x)
    v = value_path(last, x)  # token-wise, so the layout does not matter
    if not tr.batch_first:
        out, v = out.transpose(0, 1), v.transpose(0, 1)
    pooled, _ = visual._pool(out)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    local = visual.ln_post(v[:, 1:])
    if visual.proj is not None:
        local = local @ visual.proj
    return pooled, local


def encode_global_local(backbone, images_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 global (N, D) and local (N, P, D) features of a uint8 batch."""
    x = backbone.prepare_images(images_uint8)
    on = backbone.device.type == "cuda" and backbone.dtype != torch.float32
    with torch.autocast(backbone.device.type, dtype=backbone.dtype, enabled=on):
        g, loc = global_and_local(backbone.model.visual, x)
    return F.normalize(g.float(), dim=-1), F.normalize(loc.float(), dim=-1)


@torch.inference_mode()
def encode_local(backbone, images_uint8: torch.Tensor) -> torch.Tensor:
    """L2-normalised float32 v-path patch features (N, P, D): the ``local`` feature kind."""
    return encode_global_local(backbone, images_uint8)[1]


register_kind(LOCAL, encode_local, np.float16)
# extracted together, both kinds come from one pass through the image tower
register_joint(("global", LOCAL), encode_global_local)

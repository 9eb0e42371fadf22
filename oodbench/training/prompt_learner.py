"""Learnable prompt context on an open_clip text tower (CoOp-style), with a custom text forward.

Each prompt is tokenised as ``"X X ... X <name>."`` (``n_ctx`` placeholders, class token last).
Its token embeddings are kept as two frozen pieces, the start token and everything after the
placeholders; the learnable context is spliced in between. :func:`text_tower_forward` then runs the
text tower exactly as ``open_clip.CLIP.encode_text`` does (positional embedding, transformer with
the causal mask, final norm, the end-of-text token, projection), but from embeddings, so gradients
reach the context. The tokenised ids of the placeholder prompts are kept only to find the
end-of-text token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def text_tower_forward(model, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Unnormalised text features from token embeddings (N, L, W) and their token ids (N, L)."""
    from open_clip.transformer import text_global_pool

    cast = model.transformer.get_cast_dtype()
    x = embeds.to(cast) + model.positional_embedding.to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, getattr(model, "text_pool_type", "argmax"),
                         eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


class PromptLearner(nn.Module):
    """Learnable context for a list of names: shared (n_ctx, W) or class-specific (C, n_ctx, W).

    ``ctx_init`` (e.g. "a photo of a") starts the context from those words' embeddings and sets
    ``n_ctx`` to their count; otherwise it is drawn from N(0, ``init_std``²) with ``generator``.
    """

    def __init__(self, model, tokenizer, names: list[str], n_ctx: int = 16, csc: bool = False,
                 ctx_init: str | None = None, init_std: float = 0.02, suffix: str = ".",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.model = [model]  # a list keeps the frozen tower out of this module's parameters
        self.names = list(names)
        width = model.token_embedding.weight.shape[1]
        device = model.token_embedding.weight.device
        if ctx_init:
            init_ids = tokenizer([ctx_init]).to(device)
            n_ctx = int((init_ids[0] > 0).sum()) - 2
        placeholder = " ".join(["X"] * n_ctx)
        texts = [" ".join(s for s in (placeholder, n) if s) + suffix for n in self.names]
        tokens = tokenizer(texts).to(device)
        with torch.no_grad():
            emb = model.token_embedding(tokens).float()
        self.n_ctx, self.csc = n_ctx, csc
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", emb[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", emb[:, 1 + n_ctx:].clone(), persistent=False)
        shape = (len(self.names), n_ctx, width) if csc else (n_ctx, width)
        if ctx_init:
            with torch.no_grad():
                init = model.token_embedding(init_ids)[0, 1:1 + n_ctx].float()
            ctx = init.expand(shape).clone() if csc else init.clone()
        else:
            ctx = torch.randn(shape, generator=generator) * init_std
        self.ctx = nn.Parameter(ctx.to(device))

    def embeddings(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt token embeddings (C, L, W) with the context spliced in (rows ``index`` only)."""
        sel = slice(None) if index is None else index
        prefix, suffix = self.prefix[sel], self.suffix[sel]
        ctx = self.ctx[sel] if self.csc else self.ctx.unsqueeze(0).expand(len(prefix), -1, -1)
        return torch.cat([prefix, ctx.to(prefix.dtype), suffix], dim=1)

    def forward(self, index: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        """Text features (C, D) of the prompts (optionally only rows ``index``), L2-normalised."""
        tokens = self.tokens if index is None else self.tokens[index]
        f = text_tower_forward(self.model[0], self.embeddings(index), tokens).float()
        return F.normalize(f, dim=-1) if normalize else f


def freeze(model) -> None:
    """Turn off gradients of every parameter of ``model`` (the CLIP towers stay frozen)."""
    for p in model.parameters():
        p.requires_grad_(False)

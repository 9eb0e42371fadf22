"""The prompt learner's text forward reproduces open_clip's encode_text exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oodbench.backbones import load_backbone
from oodbench.training.prompt_learner import PromptLearner

NAMES = ["goldfish", "great white shark", "tench"]


def _reference(bb, texts):
    with torch.no_grad():
        return F.normalize(bb.model.encode_text(bb.tokenizer(texts)).float(), dim=-1)


def test_zero_context_equals_encode_text():
    bb = load_backbone("tiny-random")
    pl = PromptLearner(bb.model, bb.tokenizer, NAMES, n_ctx=0)
    with torch.no_grad():
        got = pl()
    torch.testing.assert_close(got, _reference(bb, [f"{n}." for n in NAMES]), atol=1e-6, rtol=0)


def test_context_initialised_from_words_equals_the_written_prompt():
    bb = load_backbone("tiny-random")
    for csc in (False, True):
        pl = PromptLearner(bb.model, bb.tokenizer, NAMES, ctx_init="a photo of a", csc=csc)
        assert pl.n_ctx == 4
        with torch.no_grad():
            got = pl()
        ref = _reference(bb, [f"a photo of a {n}." for n in NAMES])
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_gradients_reach_only_the_context():
    bb = load_backbone("tiny-random")
    pl = PromptLearner(bb.model, bb.tokenizer, NAMES, n_ctx=4, csc=True,
                       generator=torch.Generator().manual_seed(0))
    assert [n for n, _ in pl.named_parameters()] == ["ctx"]
    assert pl.ctx.shape == (3, 4, bb.model.token_embedding.weight.shape[1])
    pl()[1].sum().backward()
    grad = pl.ctx.grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0
    # One class alone or among three: the text tower runs on a batch of 1 or 3, whose float32
    # GEMMs may round differently (9e-8 seen). Bound: each of the L layers and the projection
    # sums W-term products of order-one values, so unit outputs move by at most (L + 1) W eps.
    width = bb.model.token_embedding.weight.shape[1]
    layers = len(bb.model.transformer.resblocks)
    tol = (layers + 1) * width * torch.finfo(torch.float32).eps
    with torch.no_grad():
        torch.testing.assert_close(pl(index=torch.tensor([2])), pl()[2:3], atol=tol, rtol=0)

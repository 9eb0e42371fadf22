"""GL-MCM's score and LoCoOp's background-entropy term against their written definitions
(methods/trained-and-protocols.md §5.2, §5.4), computed here patch by patch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from oodbench.detectors.base import GLOBAL, LOCAL
from oodbench.detectors.glmcm import gl_mcm_score
from oodbench.detectors.locoop import LoCoOp, background_entropy_loss

G = torch.Generator().manual_seed(0)
N, P, C = 3, 5, 4


def _softmax_max(row: list[float], t: float) -> float:
    e = [math.exp(v / t) for v in row]
    return max(e) / sum(e)


def test_gl_mcm_is_global_mcm_plus_weighted_best_patch_mcm():
    g, loc = torch.randn(N, C, generator=G), torch.randn(N, P, C, generator=G)
    for t, w in ((1.0, 0.5), (2.0, 1.0)):
        ref = [_softmax_max(g[i].tolist(), t) + w * max(_softmax_max(loc[i, r].tolist(), t)
                                                           for r in range(P)) for i in range(N)]
        torch.testing.assert_close(gl_mcm_score(g, loc, t, w), torch.tensor(ref))


def test_background_entropy_is_minus_the_mean_entropy_of_patches_whose_top_k_misses_the_label():
    logits = torch.randn(N, P, C, generator=G) * 3
    y = torch.tensor([0, 2, 3])
    k = 2
    entropies = []
    for i in range(N):
        for r in range(P):
            p = F.softmax(logits[i, r], dim=-1)
            if int(y[i]) not in p.topk(k).indices.tolist():
                entropies.append(-sum(float(q) * math.log(float(q)) for q in p))
    assert 0 < len(entropies) < N * P  # the example has both kinds of patch
    torch.testing.assert_close(background_entropy_loss(logits, y, k),
                               torch.tensor(-sum(entropies) / len(entropies)))


def test_background_entropy_is_zero_when_every_patch_ranks_its_label_in_the_top_k():
    logits = torch.randn(N, P, C, generator=G)
    y = torch.tensor([0, 1, 2])
    assert float(background_entropy_loss(logits, y, top_k=C)) == 0.0


def test_locoop_scores_gl_mcm_with_weight_one_over_its_learned_prompts():
    det = LoCoOp({})
    det.effective = det.params  # score "gl", T = 1, local weight 1: LoCoOp's test_ood
    det.text = F.normalize(torch.randn(C, 8, generator=G), dim=-1)
    det.cos_factor = 1.0  # OpenAI CLIP: logit_scale.exp() = 100, and test_ood divides by 100
    feats = {GLOBAL: F.normalize(torch.randn(N, 8, generator=G), dim=-1),
             LOCAL: F.normalize(torch.randn(N, P, 8, generator=G), dim=-1)}
    g, loc = feats[GLOBAL] @ det.text.T, feats[LOCAL] @ det.text.T
    ref = [_softmax_max(g[i].tolist(), 1.0) + max(_softmax_max(loc[i, r].tolist(), 1.0)
                                                   for r in range(P)) for i in range(N)]
    torch.testing.assert_close(det.score(feats), torch.tensor(ref))
    assert torch.equal(det.predict(feats), g.argmax(dim=1))

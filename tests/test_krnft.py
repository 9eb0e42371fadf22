"""KR-NFT: the batched closed form equals the per-image definition; losses; end-to-end training."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from oodbench.detectors.krnft import (
    FeatureTransform,
    KRNFTParams,
    krnft_losses,
    mine_least_similar,
    transformed_logits,
)
from oodbench.detectors.neglabel import group_permutation

D, C, M = 16, 5, 12
SCALE = 17.5  # a backbone logit scale other than OpenAI CLIP's 100 (the toy CLIP's is ~17)


def _random_transform(seed=0):
    """A transform whose meta-nets are not at their (identity) zero init."""
    torch.manual_seed(seed)
    model = FeatureTransform(D, 8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def per_image_logits(model, v, t):
    """The definition, one image at a time: build t' = normalize(a*t + b) explicitly."""
    out_id, out_neg = [], []
    for x in v:
        (a_id, b_id), (a_ood, b_ood) = model(x[None])
        tid = F.normalize(a_id * t["id"] + b_id, dim=-1)
        tneg = F.normalize(a_ood * t["neg"] + b_ood, dim=-1)
        out_id.append(SCALE * tid @ x)
        out_neg.append(SCALE * tneg @ x)
    return torch.stack(out_id), torch.stack(out_neg)


def test_batched_closed_form_equals_per_image_definition():
    model = _random_transform()
    v = _unit(7, D, seed=1)
    t = {"id": _unit(C, D, seed=2), "neg": _unit(M, D, seed=3)}
    ref_id, ref_neg = per_image_logits(model, v, t)
    (a_id, b_id), (a_ood, b_ood) = model(v)
    got_id = transformed_logits(v[:, None], a_id, b_id, t["id"], SCALE)[:, 0]
    got_neg = transformed_logits(v[:, None], a_ood, b_ood, t["neg"], SCALE)[:, 0]
    torch.testing.assert_close(got_id, ref_id, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_neg, ref_neg, atol=1e-5, rtol=0)
    ref_score = torch.softmax(torch.cat([ref_id, ref_neg], 1), 1)[:, :C].sum(1).double()
    from oodbench.detectors.neglabel import negative_label_score

    score = negative_label_score(got_id, got_neg, 1.0, 1, None)
    torch.testing.assert_close(score, ref_score, atol=1e-5, rtol=0)


def test_losses_equal_the_loop_definition():
    model = _random_transform(1)
    B, P, Q, G = 3, 4, 2, 3
    cond, pos, neg = _unit(B, D, seed=4), _unit(B, P, D, seed=5), _unit(B, Q, D, seed=6)
    y = torch.tensor([0, 3, 4])
    t = {"id": _unit(C, D, seed=2), "neg": _unit(M, D, seed=3)}
    perm = group_permutation(M, G, 0)
    got = krnft_losses(model, cond, pos, neg, y, t["id"], t["neg"], G, perm, SCALE)
    l_in, l_out, cos = [], [], []
    for b in range(B):
        (a_id, b_id), (a_ood, b_ood) = model(cond[b:b + 1])
        tid = F.normalize(a_id * t["id"] + b_id, dim=-1)
        tneg = F.normalize(a_ood * t["neg"] + b_ood, dim=-1)
        cos.append(torch.cat([(tid * t["id"]).sum(1), (tneg * t["neg"]).sum(1)]))
        for g in range(G):
            rows = tneg[perm[g * (M // G):(g + 1) * (M // G)]]
            for x in pos[b]:
                logits = SCALE * torch.cat([tid @ x, rows @ x])
                l_in.append(-torch.log_softmax(logits, 0)[y[b]])
            for x in neg[b]:
                logits = SCALE * torch.cat([tid @ x, rows @ x])
                l_out.append(torch.log(torch.softmax(logits, 0)[:C].sum().clamp_min(1e-12)))
    torch.testing.assert_close(got["in"], torch.stack(l_in).mean(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got["out"], torch.stack(l_out).mean(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got["kg"], 1 - torch.cat(cos).mean(), atol=1e-6, rtol=0)


def test_zero_init_is_the_identity():
    model = FeatureTransform(D, 8)
    v, t = _unit(4, D, seed=1), _unit(C, D, seed=2)
    (a, b), _ = model(v)
    torch.testing.assert_close(transformed_logits(v[:, None], a, b, t, SCALE)[:, 0],
                               SCALE * v @ t.T)


def test_mining_takes_the_least_similar_in_proportion():
    emb = {"The nice a.": [1.0, 0.0], "The nice b.": [0.9, 0.1]}
    words = {"n1": [1, 0], "n2": [0, 1], "n3": [0.7, 0.7], "n4": [-1, 0],
             "j1": [0, 1], "j2": [1, 0]}
    for w, e in words.items():
        emb[f"The nice {w}."] = e
        emb[f"This is a {w} photo."] = e

    def encode(prompts):
        return F.normalize(torch.tensor([emb[p] for p in prompts], dtype=torch.float32), dim=-1)

    neg = mine_least_similar(encode, ["a", "b"], ["n1", "n2", "n3", "n4", "a"], ["j1", "j2"], 3)
    # pools: 4 nouns ("a" dropped as an ID name), 2 adjectives -> int(3 * 2/6) = 1 adjective
    assert neg.prompts == ["This is a j1 photo.", "The nice n4.", "The nice n2."]
    assert (neg.n_adjectives, neg.n_nouns) == (1, 2)


def test_params_reject_bad_values():
    from oodbench.errors import ConfigError

    with pytest.raises(ConfigError, match="n_crops"):
        KRNFTParams.from_dict({"n_crops": 8, "n_pos_crops": 16})


@pytest.mark.slow
def test_trains_on_standin_records_split_and_reuses_artifact(standin_root, tmp_path):
    from oodbench.runner import RunSpec, run

    params = {"shots": 2, "n_crops": 6, "n_pos_crops": 2, "n_neg_crops": 2, "n_neg": 20,
              "corpus": "toy", "batch_size": 2, "lr": 1e-3, "epochs": 2.0}
    spec = dict(detectors=["krnft"], protocol="imagenet1k-mos4", backbone="tiny-random",
                data_root=str(standin_root), cache_dir=str(tmp_path / "c"), quiet=True,
                params={"krnft": params}, workers=0)
    (rec,) = run(RunSpec(**spec, results_dir=str(tmp_path / "r1")))
    assert rec.train["split"]["shots"] == 2 and rec.train["split"]["n"] == 6
    assert rec.train["loaded"] is False and rec.train["steps"] == 6
    saved = json.loads(open(rec.train["artifact"].replace("final.pt", "final.json")).read())
    assert saved["sha256"] == rec.train["sha256"]
    (again,) = run(RunSpec(**spec, results_dir=str(tmp_path / "r2"), seeds=[0]))
    assert again.metrics == rec.metrics

"""CMA: its loss, the contrastive trainer (schedule, resume, artifacts) and its score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oodbench.detectors.base import Context
from oodbench.detectors.cma import CMA
from oodbench.training.contrastive import (
    ContrastiveConfig,
    cma_loss,
    lr_at,
    param_groups,
    train_contrastive,
)


def unit(rng, n, d=8):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_cma(img, txt, s, lam):
    """L_CLIP + lam/(2B) sum_k (-log sum_j e^{s i_k.t_j} - log sum_j e^{s i_j.t_k}), by hand."""
    b = len(img)
    sim = s * img @ txt.T
    ce_img = np.mean([-sim[k, k] + np.log(np.exp(sim[k]).sum()) for k in range(b)])
    ce_txt = np.mean([-sim[k, k] + np.log(np.exp(sim[:, k]).sum()) for k in range(b)])
    reg = sum(-np.log(np.exp(sim[k]).sum()) - np.log(np.exp(sim[:, k]).sum()) for k in range(b))
    return 0.5 * (ce_img + ce_txt) + lam / (2 * b) * reg


@pytest.mark.parametrize("lam", [0.0, 0.001, 0.5])
def test_cma_loss_matches_the_formula(lam):
    rng = np.random.default_rng(0)
    img, txt = unit(rng, 6), unit(rng, 6)
    loss, parts = cma_loss(torch.tensor(img), torch.tensor(txt), 14.0, lam)
    assert float(loss) == pytest.approx(reference_cma(img, txt, 14.0, lam), abs=1e-6)
    assert parts["clip"] == pytest.approx(reference_cma(img, txt, 14.0, 0.0), abs=1e-6)


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_zero():
    cfg = ContrastiveConfig(steps=110, lr=1e-3, warmup_steps=10)
    assert lr_at(0, cfg) == 0.0 and lr_at(5, cfg) == pytest.approx(5e-4)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, cfg) == pytest.approx(0.0, abs=1e-12)


def test_clipn_decay_groups_skip_norms_biases_and_vectors():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    decay, no_decay = param_groups(m, ContrastiveConfig(steps=1, lr=1, decay="matrices"))
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 3])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


class Interrupt(RuntimeError):
    pass


def _toy_problem(fail_at: int | None):
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 4)
    data = torch.randn(64, 4)
    state = {"failed": False}

    def loss_fn(step, micro, gen):
        if fail_at is not None and step == fail_at and not state["failed"]:
            state["failed"] = True
            raise Interrupt
        idx = torch.randint(0, 64, (8,), generator=gen)
        img = torch.nn.functional.normalize(module(data[idx]), dim=-1)
        txt = torch.nn.functional.normalize(data[idx], dim=-1)
        return cma_loss(img, txt, 10.0, 0.001)

    return module, loss_fn


def test_an_interrupted_run_resumes_to_the_same_weights_and_is_then_loaded(tmp_path):
    cfg = ContrastiveConfig(steps=6, lr=1e-2, warmup_steps=2, grad_accum=2, checkpoint_every=2)
    ref_module, ref_loss = _toy_problem(None)
    train_contrastive(ref_module, ref_loss, cfg, name="t", spec={"x": 1},
                      artifact_dir=tmp_path / "a", device=torch.device("cpu"))
    module, loss_fn = _toy_problem(fail_at=3)
    with pytest.raises(Interrupt):
        train_contrastive(module, loss_fn, cfg, name="t", spec={"x": 1},
                          artifact_dir=tmp_path / "b", device=torch.device("cpu"))
    info = train_contrastive(module, loss_fn, cfg, name="t", spec={"x": 1},
                             artifact_dir=tmp_path / "b", device=torch.device("cpu"))
    assert info["resumed_from_step"] == 2 and not info["loaded"]
    torch.testing.assert_close(module.state_dict(), ref_module.state_dict())
    fresh, _ = _toy_problem(None)
    again = train_contrastive(fresh, loss_fn, cfg, name="t", spec={"x": 1},
                              artifact_dir=tmp_path / "b", device=torch.device("cpu"))
    assert again["loaded"] and again["sha256"] == info["sha256"]
    torch.testing.assert_close(fresh.state_dict(), ref_module.state_dict())


class _Protocol:
    name = "custom"
    classnames = ["c0", "c1", "c2"]


def test_cma_score_is_the_ungrouped_neglabel_formula_on_its_negatives(tmp_path):
    rng = np.random.default_rng(1)
    negs = ["The nice rock", "This is a blue photo", "The nice lamp", "The nice sand"]
    (tmp_path / "neg.txt").write_text("\n".join(negs))
    vocab = dict(zip([f"The nice {c}" for c in _Protocol.classnames] + negs,
                     unit(rng, 7, 16), strict=True))

    def encode(prompts):
        return torch.tensor(np.stack([vocab[p] for p in prompts]), dtype=torch.float32)

    ctx = Context(backbone=None, protocol=_Protocol(), seed=0, device=torch.device("cpu"),
                  encode_text=encode, split_features=None, artifact_dir=tmp_path)
    det = CMA({"finetune": False, "negatives_file": str(tmp_path / "neg.txt")})
    det.setup(ctx)
    v = unit(rng, 10, 16) * 0.3
    score, pred = det.score_and_predict({"global": torch.tensor(v, dtype=torch.float32)})
    t_id = np.stack([vocab[f"The nice {c}"] for c in _Protocol.classnames])
    t_neg = np.stack([vocab[n] for n in negs])
    e_id, e_neg = np.exp(v @ t_id.T / 0.01), np.exp(v @ t_neg.T / 0.01)
    ref = e_id.sum(1) / (e_id.sum(1) + e_neg.sum(1))
    np.testing.assert_allclose(score.numpy(), ref, rtol=0, atol=1e-5)
    assert pred.tolist() == (v @ t_id.T).argmax(1).tolist()


def test_runner_scores_images_encoded_by_the_fine_tuned_model(standin_root, tmp_path):
    from oodbench.runner import RunSpec, run

    spec = RunSpec(detectors=["cma"], protocol="imagenet1k-mos4", backbone="tiny-random",
                   data_root=str(standin_root), cache_dir=str(tmp_path / "c"),
                   results_dir=str(tmp_path / "r"), workers=0, quiet=True,
                   params={"cma": {"max_steps": 2, "batch_size": 4, "warmup_steps": 1,
                                   "lr": 1e-3}})
    (rec,) = run(spec)
    # the official recipe trains in fp32 (autocast commented out in utils/train_utils.py)
    assert rec.train["precision"] == "fp32" and rec.train["config"]["amp"] is False
    assert rec.train["global_batch"] == 4 and rec.train["world_size"] == 1
    tuned = rec.info["feature_backbone"]
    assert tuned["finetuned"] == "cma" and tuned["artifact_sha256"] == rec.train["sha256"]
    from oodbench.features.cache import Cache

    kinds = [e.spec["backbone"].get("finetuned") for e in Cache(tmp_path / "c").entries()
             if e.level == "images"]
    assert kinds.count("cma") == 5  # every test set re-encoded by the tuned model


def test_training_precision_is_fp32_unless_bf16_is_asked_for():
    from oodbench.detectors.cma import CMAParams
    from oodbench.errors import ConfigError

    assert CMAParams().train_precision == "fp32"
    assert CMAParams.from_dict({"train_precision": "bf16"}).train_precision == "bf16"
    with pytest.raises(ConfigError, match="train_precision"):
        CMAParams.from_dict({"train_precision": "fp16"})

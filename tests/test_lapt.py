"""LAPT: mixing draws, parameter checks, and a run on the stand-in data with text substitutes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from oodbench.detectors.lapt import LAPTParams, beta_draws, lapt_mix
from oodbench.errors import ConfigError


def test_beta_draws_are_seeded_and_have_the_beta_moments():
    x = beta_draws(1.0, 20000, torch.Generator().manual_seed(0))
    assert torch.equal(x, beta_draws(1.0, 20000, torch.Generator().manual_seed(0)))
    assert abs(float(x.mean()) - 0.5) < 0.01 and abs(float(x.var()) - 1 / 12) < 0.005
    y = beta_draws(0.5, 4000, torch.Generator().manual_seed(1))  # arcsine: variance 1/8
    assert abs(float(y.var()) - 0.125) < 0.01


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n_id, n_all, d = 3, 8, 6
    f = F.normalize(torch.randn(10, d, generator=g), dim=-1)
    y = torch.tensor([0, 1, 2, 0, 5, 6, 7, 3, 4, 1])  # 5 ID, 5 negative samples
    tip = F.normalize(torch.randn(n_all, 7, d, generator=g), dim=-1)
    return f, y, tip, n_id


def test_one_mixing_lambda_per_batch_and_partners_from_the_batch():
    f, y, tip, n_id = _batch()
    for seed in range(5):
        mix = lapt_mix(f, y, tip, n_id, 1.0, torch.Generator().manual_seed(seed))
        partner = mix["partner"]
        assert ((y[partner] < n_id) != (y < n_id)).all()  # ID <-> negative, within the batch
        # lam read back from each row's soft target: the same for the whole batch
        lam_rows = mix["target_cd"][torch.arange(len(y)), y]
        torch.testing.assert_close(lam_rows, lam_rows[:1].expand_as(lam_rows), atol=1e-6, rtol=0)
        lam = float(lam_rows[0])
        ref = F.normalize(lam * f + (1 - lam) * f[partner], dim=-1)
        torch.testing.assert_close(mix["z_cd"], ref, atol=1e-6, rtol=0)
        # cross-modal: z_cm - lam f is parallel to one of the row's 7 template features for
        # the single batch lam (up to the normalisation), for every row
        lam_cm = float(mix["lam_cm"])
        for i in range(len(y)):
            cands = F.normalize(lam_cm * f[i] + (1 - lam_cm) * tip[y[i]], dim=-1)
            assert (cands - mix["z_cm"][i]).abs().amax(dim=1).min() < 1e-6


def test_a_batch_of_one_kind_mixes_each_sample_with_itself():
    f, y, tip, n_id = _batch()
    only_id = y < n_id
    mix = lapt_mix(f[only_id], y[only_id], tip, n_id, 1.0, torch.Generator().manual_seed(0),
                   cross_modal=False)
    assert mix["partner"].tolist() == list(range(int(only_id.sum())))
    torch.testing.assert_close(mix["z_cd"], f[only_id], atol=1e-6, rtol=0)


def test_real_data_needs_a_pool():
    with pytest.raises(ConfigError, match="pool_list"):
        LAPTParams.from_dict({"data": "real"})


@pytest.mark.slow
def test_trains_with_text_substitutes_and_scores(standin_root, tmp_path):
    from oodbench.runner import RunSpec, run

    params = {"corpus": "toy", "n_neg_train": 12, "n_neg_test": 20, "test_groups": 2,
              "epochs": 1.0, "batch_size": 16, "max_steps": 3}
    (rec,) = run(RunSpec(detectors=["lapt"], protocol="imagenet1k-mos4", backbone="tiny-random",
                         data_root=str(standin_root), cache_dir=str(tmp_path / "c"), quiet=True,
                         results_dir=str(tmp_path / "r"), params={"lapt": params}, workers=0))
    # the protocol's label set is all 1000 ImageNet names (the stand-in has images for 3)
    assert rec.train["data"] == "text" and rec.train["n_samples"] == (1000 + 12) * 7
    assert rec.train["paper_data"] is False  # a row trained without the paper's images
    assert rec.train["steps"] == 3
    assert rec.info["negatives"]["n_test"] == 20

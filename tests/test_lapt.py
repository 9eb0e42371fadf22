"""LAPT: mixing draws, parameter checks, and a run on the stand-in data with text substitutes."""

from __future__ import annotations

import pytest
import torch

from oodbench.detectors.lapt import LAPTParams, beta_draws
from oodbench.errors import ConfigError


def test_beta_draws_are_seeded_and_have_the_beta_moments():
    x = beta_draws(1.0, 20000, torch.Generator().manual_seed(0))
    assert torch.equal(x, beta_draws(1.0, 20000, torch.Generator().manual_seed(0)))
    assert abs(float(x.mean()) - 0.5) < 0.01 and abs(float(x.var()) - 1 / 12) < 0.005
    y = beta_draws(0.5, 4000, torch.Generator().manual_seed(1))  # arcsine: variance 1/8
    assert abs(float(y.var()) - 0.125) < 0.01


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
    assert rec.train["steps"] == 3
    assert rec.info["negatives"]["n_test"] == 20

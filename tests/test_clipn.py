"""CLIPN: the "no" tower, checkpoint loading, the loss and the ATD / CTW scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oodbench.backbones.tiny import build_tiny_clip
from oodbench.detectors.clipn import (
    NoTextTower,
    clipn_scores,
    load_no_tower_weights,
    read_templates,
)
from oodbench.errors import BackboneError
from oodbench.training.contrastive import clipn_loss


def unit(rng, n, d=8):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_atd_and_ctw_match_the_official_formulas():
    rng = np.random.default_rng(0)
    u, wy, wn = unit(rng, 12) * 0.05, unit(rng, 5), unit(rng, 5)  # spread scores over (0, 1)
    out = clipn_scores(torch.tensor(u, dtype=torch.float32), torch.tensor(wy), torch.tensor(wn))
    ly, ln = 100 * u @ wy.T, 100 * u @ wn.T
    p_yes = np.exp(ly) / (np.exp(ly) + np.exp(ln))
    pi = np.exp(ly - ly.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    p_unknown = 1 - ((1 - (1 - p_yes)) * pi).sum(1)  # the paper's p_{K+1}, from p_no = 1 - p_yes
    atd = 1 - p_unknown
    ctw = p_yes[np.arange(12), ly.argmax(1)]
    np.testing.assert_allclose(out["atd"].numpy(), (p_yes * pi).sum(1), atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["atd"].numpy(), atd, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["ctw"].numpy(), ctw, atol=1e-5, rtol=0)
    assert out["pred"].tolist() == ly.argmax(1).tolist()


def test_clipn_loss_matches_the_formula():
    rng = np.random.default_rng(1)
    f, g, gn = unit(rng, 5), unit(rng, 5), unit(rng, 5)
    s = 20.0
    p = np.exp(s * f @ g.T) / (np.exp(s * f @ g.T) + np.exp(s * f @ gn.T))
    n = 5
    yes = -np.log(np.diag(p)).sum() / n
    no = -sum(np.log(1 - p[i, j]) for i in range(n) for j in range(n) if i != j) / (n * n - n)
    tso = np.mean(2 - np.sqrt(2 - 2 * (g * gn).sum(1) + 1e-4))
    loss, parts = clipn_loss(torch.tensor(f), torch.tensor(g), torch.tensor(gn), s)
    assert float(loss) == pytest.approx(0.5 * (yes + no + tso), abs=1e-6)
    assert parts["tso"] == pytest.approx(tso, abs=1e-6)


def test_the_no_tower_starts_as_a_copy_of_the_text_tower():
    clip = build_tiny_clip().eval()
    tower = NoTextTower(clip).eval()
    tokens = torch.randint(1, 400, (3, 24))
    tokens[:, -1] = 49407  # end-of-text token (argmax pooling)
    with torch.no_grad():
        torch.testing.assert_close(tower(tokens), clip.encode_text(tokens), atol=1e-5, rtol=0)
    assert tower.prompt_no.shape == (16, 24, 32) and not tower.prompt_no.any()
    assert {n for n, _ in tower.named_parameters()} == {k for k in tower.state_dict()}
    assert all("_no" in k for k in tower.state_dict())


def test_official_checkpoint_keys_load_after_stripping_module_and_missing_ones_fail(tmp_path):
    clip = build_tiny_clip()
    source = NoTextTower(clip)
    with torch.no_grad():
        source.prompt_no.normal_()
    sd = {"module." + k: v for k, v in source.state_dict().items()}
    sd["module.visual.proj"] = torch.zeros(2)  # the frozen towers are in the file too
    torch.save({"epoch": 10, "state_dict": sd}, tmp_path / "epoch_10.pt")
    target = NoTextTower(clip)
    load_no_tower_weights(target, tmp_path / "epoch_10.pt")
    torch.testing.assert_close(target.prompt_no, source.prompt_no)
    del sd["module.ln_final_no.weight"]
    torch.save({"epoch": 10, "state_dict": sd}, tmp_path / "broken.pt")
    with pytest.raises(BackboneError, match="ln_final_no.weight"):
        load_no_tower_weights(NoTextTower(clip), tmp_path / "broken.pt")


def test_the_128_official_templates_keep_quotes_and_commas():
    t = read_templates()
    assert len(t) == 128 and t[0] == "'a bad photo of a {}.'"
    assert t[34] == "'a photo of a {}.'," and t[98] == "'a photo with a {}.',"
    assert sum(x.endswith(",") for x in t) == 2 and all("\r" not in x for x in t)


def test_toy_training_records_its_global_batch_and_that_it_is_not_the_papers_data(tmp_path):
    from types import SimpleNamespace

    from oodbench.backbones import load_backbone
    from oodbench.detectors.clipn import CLIPN, PairSource, global_batch
    from oodbench.training.presets import toy_preset

    bb = load_backbone("toy")
    det = CLIPN({"max_steps": 1, "batch_size": 4})
    det.tower = NoTextTower(bb.model).float()
    ctx = SimpleNamespace(backbone=bb, protocol=SimpleNamespace(name="toy"), seed=0,
                          artifact_dir=tmp_path, quiet=True)
    info = det.train(ctx)
    assert info["steps"] == 1 and info["global_batch"] == 4 and info["world_size"] == 1
    assert info["paper_data"] is False and info["pairs"] == "toy"
    toy = PairSource("toy", "toy", bb)
    toy_batch = toy_preset("clipn")["toy_batch"]  # the toy preset's; 2048 on a pairs file
    assert global_batch(CLIPN({}).params, toy) == toy_batch != 2048


def test_a_global_batch_smaller_than_the_number_of_processes_is_refused(monkeypatch):
    from oodbench.backbones import load_backbone
    from oodbench.detectors.clipn import CLIPN, PairSource, global_batch
    from oodbench.errors import ConfigError
    from oodbench.features import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    toy = PairSource("toy", "toy", load_backbone("toy"))
    with pytest.raises(ConfigError, match=r"batch_size 2 is the global batch, split over 4"):
        global_batch(CLIPN({"batch_size": 2}).params, toy)
    assert global_batch(CLIPN({"batch_size": 4}).params, toy) == 4

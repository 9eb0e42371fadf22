"""Training views (issue 14): redrawn every epoch under ``official``, repeated exactly under
``views:K``, the same crop for the same slot in both modes, resumable after a kill; Dassl's
per-epoch schedule; KR-NFT's two official versions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oodbench.data.manifest import Manifest
from oodbench.detectors.krnft import FeatureTransform, KRNFTParams
from oodbench.errors import ConfigError
from oodbench.training.trainer import (
    Interrupted,
    TrainConfig,
    dassl_epoch_lr,
    epoch_batch,
    train_artifact,
)
from oodbench.training.views import Augment, CropRecipe, TrainingViews

N, BS, SIZE = 4, 2, 8


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Manifest:
    """Four 20 x 28 random RGB images (a crop of any of them is almost surely unique)."""
    root = tmp_path_factory.mktemp("views")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(root / f"{i}.png")
        paths.append(f"{i}.png")
    return Manifest("views", Path(root), tuple(paths), tuple(range(N)))


def encode(x: torch.Tensor) -> tuple[torch.Tensor]:
    """A stand-in image tower: the uint8 pixels as floats, flattened (exact in float32)."""
    return (x.flatten(1).float(),)


def make_views(manifest, augment: str, per_epoch: int = 1, artifact=None) -> TrainingViews:
    def plan(epoch):
        steps = math.ceil(N / BS)
        return [epoch_batch(N, BS, epoch * steps + j, seed=5) for j in range(steps)]

    return TrainingViews(manifest, CropRecipe(size=SIZE), Augment.parse(augment), per_epoch, 7,
                         encode, ("global",), torch.device("cpu"), plan, artifact=artifact,
                         workers=0)


def by_image(views: TrainingViews, epoch: int) -> torch.Tensor:
    """(N, per_epoch, F) features of every image in ``epoch``, in manifest order."""
    out = {}
    for b in range(math.ceil(N / BS)):
        idx, f = views.get(epoch, b)
        out.update({int(i): f["global"][j] for j, i in enumerate(idx)})
    return torch.stack([out[i] for i in range(N)])


def test_augment_parses_official_and_views_and_refuses_the_rest():
    assert str(Augment.parse("official")) == "official"
    assert Augment.parse("views:3") == Augment("views", 3)
    for bad in ("views:0", "views", "random", "views:-2"):
        with pytest.raises(ConfigError, match="official.*views:K"):
            Augment.parse(bad)
    with pytest.raises(ConfigError, match="views:16 or more"):
        Augment.parse("views:8").check(16)


def test_official_redraws_every_epoch_and_repeats_from_the_seed(manifest):
    views = make_views(manifest, "official")
    e0, e1 = by_image(views, 0), by_image(views, 1)
    assert not torch.equal(e0, e1)  # new crops in the next epoch
    assert torch.equal(by_image(make_views(manifest, "official"), 1), e1)  # same seed, same crops
    assert views.images_encoded == 2 * N


def test_views_k_cycles_exactly_and_shares_the_official_slots(manifest, tmp_path):
    views = make_views(manifest, "views:2", artifact=tmp_path / "v.npz")
    e0, e1, e2 = (by_image(views, e) for e in (0, 1, 2))
    assert torch.equal(e0, e2) and not torch.equal(e0, e1)
    assert views.images_encoded == 2 * N  # drawn and encoded once
    # slot s is the same crop in both modes
    assert torch.equal(e1, by_image(make_views(manifest, "official"), 1))
    again = make_views(manifest, "views:2", artifact=tmp_path / "v.npz")
    assert torch.equal(by_image(again, 1), e1) and again.images_encoded == 0  # the artifact


def test_several_views_per_epoch_take_consecutive_slots(manifest):
    two = by_image(make_views(manifest, "official", per_epoch=2), 1)  # slots 2, 3
    one = make_views(manifest, "official")
    assert torch.equal(two[:, 0], by_image(one, 2)[:, 0])
    assert torch.equal(two[:, 1], by_image(one, 3)[:, 0])


def test_dassl_schedule_is_a_warmup_epoch_then_cosine_over_all_epochs():
    lr, epochs = 0.002, 30
    assert dassl_epoch_lr(0, lr, epochs, 1, 1e-5) == 1e-5
    assert dassl_epoch_lr(1, lr, epochs, 1, 1e-5) == lr
    assert dassl_epoch_lr(29, lr, epochs, 1, 1e-5) == pytest.approx(
        0.5 * lr * (1 + math.cos(math.pi * 28 / 30)), rel=1e-12)


def _problem(manifest, kill_at=None):
    """A linear probe trained on official views."""
    torch.manual_seed(0)
    module = torch.nn.Linear(3 * SIZE * SIZE, 1)
    views = make_views(manifest, "official")

    def loss_fn(step, gen):
        if step == kill_at:
            raise Interrupted("killed")
        _, f = views.get(*divmod(step, 2))
        return (module(f["global"][:, 0] / 255.0) ** 2).mean()

    return module, loss_fn, views


def test_a_killed_run_on_official_views_resumes_to_the_same_weights(manifest, tmp_path):
    # the lr steps per epoch (2 steps), as Dassl's
    cfg = TrainConfig(steps=8, lr=0.01, optimizer="sgd", schedule="epoch-cosine", epoch_steps=2,
                      epochs=4, warmup_steps=2, checkpoint_every=3, seed=1)

    def run(where, kill_at=None):
        module, loss_fn, _ = _problem(manifest, kill_at)
        info = train_artifact(module, loss_fn, cfg, name="v", spec={}, artifact_dir=where,
                              device=torch.device("cpu"))
        return module, info

    ref, _ = run(tmp_path / "a")
    with pytest.raises(Interrupted):
        run(tmp_path / "b", kill_at=5)  # mid-epoch 2, after the checkpoint of step 3
    again, info = run(tmp_path / "b")
    assert info["resumed_from_step"] == 3
    for p, q in zip(ref.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_epoch_cosine_sets_the_rate_the_optimizer_steps_with(manifest, tmp_path):
    module = torch.nn.Linear(2, 1)
    seen = []

    def loss_fn(step, gen):
        return module(torch.ones(1, 2)).sum()

    orig = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    torch.optim.SGD.step = spy
    try:
        # 2 steps per epoch: a warm-up epoch at 0.5, then cosine over T_max = 3 epochs
        cfg = TrainConfig(steps=6, lr=1.0, optimizer="sgd", schedule="epoch-cosine",
                          epoch_steps=2, epochs=3, warmup_steps=2, warmup_lr=0.5)
        train_artifact(module, loss_fn, cfg, name="lr", spec={}, artifact_dir=tmp_path,
                       device=torch.device("cpu"))
    finally:
        torch.optim.SGD.step = orig
    third = 0.5 * (1 + math.cos(math.pi / 3))  # epoch 2: one epoch into the cosine
    assert seen == pytest.approx([0.5, 0.5, 1.0, 1.0, third, third], rel=1e-12)


def _n_params(hidden: int, dim: int = 512) -> int:
    return sum(p.numel() for p in FeatureTransform(dim, hidden).parameters())


@pytest.mark.parametrize("variant, shape", [
    # 86cdbbd: meta_dim 64 -> int(512 / 64) = 8 -> Linear(512, 512 // 8 = 64); randcrop n_crop
    # 128; OOD_NUM 10500; lam_kd 10; AdamW(lr) with torch's weight decay 0.01; len(loader) / 10
    ("original", dict(hidden=64, n_crops=128, n_neg=10500, lambda_kd=10.0, weight_decay=0.01,
                      steps_per_epoch_fraction=0.1, params=266_496)),
    # bd00b6c krnft_modules.py: hidden = 512 // meta_dim = 8; README: 256 crops, 10,000
    # negatives, lambda 100; weight decay 5e-4; full epochs
    ("refactor", dict(hidden=8, n_crops=256, n_neg=10000, lambda_kd=100.0, weight_decay=5e-4,
                      steps_per_epoch_fraction=1.0, params=36_896)),
])
def test_krnft_variants_reproduce_their_versions_shapes(variant, shape):
    p = KRNFTParams.from_dict({"variant": variant}).resolved(512)
    for k, v in shape.items():
        if k != "params":
            assert getattr(p, k) == v, k
    assert _n_params(p.hidden) == shape["params"]  # methods doc: ~0.27 M / ~37 K


def test_krnft_a_field_set_by_hand_wins_over_the_variant():
    p = KRNFTParams.from_dict({"variant": "original", "hidden": 32, "n_crops": 64}).resolved(512)
    assert (p.hidden, p.n_crops, p.n_neg) == (32, 64, 10500)
    assert KRNFTParams().resolved(128).hidden == 2  # the refactor's rule on the toy CLIP's width
    with pytest.raises(ConfigError, match="augment"):
        KRNFTParams.from_dict({"augment": "views:x"})


@pytest.mark.slow
def test_a_sigkilled_krnft_run_on_official_views_resumes_to_the_clean_weights(standin_root,
                                                                              tmp_path):
    """A real `oodbench run` of KR-NFT with crops redrawn every epoch, SIGKILLed in the middle of
    writing its second checkpoint (step 20 of 24; the one of step 10 is complete), resumes from
    step 10, mid-epoch, and ends with the weights and numbers of an uninterrupted run."""
    import json

    from test_reliability_interrupt import kill_in_write

    from oodbench.cli import main

    params = ["shots=2", "n_crops=4", "n_pos_crops=2", "n_neg_crops=2", "n_neg=20", "corpus=toy",
              "batch_size=1", "lr=0.001", "epochs=4.0", "augment=official"]

    def args(name):
        return ["run", "--detector", "krnft", "--protocol", "imagenet1k-mos4", "--backbone",
                "tiny-random", "--workers", "0", "--quiet", "--data-root", str(standin_root),
                "--cache-dir", str(tmp_path / f"{name}-cache"),
                "--results-dir", str(tmp_path / f"{name}-results"),
                *[a for p in params for a in ("--param", f"krnft.{p}")]]

    def rec(name):
        (path,) = (tmp_path / f"{name}-results").glob("runs/imagenet1k-mos4/*/krnft*/seed0.json")
        return json.loads(path.read_text())

    assert main(args("clean")) == 0
    stalled = kill_in_write(args("killed"), tmp_path, match="checkpoint.pt", skip=1)
    assert stalled.name == "checkpoint.pt"
    assert main(args("killed")) == 0
    clean, again = rec("clean")["train"], rec("killed")["train"]
    assert clean["steps"] == 24 and clean["augment"] == "official"
    assert again["resumed_from_step"] == 10 and again["sha256"] == clean["sha256"]
    assert rec("killed")["metrics"] == rec("clean")["metrics"]

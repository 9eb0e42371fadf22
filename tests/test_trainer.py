"""The shared trainer: schedule, artifacts, val-only selection, and resume after a kill."""

from __future__ import annotations

import math

import pytest
import torch

from oodbench.training.trainer import (
    Interrupted,
    TrainConfig,
    epoch_batch,
    lr_at,
    train_artifact,
)

X = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
Y = X @ torch.arange(1.0, 6.0)


def make_problem(kill_at: int | None = None):
    """Linear regression; each step draws its batch and noise from the step generator."""
    torch.manual_seed(123)
    module = torch.nn.Linear(5, 1)

    def loss_fn(step, gen):
        if step == kill_at:
            raise Interrupted("killed")
        idx = epoch_batch(len(X), 8, step, seed=0)
        noise = 0.01 * torch.randn(len(idx), generator=gen)
        return ((module(X[idx]).squeeze(1) - Y[idx] - noise) ** 2).mean()

    return module, loss_fn


CFG = TrainConfig(steps=30, lr=0.05, optimizer="sgd", checkpoint_every=7, seed=3)


def test_cosine_schedule_per_step():
    cfg = TrainConfig(steps=10, lr=1.0, warmup_steps=2, warmup_lr=0.1)
    assert lr_at(0, cfg) == lr_at(1, cfg) == 0.1
    assert lr_at(2, cfg) == 1.0
    assert lr_at(7, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 8)))


def test_epoch_batches_cover_every_item_once_per_epoch():
    seen = torch.cat([epoch_batch(10, 4, s, seed=1) for s in range(3)])
    assert sorted(seen.tolist()) == list(range(10))
    assert not torch.equal(epoch_batch(10, 4, 0, seed=1), epoch_batch(10, 4, 3, seed=1))


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    ref, loss_ref = make_problem()
    info = train_artifact(ref, loss_ref, CFG, name="lin", spec={"a": 1},
                          artifact_dir=tmp_path / "a", device=torch.device("cpu"))
    assert info["loaded"] is False and info["loss_first_last"][1] < info["loss_first_last"][0]

    killed, loss_killed = make_problem(kill_at=17)
    with pytest.raises(Interrupted):
        train_artifact(killed, loss_killed, CFG, name="lin", spec={"a": 1},
                       artifact_dir=tmp_path / "b", device=torch.device("cpu"))
    again, loss_again = make_problem()
    info2 = train_artifact(again, loss_again, CFG, name="lin", spec={"a": 1},
                           artifact_dir=tmp_path / "b", device=torch.device("cpu"))
    assert info2["resumed_from_step"] == 14
    for p, q in zip(ref.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=0, rtol=0)

    fresh, _ = make_problem()
    info3 = train_artifact(fresh, loss_again, CFG, name="lin", spec={"a": 1},
                           artifact_dir=tmp_path / "b", device=torch.device("cpu"))
    assert info3["loaded"] is True and info3["sha256"] == info2["sha256"]
    assert torch.equal(fresh.weight, again.weight)


def test_selection_uses_val_fn_and_keeps_the_best_state(tmp_path):
    module, loss_fn = make_problem()
    calls = []

    def val_fn():  # pretend validation is best at step 10
        step = 10 * (len(calls) + 1)
        calls.append(step)
        return -abs(step - 10)

    cfg = TrainConfig(steps=30, lr=0.05, optimizer="sgd", eval_every=10, seed=3,
                      schedule="constant")
    info = train_artifact(module, loss_fn, cfg, name="lin", spec={}, artifact_dir=tmp_path,
                          device=torch.device("cpu"), val_fn=val_fn)
    assert calls == [10, 20, 30] and info["best"] == {"step": 10, "val": 0.0}
    short, loss_short = make_problem()
    train_artifact(short, loss_short, TrainConfig(steps=10, lr=0.05, optimizer="sgd", seed=3,
                                                      schedule="constant"),
                   name="lin", spec={}, artifact_dir=tmp_path / "s", device=torch.device("cpu"))
    torch.testing.assert_close(module.weight, short.weight)

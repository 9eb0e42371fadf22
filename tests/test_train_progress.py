"""Training progress: epoch, step, loss, lr, images/s, ETA; plain lines off a terminal."""

from __future__ import annotations

import re

import torch

from oodbench.training.trainer import TrainConfig, TrainProgress, epoch_batch, train_artifact

LINE = re.compile(r"^train lin: epoch (\d+)/(\d+)  step (\d+)/(\d+)  loss [0-9.]+  "
                  r"lr [0-9.e+-]+  [0-9.]+ img/s  ETA \d+:\d\d:\d\d$")


def test_plain_lines_carry_every_field_and_the_last_step_always_prints():
    with TrainProgress("train lin", 10, quiet=False, steps_per_epoch=4, images_per_step=8,
                       every_s=3600, terminal=False) as shown:
        for done in range(1, 11):
            shown.update(done, 0.5, 1e-3)
    assert len(shown.lines) == 1  # nothing before the interval, the end always
    assert LINE.match(shown.lines[0]), shown.lines[0]
    assert shown.lines[0].startswith("train lin: epoch 3/3  step 10/10")


def test_lines_every_interval_and_none_when_quiet():
    with TrainProgress("t", 5, quiet=False, every_s=0, terminal=False) as shown:
        for done in range(1, 6):
            shown.update(done, 1.0, 0.1)
    assert [ln.split("  ")[0] for ln in shown.lines] == ["t: step 1/5", "t: step 2/5",
                                                         "t: step 3/5", "t: step 4/5",
                                                         "t: step 5/5"]
    assert all("steps/s" in ln for ln in shown.lines)  # no images_per_step: a step rate
    with TrainProgress("t", 5, quiet=True, every_s=0, terminal=False) as silent:
        silent.update(5, 1.0, 0.1)
    assert silent.lines == []


def test_a_training_run_off_a_terminal_prints_plain_lines(tmp_path, capsys):
    module = torch.nn.Linear(3, 1)
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))

    def loss_fn(step, gen):
        idx = epoch_batch(12, 4, step, seed=0)
        return (module(x[idx]) ** 2).mean()

    train_artifact(module, loss_fn, TrainConfig(steps=6, lr=0.1), name="lin", spec={},
                   artifact_dir=tmp_path, device=torch.device("cpu"), quiet=False,
                   steps_per_epoch=3, images_per_step=4)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("train lin:")]
    assert lines and LINE.match(lines[-1]), err
    assert "\x1b" not in err  # no control characters in a log


def test_on_a_terminal_the_fields_go_to_the_bar_not_to_lines():
    with TrainProgress("t", 3, quiet=False, steps_per_epoch=1, images_per_step=2,
                       terminal=True) as shown:
        for done in range(1, 4):
            shown.update(done, 1.0, 0.1)
        assert shown.bar.tasks[0].completed == 3
        assert shown.bar.tasks[0].fields["extra"].startswith("epoch 3/3  step 3/3  loss 1.0000")
    assert shown.lines == []

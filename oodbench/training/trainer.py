"""The shared few-shot trainer: a step loop with checkpoints, resume, and hashed artifacts.

A trainable detector hands :func:`train_artifact` the module holding its learnable parameters, a
``loss_fn(step, generator) -> loss`` and a :class:`TrainConfig`. The trainer

- keys the run by everything that changes the result (detector spec, split, backbone, config) and
  stores it under ``<artifacts>/train/<detector>/<key>/``; a finished run is loaded, not retrained;
- draws all randomness of step ``k`` from a generator seeded by (seed, k), so a run killed midway
  resumes from its last checkpoint to the same final weights;
- sets the learning rate per step (cosine by default, optional constant warm-up);
- runs under autocast (bf16) on CUDA with fp32 master weights, plain fp32 on CPU;
- selects the model only with ``val_fn`` (the protocol's val split), never a test set;
- shows its progress (:class:`TrainProgress`): epoch, step, running loss, lr, images/s and ETA, as a
  rich bar on a terminal and as plain lines every ``PLAIN_EVERY_S`` seconds (and at the end) when
  the output goes to a file or pipe, where a bar would only write control characters.

The returned dict goes into ``ctx.info["train"]`` and from there into the result record.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import torch

from oodbench.features.cache import spec_key
from oodbench.io import atomic_write
from oodbench.progress import console
from oodbench.training.artifact import artifact_paths, load_artifact, save_artifact

TRAINER_VERSION = "1"
LossFn = Callable[[int, torch.Generator], torch.Tensor]


@dataclass
class TrainConfig:
    """Optimiser, schedule and checkpointing of one training run."""

    steps: int
    lr: float
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    schedule: Literal["cosine", "constant", "epoch-cosine"] = "cosine"
    min_lr: float = 0.0
    warmup_steps: int = 0
    warmup_lr: float = 1e-5
    epoch_steps: int = 0  # steps per epoch, for "epoch-cosine"
    epochs: int = 0  # cosine period in epochs (T_max), for "epoch-cosine"
    grad_clip: float | None = None
    seed: int = 0
    amp: bool = True
    checkpoint_every: int = 50
    eval_every: int = 0
    max_steps: int | None = None

    @property
    def total(self) -> int:
        """Steps actually run (``max_steps`` caps ``steps`` for smoke runs)."""
        return self.steps if self.max_steps is None else min(self.steps, self.max_steps)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of step ``step`` (0-based): constant warm-up, then cosine to ``min_lr``;
    ``epoch-cosine`` steps it once per epoch, as Dassl's trainers do (:func:`dassl_epoch_lr`)."""
    if cfg.schedule == "epoch-cosine":
        return dassl_epoch_lr(step // cfg.epoch_steps, cfg.lr, cfg.epochs,
                              cfg.warmup_steps // cfg.epoch_steps, cfg.warmup_lr)
    if step < cfg.warmup_steps:
        return cfg.warmup_lr
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.total - cfg.warmup_steps)
    t = (step - cfg.warmup_steps) / span
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def dassl_epoch_lr(epoch: int, lr: float, epochs: int, warmup_epochs: int,
                   warmup_lr: float) -> float:
    """The learning rate of ``epoch`` (0-based) under Dassl's ``cosine`` scheduler with a
    constant warm-up (``WARMUP_RECOUNT`` True), stepped once per epoch as its trainers do.

    Epochs ``< warmup_epochs`` run at ``warmup_lr``; then ``CosineAnnealingLR(T_max=epochs)``
    restarts from its first value: epoch e runs at lr * (1 + cos(pi * (e - warmup) / epochs)) / 2.
    """
    if epoch < warmup_epochs:
        return warmup_lr
    return 0.5 * lr * (1 + math.cos(math.pi * (epoch - warmup_epochs) / epochs))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator every random draw of step ``step`` uses (resume-safe)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 17) % (2**63))


def epoch_batch(n: int, batch_size: int, step: int, seed: int,
                drop_last: bool = False) -> torch.Tensor:
    """Indices of the batch of step ``step`` when ``n`` items are shuffled afresh every epoch."""
    per_epoch = n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)
    epoch, i = divmod(step, max(1, per_epoch))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))
    return perm[i * batch_size:(i + 1) * batch_size]


def steps_for_epochs(n: int, batch_size: int, epochs: float, drop_last: bool = False) -> int:
    """Number of steps of ``epochs`` passes over ``n`` items."""
    per_epoch = n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)
    return max(1, int(round(epochs * max(1, per_epoch))))


PLAIN_EVERY_S = 30.0


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(max(0.0, seconds))))


class TrainProgress:
    """What a training run shows while it runs: epoch, step, running loss, lr, images/s and ETA.

    On a terminal (stderr is a tty) a rich bar carries these fields; otherwise (a log file, a pipe,
    a batch job) :meth:`update` prints one plain line every ``every_s`` seconds and at the last
    step, so a long run leaves a readable trace instead of control characters. Rates and the ETA
    count only the steps of this process (a resumed run does not credit the steps it loaded).
    ``steps_per_epoch`` and ``images_per_step`` are optional: without them the line shows no epoch
    and steps/s instead of images/s. Nothing is shown when ``quiet``.
    """

    def __init__(self, desc: str, total: int, start: int = 0, *, quiet: bool = False,
                 steps_per_epoch: int | None = None, images_per_step: int | None = None,
                 every_s: float = PLAIN_EVERY_S, terminal: bool | None = None):
        self.desc, self.total, self.start, self.quiet = desc, total, start, quiet
        self.steps_per_epoch, self.images_per_step = steps_per_epoch, images_per_step
        self.every_s = every_s
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.lines: list[str] = []  # the plain lines printed (kept for tests)
        self._bar_cm = None

    def __enter__(self) -> TrainProgress:
        self.t0 = self._last = time.perf_counter()
        if not self.quiet and self.terminal:
            from rich.progress import BarColumn, Progress, TextColumn

            # a compact bar: the text already carries step, rate and ETA
            self._bar_cm = Progress(TextColumn("[bold]{task.description}"),
                                    BarColumn(bar_width=20), TextColumn("{task.fields[extra]}"),
                                    console=console, transient=False)
            self.bar = self._bar_cm.__enter__()
            self.task = self.bar.add_task(self.desc, total=self.total, completed=self.start,
                                          extra="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar_cm is not None:
            self._bar_cm.__exit__(*exc)

    def fields(self, done: int, loss: float, lr: float) -> str:
        """The status text after ``done`` steps (epoch, step, loss, lr, rate, ETA)."""
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        rate = (done - self.start) / elapsed  # steps per second in this process
        parts = []
        if self.steps_per_epoch:
            epochs = -(-self.total // self.steps_per_epoch)
            parts.append(f"epoch {min(epochs, done // self.steps_per_epoch + 1)}/{epochs}")
        parts += [f"step {done}/{self.total}", f"loss {loss:.4f}", f"lr {lr:.2e}"]
        parts.append(f"{rate * self.images_per_step:.1f} img/s" if self.images_per_step
                     else f"{rate:.2f} steps/s")
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        parts.append(f"ETA {_clock(eta)}" if math.isfinite(eta) else "ETA ?")
        return "  ".join(parts)

    def update(self, done: int, loss: float, lr: float) -> None:
        """Report that ``done`` steps are finished (bar on a terminal, plain lines otherwise)."""
        if self.quiet:
            return
        text = self.fields(done, loss, lr)
        if self.terminal:
            self.bar.update(self.task, completed=done, extra=text)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s or done == self.total:
            self._last = now
            line = f"{self.desc}: {text}"
            self.lines.append(line)
            console.print(line, highlight=False, markup=False, soft_wrap=True)


class Interrupted(RuntimeError):
    """Raised by a test hook to simulate a run killed midway (no graceful save)."""


class Trainer:
    """Runs ``cfg.total`` optimiser steps on ``module``'s trainable parameters, resumably."""

    def __init__(self, module: torch.nn.Module, loss_fn: LossFn, cfg: TrainConfig, run_dir: Path,
                 device: torch.device, desc: str = "train", quiet: bool = True,
                 val_fn: Callable[[], float] | None = None, steps_per_epoch: int | None = None,
                 images_per_step: int | None = None):
        self.module, self.loss_fn, self.cfg, self.run_dir = module, loss_fn, cfg, Path(run_dir)
        self.steps_per_epoch, self.images_per_step = steps_per_epoch, images_per_step
        self.device, self.desc, self.quiet, self.val_fn = torch.device(device), desc, quiet, val_fn
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.optim = self._optimizer()
        self.best: dict = {"step": None, "val": None}
        self.best_state: dict | None = None
        self.losses: list[float] = []

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        if c.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=c.lr, momentum=c.momentum,
                                   nesterov=c.nesterov, weight_decay=c.weight_decay)
        return torch.optim.AdamW(self.params, lr=c.lr, weight_decay=c.weight_decay)

    @property
    def checkpoint_path(self) -> Path:
        """The last checkpoint of an unfinished run."""
        return self.run_dir / "checkpoint.pt"

    def _save_checkpoint(self, step: int) -> None:
        state = {"step": step, "model": self.module.state_dict(), "optim": self.optim.state_dict(),
                 "best": self.best, "best_state": self.best_state, "losses": self.losses}
        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    def _load_checkpoint(self) -> int:
        if not self.checkpoint_path.is_file():
            return 0
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optim"])
        self.best, self.best_state = state["best"], state["best_state"]
        self.losses = list(state["losses"])
        return int(state["step"])

    def _autocast(self):
        on = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=on)

    def _validate(self, step: int) -> None:
        if self.val_fn is None:
            return
        self.module.eval()
        with torch.no_grad(), self._autocast():
            v = float(self.val_fn())
        self.module.train()
        if self.best["val"] is None or v > self.best["val"]:
            self.best = {"step": step, "val": v}
            self.best_state = {k: t.detach().clone() for k, t in self.module.state_dict().items()}

    def fit(self) -> dict:
        """Train (resuming from the last checkpoint if any); returns what happened."""
        cfg = self.cfg
        start = self._load_checkpoint()
        t0 = time.perf_counter()
        self.module.train()
        with TrainProgress(self.desc, cfg.total, start, quiet=self.quiet,
                           steps_per_epoch=self.steps_per_epoch,
                           images_per_step=self.images_per_step) as shown:
            for step in range(start, cfg.total):
                lr = lr_at(step, cfg)
                for g in self.optim.param_groups:
                    g["lr"] = lr
                with self._autocast():
                    loss = self.loss_fn(step, step_generator(cfg.seed, step))
                self.optim.zero_grad(set_to_none=True)
                loss.float().backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                self.optim.step()
                self.losses.append(float(loss.detach()))
                done = step + 1
                if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.total:
                    self._validate(done)
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.total:
                    self._save_checkpoint(done)
                recent = self.losses[-20:]
                shown.update(done, sum(recent) / len(recent), lr)
        self._validate(cfg.total)
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)
        self.module.eval()
        return {"steps": cfg.total, "resumed_from_step": start, "seconds": time.perf_counter() - t0,
                "selected": ("val" if self.val_fn else "last"), "best": self.best,
                "final_loss": self.losses[-1] if self.losses else None,
                "loss_first_last": [self.losses[0], self.losses[-1]] if self.losses else None}


def artifact_key(name: str, spec: dict, cfg: TrainConfig) -> str:
    """The hash naming one training run's artifact."""
    return spec_key({"detector": name, "spec": spec, "train": dataclasses.asdict(cfg),
                     "trainer": TRAINER_VERSION})


def train_artifact(module: torch.nn.Module, loss_fn: LossFn, cfg: TrainConfig, *, name: str,
                   spec: dict, artifact_dir: Path, device: torch.device, quiet: bool = True,
                   val_fn: Callable[[], float] | None = None, steps_per_epoch: int | None = None,
                   images_per_step: int | None = None) -> dict:
    """Train ``module`` (or load the finished artifact of an identical run); returns the train info.

    The final weights are ``<artifact_dir>/train/<name>/<key>/final.pt`` with a ``final.json``
    sidecar holding their sha256 and the key's spec; one whose sum does not match is retrained.
    ``steps_per_epoch`` and ``images_per_step`` only feed the progress display (not the key).
    """
    key = artifact_key(name, spec, cfg)
    run_dir = Path(artifact_dir) / "train" / name / key
    info = {"artifact": str(artifact_paths(run_dir)[0]), "key": key,
            "config": dataclasses.asdict(cfg)}
    found = load_artifact(run_dir, device)
    if found is not None:
        state, meta = found
        module.load_state_dict(state)
        module.eval()
        return {**info, **meta["result"], "sha256": meta["sha256"], "loaded": True}
    trainer = Trainer(module, loss_fn, cfg, run_dir, device, desc=f"train {name}", quiet=quiet,
                      val_fn=val_fn, steps_per_epoch=steps_per_epoch,
                      images_per_step=images_per_step)
    result = trainer.fit()
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    sha = save_artifact(run_dir, state, {"key": key, "spec": spec, "result": result,
                                         "config": dataclasses.asdict(cfg)})
    trainer.checkpoint_path.unlink(missing_ok=True)
    return {**info, **result, "sha256": sha, "loaded": False}

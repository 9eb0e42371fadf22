"""Contrastive fine-tuning of image-text models: the CMA and CLIPN objectives and their trainer.

Losses (features L2-normalised, s the logit scale):

- :func:`cma_loss` (CMA, Kim & Hwang, CVPR 2025): FLYP's symmetric CLIP loss on the B x B logits
  plus lambda times the mean negative log-sum-exp of every row of both logit matrices,
  ``1/2 (CE_img + lam * mean_k -lse_k(L_img)) + 1/2 (CE_txt + lam * mean_k -lse_k(L_txt))``.
  lambda = 0 is FLYP.
- :func:`clipn_loss` (CLIPN, Wang et al., ICCV 2023): per image-text pair the "yes" probability
  p_ij = sigmoid(s f_i.g_j - s f_i.g~_j); matched pairs should say yes, all others no; plus the
  text semantic-opposite term 2 - sqrt(2 - 2 g_j.g~_j + 1e-4); total = 1/2 (yes + no + tso).
  Written for one device too (the official loss only defines the "no" logits when world_size > 1).

**Global batches under torchrun.** The batch size of a run is the *global* batch: the images one
contrastive loss sees, whatever the number of processes. Under ``torchrun`` rank r takes the
contiguous share :func:`shard_slice` of every global batch (the permutation is seeded with the seed,
never the rank, and every per-image random draw is made for the whole global batch, then sliced),
and both losses first all-gather the features of every rank (:func:`gather_features`: the other
ranks' rows as constants, this rank's rows carrying their gradient, as open_clip's
``gather_features(local_loss=False, gather_with_grad=False)`` that CLIPN's ``run.sh`` uses). Every
rank so computes the same loss of the whole global batch. Its backward pass reaches the encoders
through its own rows only, while a parameter used by the loss itself (CMA's trained logit scale)
gets its whole gradient on every rank; so the local rows pass their gradient on multiplied by the
number of ranks W (which is what an autograd all-gather would return: the sum over the W identical
losses), and the trainer *averages* the gradients over the ranks (:meth:`ContrastiveTrainer.
_reduce_grads`). The result is exactly the gradient of the global-batch loss for every
parameter: one process with ``batch_size=2048`` and four with 512 rows each compute the same loss
and the same update (up to float32 rounding). CMA's official ``DataParallel`` computes exactly
this gradient; CLIPN's DDP with ``gather_with_grad=False`` gets 1/W of it for the "no" tower -- a
scale AdamW's update ignores but for its ``eps`` (1e-6).

:func:`train_contrastive` runs the optimiser loop shared by both: AdamW, linear warm-up then cosine
decay per step (``CosineAnnealingWarmupRestarts`` with one cycle, as CMA uses), gradient
accumulation (several global batches per optimiser step), bf16 autocast on CUDA when
``cfg.amp`` (fp32 master weights; plain fp32 otherwise), all randomness of step k drawn from a
generator seeded by (seed, k) and the same on every rank, a checkpoint every ``checkpoint_every``
steps from which a killed run resumes, progress lines (:class:`oodbench.training.trainer.
TrainProgress`), and a final artifact ``<artifacts>/train/<name>/<key>/final.pt`` with a sha256
sidecar; an identical later run loads it, whatever the number of processes that trained it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.features import distributed
from oodbench.features.cache import spec_key
from oodbench.io import atomic_write
from oodbench.training.artifact import artifact_paths, load_artifact, save_artifact
from oodbench.training.trainer import TrainProgress

CONTRASTIVE_VERSION = "2"  # 2: global batches sharded over ranks, gathered loss, summed gradients
# loss_fn(step, micro_step, generator) -> (loss, {part: value})
LossFn = Callable[[int, int, torch.Generator], tuple[torch.Tensor, dict]]


def shard_slice(n: int, rank: int | None = None, world: int | None = None) -> slice:
    """This rank's contiguous share of a global batch of ``n`` rows.

    Rank r of W takes rows ``[r n // W, (r + 1) n // W)``: the shares tile the batch in order, so
    the gathered features are the global batch in its own order, and a last, short batch of an
    epoch is split as evenly as it can be.
    """
    r = distributed.rank() if rank is None else rank
    w = distributed.world_size() if world is None else world
    return slice(r * n // w, (r + 1) * n // w)


class _TimesWorld(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by the number of ranks."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, world: int) -> torch.Tensor:
        ctx.world = world
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.world, None


def gather_features(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's rows of each (n_r, D) tensor, concatenated in rank order.

    The other ranks' rows are constants, this rank's rows are the given tensors themselves, so the
    gradient of a loss on the gathered features flows into this rank's share only (open_clip's
    ``gather_features`` with ``local_loss=False, gather_with_grad=False``), multiplied by the
    number of ranks W: every rank computes the same loss, so this is the gradient an autograd
    all-gather would sum over the W copies, without its communication; the trainer's average over
    the ranks then gives the global-batch gradient (module docstring). Ranks may hold
    different numbers of rows (the last batch of an epoch): rows are padded to the largest share
    for the collective and trimmed after. A world of one returns the tensors unchanged.
    """
    if not distributed.active():
        return tensors
    world, me = distributed.world_size(), distributed.rank()
    n = torch.tensor([len(tensors[0])], dtype=torch.long, device=tensors[0].device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    torch.distributed.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    most = max(sizes)
    out = []
    for t in tensors:
        if len(t) != sizes[me]:
            raise ValueError("gather_features: all tensors must have this rank's number of rows")
        padded = t.detach()
        if len(t) < most:
            padded = torch.cat([padded, padded.new_zeros((most - len(t), *t.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in range(world)]
        torch.distributed.all_gather(parts, padded.contiguous())
        rows = [p[:k] for p, k in zip(parts, sizes, strict=True)]
        rows[me] = _TimesWorld.apply(t, world) if t.requires_grad else t
        out.append(torch.cat(rows))
    return tuple(out)


def encode_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)``, also for a share of zero rows (a rank's share of a last batch shorter than the
    number of ranks): encoders reject an empty batch, so one zero row is encoded and dropped,
    which keeps the parameters in the graph (zero gradients) and the rank in the gathering."""
    if len(x):
        return fn(x)
    return fn(x.new_zeros((1, *x.shape[1:])))[:0]


def cma_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float,
             lam: float) -> tuple[torch.Tensor, dict]:
    """CMA objective on (B, D) normalised image and text features of matched pairs.

    Under torchrun the rows are this rank's share of the global batch; the loss is that of the
    gathered global batch (see :func:`gather_features`).
    """
    image, text = gather_features(image, text)
    logits_img = scale * image @ text.T
    logits_txt = logits_img.T
    target = torch.arange(len(image), device=image.device)
    ce_img, ce_txt = F.cross_entropy(logits_img, target), F.cross_entropy(logits_txt, target)
    align_img = -torch.logsumexp(logits_img, dim=1).mean()
    align_txt = -torch.logsumexp(logits_txt, dim=1).mean()
    loss = 0.5 * (ce_img + lam * align_img) + 0.5 * (ce_txt + lam * align_txt)
    parts = {"clip": 0.5 * (ce_img + ce_txt), "align": 0.5 * (align_img + align_txt)}
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def clipn_loss(image: torch.Tensor, text_yes: torch.Tensor, text_no: torch.Tensor,
               scale: torch.Tensor | float) -> tuple[torch.Tensor, dict]:
    """CLIPN objective on (B, D) normalised image, "yes" text and "no" text features.

    Under torchrun the rows are this rank's share of the global batch; the loss, the text
    semantic-opposite term included, is that of the gathered global batch (as the official loss
    on ``all_text_features``).
    """
    image, text_yes, text_no = gather_features(image, text_yes, text_no)
    n = len(image)
    yes = scale * image @ text_yes.T
    no = scale * image @ text_no.T
    log_p_yes = F.logsigmoid(yes - no)  # log of softmax([yes, no])[0]
    log_p_no = F.logsigmoid(no - yes)
    eye = torch.eye(n, dtype=torch.bool, device=image.device)
    bin_yes = -log_p_yes[eye].sum() / n
    bin_no = -log_p_no[~eye].sum() / max(1, n * n - n)
    tso = (2 - torch.sqrt(2 - 2 * (text_yes * text_no).sum(-1) + 1e-4)).mean()
    loss = 0.5 * (bin_yes + bin_no + tso)
    parts = {"bin_yes": bin_yes, "bin_no": bin_no, "tso": tso}
    return loss, {k: float(v.detach()) for k, v in parts.items()}


@dataclass
class ContrastiveConfig:
    """Optimiser, schedule and checkpointing of one contrastive fine-tuning run."""

    steps: int
    lr: float
    weight_decay: float = 0.1
    decay: Literal["all", "matrices"] = "all"  # CMA: every tensor; CLIPN: ndim >= 2, no norm/bias
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    grad_accum: int = 1
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA; False: plain fp32 (CMA's official recipe)
    checkpoint_every: int = 100
    max_steps: int | None = None

    @property
    def total(self) -> int:
        """Optimiser steps actually run (``max_steps`` caps ``steps`` for smoke runs)."""
        return self.steps if self.max_steps is None else min(self.steps, self.max_steps)


def lr_at(step: int, cfg: ContrastiveConfig) -> float:
    """Learning rate of optimiser step ``step``: linear warm-up from 0, then cosine to 0."""
    if step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim < 2 or any(s in name for s in ("bn", "ln", "bias", "logit_scale"))


def param_groups(module: torch.nn.Module, cfg: ContrastiveConfig) -> list[dict]:
    """AdamW groups: decay on everything (CMA) or only on matrices outside norms (CLIPN)."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if cfg.decay == "all":
        return [{"params": [p for _, p in named], "weight_decay": cfg.weight_decay}]
    return [{"params": [p for n, p in named if not _no_decay(n, p)],
             "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0}]


def step_generator(seed: int, step: int, micro: int = 0) -> torch.Generator:
    """The CPU generator of one micro-step: the same after a resume and on every rank.

    Draws for a global batch are made in full from it and then sliced (:func:`shard_slice`), so
    they do not depend on the number of processes.
    """
    return torch.Generator().manual_seed(
        (seed * 1_000_003 + step * 7_919 + micro * 104_729) % (2**63))


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients over the ranks: with the gathered losses' W-scaled local rows this
    is the global-batch gradient of every parameter (see the module docstring). A parameter
    without a gradient counts as zero, so every rank joins every all-reduce."""
    if not distributed.active():
        return
    world = distributed.world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world


class ContrastiveTrainer:
    """Runs ``cfg.total`` optimiser steps of ``loss_fn`` on ``module``'s trainable parameters."""

    def __init__(self, module: torch.nn.Module, loss_fn: LossFn, cfg: ContrastiveConfig,
                 run_dir: Path, device: torch.device, desc: str = "train", quiet: bool = True,
                 steps_per_epoch: int | None = None, images_per_step: int | None = None):
        self.module, self.loss_fn, self.cfg = module, loss_fn, cfg
        self.steps_per_epoch, self.images_per_step = steps_per_epoch, images_per_step
        self.run_dir, self.device, self.desc, self.quiet = Path(run_dir), device, desc, quiet
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.optim = torch.optim.AdamW(param_groups(module, cfg), lr=cfg.lr, betas=cfg.betas,
                                       eps=cfg.eps)
        self.losses: list[float] = []
        self.parts: dict = {}

    @property
    def checkpoint_path(self) -> Path:
        """The last checkpoint of an unfinished run."""
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self, step: int) -> None:
        """Model, optimiser and loss history after ``step`` optimiser steps (rank 0 writes)."""
        if distributed.is_main():
            state = {"step": step, "model": self.module.state_dict(),
                     "optim": self.optim.state_dict(), "losses": self.losses}
            atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    def load_checkpoint(self) -> int:
        """Resume point: the step of the last checkpoint, 0 when none."""
        if not self.checkpoint_path.is_file():
            return 0
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optim"])
        self.losses = list(state["losses"])
        return int(state["step"])

    def _autocast(self):
        on = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=on)

    def _reduce_grads(self) -> None:
        average_gradients(self.params)

    def step(self, step: int) -> float:
        """One optimiser step over ``grad_accum`` micro-batches; returns the mean loss."""
        cfg = self.cfg
        for g in self.optim.param_groups:
            g["lr"] = lr_at(step, cfg)
        self.optim.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accum):
            with self._autocast():
                loss, parts = self.loss_fn(step, micro, step_generator(cfg.seed, step, micro))
            (loss.float() / cfg.grad_accum).backward()
            total += float(loss.detach()) / cfg.grad_accum
            self.parts = parts
        self._reduce_grads()
        self.optim.step()
        return total

    def fit(self) -> dict:
        """Train, resuming from the last checkpoint; returns what happened."""
        cfg = self.cfg
        start = self.load_checkpoint()
        t0 = time.perf_counter()
        self.module.train()
        with TrainProgress(self.desc, cfg.total, start,
                           quiet=self.quiet or not distributed.is_main(),
                           steps_per_epoch=self.steps_per_epoch,
                           images_per_step=self.images_per_step) as shown:
            for step in range(start, cfg.total):
                self.losses.append(self.step(step))
                done = step + 1
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.total:
                    self.save_checkpoint(done)
                shown.update(done, float(np.mean(self.losses[-20:])), lr_at(step, cfg))
        self.module.eval()
        return {"steps": cfg.total, "resumed_from_step": start,
                "seconds": time.perf_counter() - t0, "world_size": distributed.world_size(),
                "precision": "bf16-autocast" if cfg.amp and self.device.type == "cuda"
                else "fp32",
                "loss_first_last": [self.losses[0], self.losses[-1]] if self.losses else None,
                "last_parts": self.parts}


def artifact_key(name: str, spec: dict, cfg: ContrastiveConfig) -> str:
    """The hash naming one training run's artifact (not the number of processes: the global batch
    makes a run's result independent of it, up to float rounding)."""
    return spec_key({"detector": name, "spec": spec, "train": dataclasses.asdict(cfg),
                     "trainer": f"contrastive-{CONTRASTIVE_VERSION}"})


def train_contrastive(module: torch.nn.Module, loss_fn: LossFn, cfg: ContrastiveConfig, *,
                      name: str, spec: dict, artifact_dir: Path, device: torch.device,
                      quiet: bool = True, steps_per_epoch: int | None = None,
                      images_per_step: int | None = None) -> dict:
    """Train ``module`` (or load the finished artifact of an identical run); returns train info.

    Only the trainable parameters are saved, as ``final.pt`` plus ``final.json`` with their sha256;
    an artifact whose sum does not match is retrained. ``steps_per_epoch`` and
    ``images_per_step`` (global images per optimiser step) only feed the progress display.
    """
    key = artifact_key(name, spec, cfg)
    run_dir = Path(artifact_dir) / "train" / name / key
    info = {"artifact": str(artifact_paths(run_dir)[0]), "key": key,
            "config": dataclasses.asdict(cfg)}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    found = load_artifact(run_dir, device)
    if found is not None:
        state, meta = found
        module.load_state_dict(state, strict=False)
        module.eval()
        return {**info, **meta["result"], "sha256": meta["sha256"], "loaded": True}
    trainer = ContrastiveTrainer(module, loss_fn, cfg, run_dir, device, f"train {name}", quiet,
                                 steps_per_epoch, images_per_step)
    result = trainer.fit()
    sha = None
    if distributed.is_main():
        state = {n: p.detach().cpu() for n, p in module.named_parameters() if n in trainable}
        sha = save_artifact(run_dir, state, {"key": key, "spec": spec, "result": result,
                                             "config": dataclasses.asdict(cfg)})
        trainer.checkpoint_path.unlink(missing_ok=True)
    sha = distributed.broadcast(sha)  # every rank names the tuned model by the saved sum
    return {**info, **result, "sha256": sha, "loaded": False}

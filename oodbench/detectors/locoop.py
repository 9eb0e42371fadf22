"""LoCoOp: local regularised context optimisation (Miyai et al., NeurIPS 2023).

A CoOp context (16 shared tokens, class token at the end) is learned on the few-shot split with
L = CE(s * cos(global, T), y) + lambda * L_en, s = CLIP's logit scale (exp(logit_scale)). L_en is
minus the mean entropy of the class softmax of those patches (v-path ``local`` features) whose
top-K classes do not include the label: background regions are pushed towards uniform. Scored with
GL-MCM (``score="gl"``, weight 1, T = 1) or plain MCM (``score="mcm"``) over the learned prompts,
on CLIP's logits divided by 100 as ``trainers/locoop.py`` ``test_ood`` computes them (the raw
cosines on OpenAI CLIP, whose logit scale is 100; 0.17 x cosine on the toy CLIP).
The context is shared, so it is re-used for any ID label set.

Training views (``augment``, see :mod:`oodbench.training.views`): each step encodes, through the
frozen image tower, one RandomResizedCrop(224, bicubic, scale (0.08, 1)) + flip of each image of
the batch, redrawn every epoch (``official``, Dassl's ``random_resized_crop``/``random_flip`` of
``vit_b16_ep50.yaml``) or cycled from K views drawn once (``views:K``, the toy preset); the
entropy term's background patches are those of the crop. The learning rate steps once per epoch
as Dassl's ``cosine`` scheduler (constant warm-up epoch at 1e-5, then T_max = epochs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from oodbench.detectors.base import (
    GLOBAL,
    IMAGES,
    LOCAL,
    TRAIN,
    Context,
    Detector,
    DetectorParams,
    Recipe,
    require,
)
from oodbench.detectors.glmcm import gl_mcm_score
from oodbench.registry import DETECTORS
from oodbench.training.fewshot import fewshot_split
from oodbench.training.presets import apply_preset, preset_name, toy_preset
from oodbench.training.prompt_learner import PromptLearner, freeze
from oodbench.training.trainer import TrainConfig, steps_for_epochs, train_artifact
from oodbench.training.views import Augment, dassl_local_views

OFFICIAL_DIVISOR = 100.0  # test_ood: `output /= 100.0` on logit_scale.exp() x cosine
# Dassl (configs/trainers/LoCoOp/vit_b16_ep50.yaml): INPUT.INTERPOLATION bicubic, TRANSFORMS
# random_resized_crop (RRCROP_SCALE default (0.08, 1.0)) + random_flip
CROP_SOURCE = ("AtsuMiyai/LoCoOp configs/trainers/LoCoOp/vit_b16_ep50.yaml; Dassl "
               "data/transforms/transforms.py (_build_transform_train)")


def background_entropy_loss(local_logits: torch.Tensor, y: torch.Tensor,
                            top_k: int) -> torch.Tensor:
    """-mean entropy of the patches (N, P, C) whose top-``top_k`` classes exclude the label y."""
    k = min(top_k, local_logits.shape[-1])
    top = local_logits.topk(k, dim=-1).indices
    background = ~(top == y[:, None, None]).any(dim=-1)
    if not background.any():
        return local_logits.sum() * 0.0
    logp = torch.log_softmax(local_logits[background], dim=-1)
    return (logp.exp() * logp).sum(dim=-1).mean()


@dataclass
class LoCoOpParams(DetectorParams):
    """Official ImageNet recipe: 16 shots and ctx, lambda 0.25, K 200, SGD 0.002, 50 epochs.

    ``ctx_init`` is CoOp's CTX_INIT: words whose embeddings start the context (their count then
    replaces ``n_ctx``); empty (the LoCoOp ImageNet config) draws it from N(0, 0.02²).
    ``augment``: ``official`` (a new crop of every image each epoch) or ``views:K`` (K crops per
    image drawn once and cycled); ``warmup_epochs`` is a whole number of epochs (Dassl).
    """

    preset: Literal["auto", "paper", "toy"] = "auto"
    shots: int = 16
    split_seed: int | None = None
    n_ctx: int = 16
    ctx_init: str = ""
    lambda_en: float = 0.25
    top_k: int = 200
    epochs: float = 50.0
    batch_size: int = 32
    lr: float = 0.002
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    score: Literal["gl", "mcm"] = "gl"
    temperature: float = 1.0
    local_weight: float = 1.0
    max_steps: int | None = None
    augment: str = "official"

    def validate(self) -> None:
        Augment.parse(self.augment)
        require(self.warmup_epochs >= 0 and float(self.warmup_epochs).is_integer(),
                "warmup_epochs", "must be a whole number of epochs (Dassl steps the lr per epoch)")
        require(self.shots >= 0, "shots", "must be >= 0 (0 = the whole training split)")
        require(self.n_ctx > 0 and self.top_k > 0, "n_ctx", "n_ctx and top_k must be positive")
        require(self.epochs > 0 and self.batch_size > 0 and self.lr > 0, "lr",
                "epochs, batch_size and lr must be positive")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(self.max_steps is None or self.max_steps > 0, "max_steps", "must be positive")


# The paper's recipe with 8 crops per image drawn once and cycled over the 50 epochs (CPU seconds);
# top_k and lambda_en chosen on toy-val (benchmarks/toy/presets/sweep.csv).
TOY_PRESET = toy_preset("locoop")  # benchmarks/toy/select_presets.py writes it


@DETECTORS.register("locoop")
class LoCoOp(Detector):
    """LoCoOp: CoOp context + entropy maximisation on background patches; GL-MCM score."""

    name = "locoop"
    version = "3"
    Params = LoCoOpParams
    needs = frozenset({GLOBAL, LOCAL, TRAIN, IMAGES})
    recipe = Recipe(
        source="AtsuMiyai/LoCoOp: trainers/locoop.py, clip_w_local/clip.py (_transform), "
               "configs/trainers/LoCoOp/vit_b16_ep50.yaml",
        interpolation="bicubic", resize_ratio=1.0,
        prompts="'[16 ctx] {c}.' (CoOp context, shared)",
        precision="not checked", seeds="1, 2, 3")

    def setup(self, ctx: Context) -> None:
        p = self.effective = apply_preset(self.params, TOY_PRESET, ctx.protocol.name)
        model, tok = ctx.backbone.model, ctx.backbone.tokenizer
        freeze(model)
        split = fewshot_split(ctx.protocol.train.manifest, p.shots,
                              ctx.seed if p.split_seed is None else p.split_seed, ctx.artifact_dir)
        names = ctx.protocol.training_classnames()
        gen = torch.Generator().manual_seed(ctx.seed)
        learner = PromptLearner(model, tok, names, n_ctx=p.n_ctx, ctx_init=p.ctx_init or None,
                                generator=gen).to(ctx.device)
        y = torch.as_tensor(split.manifest.labels).long().to(ctx.device)
        scale = float(model.logit_scale.exp())
        n = len(y)
        per_epoch = steps_for_epochs(n, p.batch_size, 1.0)
        epochs = max(1, int(round(p.epochs)))
        cfg = TrainConfig(steps=steps_for_epochs(n, p.batch_size, p.epochs), lr=p.lr,
                          optimizer="sgd", weight_decay=p.weight_decay, schedule="epoch-cosine",
                          warmup_steps=int(p.warmup_epochs * per_epoch), epoch_steps=per_epoch,
                          epochs=epochs, seed=ctx.seed, max_steps=p.max_steps,
                          checkpoint_every=50)
        views = dassl_local_views(ctx, split, p.augment, 1, p.batch_size, per_epoch,
                                  "locoop-views", CROP_SOURCE, field=f"{self.name}.augment")

        def loss_fn(step, gen):
            epoch, b = divmod(step, per_epoch)
            idx, f = views.get(epoch, b)
            t = learner()
            ce = torch.nn.functional.cross_entropy(scale * f[GLOBAL][:, 0] @ t.T, y[idx])
            en = background_entropy_loss(scale * f[LOCAL][:, 0] @ t.T, y[idx], p.top_k)
            return ce + p.lambda_en * en

        spec = {"backbone": ctx.backbone.key(), "split": split.describe(), "classes": names,
                "params": {k: v for k, v in p.to_dict().items()
                           if k not in ("preset", "score", "temperature", "local_weight")},
                "views": views.describe(), "lr_schedule": "dassl-epoch",
                "version": self.version}
        info = train_artifact(learner, loss_fn, cfg, name=self.name, spec=spec,
                              artifact_dir=ctx.artifact_dir, device=ctx.device, quiet=ctx.quiet)
        ctx.info["train"] = {"split": split.describe(), "preset": preset_name(self.params, p),
                             "effective_params": p.to_dict(), "logit_scale": scale,
                             "augment": str(Augment.parse(p.augment)), "views": views.describe(),
                             "lr_schedule": "per epoch (Dassl cosine, T_max = epochs, constant "
                                            "warm-up at 1e-5): config.schedule epoch-cosine",
                             "views_encoded": views.images_encoded, **info}
        test = PromptLearner(model, tok, list(ctx.classnames), n_ctx=learner.n_ctx).to(ctx.device)
        test.ctx.data.copy_(learner.ctx.data)
        with torch.no_grad():
            self.text = test().float()
        # test_ood: CLIP's logits (logit_scale.exp() x cosine) divided by 100 before the softmax
        self.cos_factor = scale / OFFICIAL_DIVISOR
        self.ready = True

    def score_and_predict(self, feats):
        p = self.effective
        g = self.cos_factor * feats[GLOBAL].float() @ self.text.T
        if p.score == "mcm":
            s = torch.softmax(g / p.temperature, dim=-1).amax(dim=-1)
        else:
            loc = self.cos_factor * feats[LOCAL].float() @ self.text.T
            s = gl_mcm_score(g, loc, p.temperature, p.local_weight)
        return s, g.argmax(dim=1)

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[0]

    def predict(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return (feats[GLOBAL].float() @ self.text.T).argmax(dim=1)

"""Local-Prompt: extensible local prompts for few-shot OOD detection (Zeng et al., ICLR 2025).

Global prompts stay frozen ("a photo of a {c}."). Learned: class-specific local contexts
(C x 16 tokens, "[ctx] {c}.") and 300 negative contexts ("[ctx] ."), scored against v-path patch
features. Each training image gives 16 augmented views; the 8 most similar to the label's global
prompt are positives and the least similar one is the outlier view. Each batch makes 8 optimiser
steps (one per positive view) on

    L = L_pos + lambda_neg * L_neg + lambda_div * L_div

(doc §3.3): L_pos, a regional CE where every class and every negative prompt scores its own top-k
patches; L_neg, pushing the outlier view's label-like patches to the negative prompts; L_div, the
mean pairwise cosine of the negative prompts (after the 2025-03-20 fix: on the negative prompts).
Score (``trainers/localprompt.py``, ``test_ood``): CLIP's logits (logit_scale.exp() x cosine)
divided by 100, i.e. the raw cosines on OpenAI CLIP; then max_c softmax(g / T)_c + the mean of the
top-k local probabilities, each patch's softmax running over the C local ID prompts and the
negative prompts at temperature T = 1. The ID prediction (``test``) is the argmax of
exp(g) x mean over the top-k patches of exp(l / T), on the same divided logits.

Training views (``augment``, :mod:`oodbench.training.views`): 16 RandomResizedCrop(224, bicubic,
scale (0.08, 1)) + flip views of every image, redrawn every epoch as Dassl's data manager draws
them (``official``), or cycled from K views drawn once (``views:K``, the toy preset), encoded by
the frozen image tower. The learning rate steps once per epoch as Dassl's ``cosine`` scheduler
(constant warm-up epoch at 1e-5, then T_max = epochs). The local prompts are class-specific, so a
different test label set is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

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
from oodbench.errors import ConfigError
from oodbench.registry import DETECTORS
from oodbench.training.fewshot import fewshot_split
from oodbench.training.presets import apply_preset, preset_name, toy_preset
from oodbench.training.prompt_learner import PromptLearner, freeze
from oodbench.training.trainer import TrainConfig, train_artifact
from oodbench.training.views import Augment, dassl_local_views, with_toy_views

OFFICIAL_DIVISOR = 100.0  # test_ood / test: `output /= 100.0` on logit_scale.exp() x cosine
# configs/trainers/LOCALPROMPT/vit_b16_ep30.yaml: INTERPOLATION bicubic, random_resized_crop
# (Dassl RRCROP_SCALE (0.08, 1.0)) + random_flip; Dassl/dassl/data/data_manager.py
# (DatasetWrapper.__getitem__) applies the train transform 16 times per image per epoch
CROP_SOURCE = ("AuroraZengfh/Local-Prompt configs/trainers/LOCALPROMPT/vit_b16_ep30.yaml; "
               "Dassl/dassl/data/data_manager.py (16 views per item); "
               "Dassl/dassl/data/transforms/transforms.py")


def positive_region_loss(a: torch.Tensor, a_neg: torch.Tensor, y: torch.Tensor, k: int):
    """L_pos from (B, R, C) ID and (B, R, M) negative local logits (already divided by T)."""
    top = a.topk(min(k, a.shape[1]), dim=1).values
    top_n = a_neg.topk(min(k, a_neg.shape[1]), dim=1).values
    num = torch.logsumexp(top.gather(2, y[:, None, None].expand(-1, top.shape[1], 1))[..., 0], 1)
    den = torch.logsumexp(torch.cat([top.flatten(1), top_n.flatten(1)], dim=1), dim=1)
    return (den - num).mean()


def negative_region_loss(b_id: torch.Tensor, b_neg: torch.Tensor, y: torch.Tensor, k: int):
    """L_neg from the outlier view's (B, R, C) ID and (B, R, M) negative local logits."""
    k = min(k, b_id.shape[1])
    regions = b_id.gather(2, y[:, None, None].expand(-1, b_id.shape[1], 1))[..., 0].topk(k, 1)
    sel = b_neg.gather(1, regions.indices[..., None].expand(-1, -1, b_neg.shape[2]))
    num = torch.logsumexp(sel.flatten(1), dim=1)
    id_mass = torch.logsumexp(b_id.topk(k, dim=1).values.flatten(1), dim=1)
    return (torch.logaddexp(num, id_mass) - num).mean()


def diversity_loss(q: torch.Tensor) -> torch.Tensor:
    """Sum of all pairwise cosines of the (M, D) negative prompts (i = j included) / (M (M - 1))."""
    q = F.normalize(q, dim=-1)
    m = len(q)
    return (q @ q.T).sum() / (m * (m - 1))


@dataclass
class LocalPromptParams(DetectorParams):
    """Official README example: 4-shot, 16 ctx, 300 negatives, topk 50 / 10, lambda 5, div 0.5."""

    preset: Literal["auto", "paper", "toy"] = "auto"
    shots: int = 4
    split_seed: int | None = None
    n_ctx: int = 16
    n_neg_prompts: int = 300
    views: int = 16
    num_pos: int = 8
    topk_train: int = 50
    topk_test: int = 10
    lambda_neg: float = 5.0
    lambda_div: float = 0.5
    temperature: float = 1.0
    epochs: float = 30.0
    batch_size: int = 256
    lr: float = 0.002
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    max_steps: int | None = None
    augment: str = "official"

    def validate(self) -> None:
        Augment.parse(self.augment)
        require(self.warmup_epochs >= 0 and float(self.warmup_epochs).is_integer(),
                "warmup_epochs", "must be a whole number of epochs (Dassl steps the lr per epoch)")
        require(self.views > self.num_pos >= 1, "num_pos", "must be in [1, views)")
        require(self.n_ctx > 0 and self.n_neg_prompts > 1, "n_neg_prompts",
                "n_ctx must be positive and n_neg_prompts > 1")
        require(self.topk_train > 0 and self.topk_test > 0, "topk_train", "top-k must be positive")
        require(self.epochs > 0 and self.batch_size > 0 and self.lr > 0, "lr",
                "epochs, batch_size and lr must be positive")
        require(self.max_steps is None or self.max_steps > 0, "max_steps", "must be positive")


# A CPU-minute budget (16 shots, 5 epochs, 8 views drawn once: augment views:<views> by
# with_toy_views); n_neg_prompts and lr chosen on toy-val by benchmarks/toy/select_presets.py
TOY_PRESET = toy_preset("local-prompt")


@DETECTORS.register("local-prompt")
class LocalPrompt(Detector):
    """Local-Prompt: frozen global prompts + learned class-specific local and negative prompts."""

    name = "local-prompt"
    version = "3"
    Params = LocalPromptParams
    needs = frozenset({GLOBAL, LOCAL, TRAIN, IMAGES})
    recipe = Recipe(
        source="AuroraZengfh/Local-Prompt: trainers/localprompt.py (test_ood, test, prompt "
               "learners), clip_w_local/clip.py (_transform), eval_ood_detection.py",
        interpolation="bicubic", resize_ratio=1.0,
        prompts="global 'a photo of a {c}.' (frozen); local '[16 ctx] {c}.' per class; 300 "
                "negative '[16 ctx] .'",
        precision="fp32 weights under fp16 autocast (train.py: PREC = 'amp')",
        negatives="300 learned negative prompts",
        seeds="1, 2, 3 (scripts/train.sh)")

    def check_protocol(self, protocol) -> None:
        if list(protocol.classnames) != list(protocol.training_classnames()):
            raise ConfigError(f"local-prompt learns one local prompt per training class, so it "
                              f"cannot score protocol {protocol.name}, whose ID label set "
                              "differs from its training classes; use krnft, lapt or locoop there")

    def setup(self, ctx: Context) -> None:
        p = apply_preset(self.params, TOY_PRESET, ctx.protocol.name)
        p = self.effective = with_toy_views(self.params, p, ctx.protocol.name, p.views)
        self.check_protocol(ctx.protocol)
        names = ctx.protocol.training_classnames()
        model, tok = ctx.backbone.model, ctx.backbone.tokenizer
        freeze(model)
        self.t_glob = ctx.encode_text([f"a photo of a {c}." for c in names]).float().clone()
        gen = torch.Generator().manual_seed(ctx.seed)
        learner = torch.nn.ModuleDict({
            "local": PromptLearner(model, tok, names, n_ctx=p.n_ctx, csc=True, generator=gen),
            "neg": PromptLearner(model, tok, [""] * p.n_neg_prompts, n_ctx=p.n_ctx, csc=True,
                                 generator=gen)}).to(ctx.device)
        split = fewshot_split(ctx.protocol.train.manifest, p.shots,
                              ctx.seed if p.split_seed is None else p.split_seed, ctx.artifact_dir)
        info = self._train(ctx, p, learner, split)
        ctx.info["train"] = {"split": split.describe(), "preset": preset_name(self.params, p),
                             "effective_params": p.to_dict(),
                             "augment": str(Augment.parse(p.augment)),
                             "lr_schedule": "per epoch (Dassl cosine, T_max = epochs, constant "
                                            "warm-up at 1e-5): config.schedule epoch-cosine",
                             **info}
        with torch.no_grad():
            self.t_local, self.t_neg = learner["local"]().float(), learner["neg"]().float()
        self.scale = float(model.logit_scale.exp())
        self.ready = True

    def _train(self, ctx, p, learner, split) -> dict:
        dev = ctx.device
        y = torch.as_tensor(split.manifest.labels).long().to(dev)
        n = len(y)
        batches = max(1, n // p.batch_size)  # Dassl drops the last incomplete batch
        per_epoch = batches * p.num_pos
        epochs = max(1, int(round(p.epochs)))
        scale = float(ctx.backbone.model.logit_scale.exp())
        t = p.temperature
        views = dassl_local_views(ctx, split, p.augment, p.views, p.batch_size, batches,
                                  "local-prompt-views", CROP_SOURCE, drop_last=True,
                                  field=f"{self.name}.augment")
        ranked: dict = {}

        def select(epoch, b):
            """The batch's views: num_pos most like the label's global prompt, and the least."""
            if (epoch, b) not in ranked:
                idx, f = views.get(epoch, b)
                sim = (f[GLOBAL] * self.t_glob[y[idx]][:, None]).sum(-1)  # (B, V)
                order = torch.argsort(sim, dim=1, descending=True)
                ranked.clear()
                ranked[(epoch, b)] = (idx, f[LOCAL], order[:, :p.num_pos], order[:, -1])
            return ranked[(epoch, b)]

        def loss_fn(step, gen):
            batch, i = divmod(step, p.num_pos)
            idx, loc, pos_views, neg_view = select(*divmod(batch, batches))
            rows = torch.arange(len(idx), device=dev)
            pos, neg = loc[rows, pos_views[:, i]], loc[rows, neg_view]
            t_loc, t_neg = learner["local"](), learner["neg"]()
            l_pos = positive_region_loss(scale * pos @ t_loc.T / t, scale * pos @ t_neg.T / t,
                                         y[idx], p.topk_train)
            l_neg = negative_region_loss(scale * neg @ t_loc.T / t, scale * neg @ t_neg.T / t,
                                         y[idx], p.topk_train)
            return l_pos + p.lambda_neg * l_neg + p.lambda_div * diversity_loss(t_neg)

        cfg = TrainConfig(steps=max(1, int(p.epochs * per_epoch)), lr=p.lr, optimizer="sgd",
                          weight_decay=p.weight_decay, schedule="epoch-cosine",
                          warmup_steps=int(p.warmup_epochs * per_epoch), epoch_steps=per_epoch,
                          epochs=epochs, seed=ctx.seed, max_steps=p.max_steps,
                          checkpoint_every=50)
        spec = {"backbone": ctx.backbone.key(), "split": split.describe(),
                "params": {k: v for k, v in p.to_dict().items()
                           if k not in ("preset", "topk_test", "temperature")},
                "views": views.describe(), "lr_schedule": "dassl-epoch",
                "version": self.version}
        info = train_artifact(learner, loss_fn, cfg, name=self.name, spec=spec,
                              artifact_dir=ctx.artifact_dir, device=ctx.device, quiet=ctx.quiet)
        return {"views": views.describe(), "views_encoded": views.images_encoded, **info}

    def score_and_predict(self, feats):
        p = self.effective
        # the official test_ood and test divide CLIP's logits (logit_scale.exp() x cosine) by 100
        # before every softmax: on OpenAI CLIP (scale 100) that is the raw cosine
        c = self.scale / OFFICIAL_DIVISOR
        g = c * feats[GLOBAL].float() @ self.t_glob.T
        loc = feats[LOCAL].float()
        li = c * loc @ self.t_local.T / p.temperature
        ln = c * loc @ self.t_neg.T / p.temperature
        prob = torch.softmax(torch.cat([li, ln], dim=-1), dim=-1)[..., :li.shape[-1]]
        k = min(p.topk_test, prob[0].numel())
        s_loc = prob.flatten(1).topk(k, dim=1).values.mean(dim=1)
        s_glob = torch.softmax(g / p.temperature, dim=-1).amax(dim=-1)
        # test(): exp(g) * mean of the top-k exp(l / T) over patches; its argmax, in log space
        kp = min(p.topk_test, li.shape[1])
        fused = g + torch.logsumexp(li.topk(kp, dim=1).values, dim=1)
        return s_glob + s_loc, fused.argmax(dim=1)

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[0]

    def predict(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[1]

"""CMA: cross-modal alignment fine-tuning, scored with ungrouped NegLabel (Kim & Hwang, CVPR 2025).

Training (``finetune=true``): both CLIP towers and the logit scale are fine-tuned on the protocol's
training split (ImageNet-1k train in the paper), each image paired with its class prompt
(``train_template``; the official train.py default "a photo of a {}"), with the FLYP loss plus
lambda times the log-sum-exp alignment terms (:func:`oodbench.training.contrastive.cma_loss`).
Official defaults: AdamW lr 1e-5, weight decay 0.1 on every tensor, betas (0.9, 0.999), batch 512,
10 epochs, 500 linear warm-up steps then cosine to 0, lambda 0.001, RandomResizedCrop(scale 0.9-1)
without flips, pure fp32 (the ``torch.autocast`` line of ``utils/train_utils.py`` is commented
out; ``train_precision='bf16'`` trains under bf16 autocast on CUDA instead, and the record's
``train.precision`` says which). The fine-tuned weights are a hashed artifact under
``<cache>/artifacts/train/cma``.

``batch_size`` (512) is the global batch: the official code runs it through ``DataParallel`` and
computes one 512 x 512 loss. Under ``torchrun --nproc_per_node W`` each rank encodes its 1/W share
and the loss all-gathers the features (:mod:`oodbench.training.contrastive`), so the loss and the
gradient are those of the 512 images, as in one process.

Scoring: S(x) = sum over the K ID classes of softmax([cos(v, T); cos(v, T~)] / 0.01), one softmax
over "The nice {class}" and all negative labels, no grouping, computed on the fine-tuned towers.
The runner hands detectors features of the backbone it loaded, so after fine-tuning the detector
re-encodes every protocol set with the fine-tuned image tower (cached like any extraction) and maps
each incoming pretrained feature row to its image's fine-tuned feature.

To score with the authors' released checkpoint instead, load it as the backbone and skip training:
``--backbone ViT-B-16-quickgelu:/path/CMA-ckpt.pt -p cma.finetune=false
-p cma.negatives_file=/path/neg_label_10000.npy`` (OpenAI CLIP uses QuickGELU, hence the
``-quickgelu`` architecture; ``module.`` prefixes and the ``model_state_dict`` wrapper are
stripped by the backbone loader).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.data.images import load_rgb, normalize
from oodbench.detectors.base import (
    GLOBAL,
    TRAIN,
    Context,
    Detector,
    DetectorParams,
    Recipe,
    require,
)
from oodbench.detectors.negatives import ADJECTIVE_TEMPLATE, FRACTION, PERCENTILE, NegativeLabels
from oodbench.detectors.neglabel import corpus_sha256, load_corpus, negative_label_score
from oodbench.errors import ConfigError
from oodbench.features import distributed
from oodbench.registry import DETECTORS
from oodbench.training.augment import crop_box
from oodbench.training.contrastive import (
    ContrastiveConfig,
    cma_loss,
    encode_rows,
    shard_slice,
    train_contrastive,
)

CMA_TEMPLATE = "The nice {}"


@dataclass
class CMAParams(DetectorParams):
    """CMA's official defaults (CMA-OoDD train.py / inference.py, README: lam 0.001)."""

    finetune: bool = True
    id_template: str = CMA_TEMPLATE
    train_template: str = "a photo of a {}"
    negatives_file: str | None = None
    corpus: str = "auto"
    noun_template: str = CMA_TEMPLATE
    adjective_template: str = ADJECTIVE_TEMPLATE
    percentile: float = PERCENTILE
    fraction: float = FRACTION
    temperature: float = 0.01
    lam: float = 0.001
    epochs: float = 10.0
    batch_size: int = 512
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 500
    grad_accum: int = 1
    crop_scale_min: float = 0.9
    train_precision: Literal["fp32", "bf16"] = "fp32"
    max_steps: int | None = None

    def validate(self) -> None:
        for name in ("id_template", "train_template", "noun_template", "adjective_template"):
            require("{}" in getattr(self, name), name, "must contain '{}'")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(self.lam >= 0, "lam", "must be >= 0 (0 = FLYP)")
        require(self.epochs > 0, "epochs", "must be > 0")
        require(self.batch_size >= 2, "batch_size", "must be >= 2 (contrastive loss)")
        require(self.lr > 0, "lr", "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(self.grad_accum >= 1, "grad_accum", "must be >= 1")
        require(0 < self.crop_scale_min <= 1, "crop_scale_min", "must be in (0, 1]")
        require(self.train_precision in ("fp32", "bf16"), "train_precision",
                "must be 'fp32' (the official recipe) or 'bf16' (autocast on CUDA)")
        require(0 < self.fraction <= 1, "fraction", "must be in (0, 1]")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")


def crop_seeds(n: int, gen: torch.Generator) -> list[int]:
    """One seed per image of a global batch of ``n``, drawn from the step's generator: each
    image's crop then depends on its place in the global batch only, not on the rank drawing it."""
    return torch.randint(0, 2**62, (n,), generator=gen).tolist()


def train_crops(manifest, indices: list[int], size: int, interpolation: str, scale_min: float,
                seeds: Sequence[int]) -> torch.Tensor:
    """(B, 3, size, size) uint8 random resized crops (area scale_min..1, no flip), CMA-style;
    image k's box is drawn from a generator seeded with ``seeds[k]``."""
    from oodbench.data.images import INTERPOLATIONS

    out = np.empty((len(indices), size, size, 3), np.uint8)
    for k, i in enumerate(indices):
        im = load_rgb(manifest.absolute(i))
        gen = torch.Generator().manual_seed(int(seeds[k]))
        left, top, w, h = crop_box(im.width, im.height, gen, scale=(scale_min, 1.0))
        out[k] = np.asarray(im.resize((size, size), INTERPOLATIONS[interpolation],
                                      box=(left, top, left + w, top + h)), dtype=np.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


@DETECTORS.register("cma")
class CMA(Detector):
    """CMA: CLIP fine-tuned with cross-modal alignment, scored by ungrouped NegLabel."""

    name = "cma"
    version = "2"  # 2: fp32 training (official), crops per image of the global batch, sharded
    Params = CMAParams
    needs = frozenset({GLOBAL, TRAIN})
    recipe = Recipe(
        source="ma-kjh/CMA-OoDD: utils/load_model.py, utils/loader.py, inference.py",
        interpolation="bicubic", resize_ratio=1.0,
        prompts="'The nice {c}'", precision="fp32 (clip.load on CPU, cast to float)",
        negatives="the authors' neg_label_10000.npy (negatives_file), else NegLabel's mining",
        groups="NegLabel's score, ungrouped")
    precision = "fp32"
    precision_reason = ("fine-tunes both towers from the backbone's weights and encodes the test "
                        "sets with them: full precision for training")
    score_dtype = torch.float64

    def setup(self, ctx: Context) -> None:
        p = self.params
        self.feature_backbone = None
        backbone, encode = ctx.backbone, ctx.encode_text
        if p.finetune:
            backbone, info = self.finetune(ctx)
            ctx.info["train"] = info
            encode = self._encoder(ctx, backbone)
            self.feature_backbone = backbone  # the runner scores images encoded by the tuned model
        self.id_text = encode([p.id_template.format(c) for c in ctx.classnames]).float()
        self.negatives = self._negatives(ctx, encode)
        ctx.info["negatives"] = self.negatives.summary()
        self.ready = True

    def _negatives(self, ctx: Context, encode) -> NegativeLabels:
        from oodbench.detectors.negatives import load_negatives, mine_negatives

        p = self.params
        if p.negatives_file is not None:
            return load_negatives(encode, p.negatives_file)
        corpus, nouns, adjectives = load_corpus(p.corpus, ctx.protocol.name)
        neg = mine_negatives(encode, ctx.classnames, nouns, adjectives,
                             noun_template=p.noun_template, adjective_template=p.adjective_template,
                             percentile=p.percentile, fraction=p.fraction,
                             id_features=self.id_text)
        neg.info["corpus"] = corpus
        neg.info["corpus_sha256"] = corpus_sha256(nouns, adjectives)
        return neg

    def finetune(self, ctx: Context):
        """Fine-tune a copy of the backbone with the CMA loss; returns (backbone, train info)."""
        p, bb = self.params, ctx.backbone
        train = ctx.protocol.train
        if train is None:
            raise ConfigError(f"cma: protocol {ctx.protocol.name} has no training split to "
                              "fine-tune on; pass -p cma.finetune=false with a fine-tuned backbone")
        manifest = train.manifest
        names = ctx.protocol.training_classnames()
        keep = np.flatnonzero(np.asarray(manifest.labels) >= 0)
        model = copy.deepcopy(bb.model).float().to(bb.device)
        for q in model.parameters():
            q.requires_grad_(True)
        world = distributed.world_size()
        if p.batch_size < world:
            raise ConfigError(f"cma: batch_size {p.batch_size} is the global batch, split over "
                              f"{world} processes; pass -p cma.batch_size={world} or more")
        per_epoch = -(-len(keep) // p.batch_size)
        steps = max(1, int(round(p.epochs * per_epoch / p.grad_accum)))
        cfg = ContrastiveConfig(steps=steps, lr=p.lr, weight_decay=p.weight_decay, decay="all",
                                warmup_steps=p.warmup_steps, grad_accum=p.grad_accum,
                                seed=ctx.seed, max_steps=p.max_steps,
                                amp=p.train_precision == "bf16")
        spec = {"backbone": bb.key(), "train": manifest.digest(), "classes": names,
                "params": {k: v for k, v in dataclasses.asdict(p).items()
                           if k in ("train_template", "lam", "epochs", "batch_size", "lr",
                                    "weight_decay", "warmup_steps", "grad_accum",
                                    "crop_scale_min")}}
        info = train_contrastive(model, self.loss_fn(ctx, model, manifest, names), cfg,
                                 name="cma", spec=spec, artifact_dir=ctx.artifact_dir,
                                 device=bb.device, quiet=ctx.quiet,
                                 steps_per_epoch=max(1, per_epoch // p.grad_accum),
                                 images_per_step=p.batch_size * p.grad_accum)
        info = {**info, "global_batch": p.batch_size,
                "per_process_batch": -(-p.batch_size // world)}
        model.eval()
        tuned = dataclasses.replace(bb, model=model, identity={
            **bb.identity, "finetuned": "cma", "artifact_sha256": info["sha256"],
            "artifact_key": info["key"]})
        return tuned, info

    def loss_fn(self, ctx: Context, model: torch.nn.Module, manifest, names: list[str]):
        """The trainer's ``loss_fn(step, micro, gen)``: the CMA loss of global batch number
        ``step * grad_accum + micro`` of the training split (images with a label >= 0, shuffled
        afresh each epoch with the seed), this rank's share encoded, the features gathered."""
        p, bb, pp = self.params, ctx.backbone, ctx.backbone.preprocess
        labels = np.asarray(manifest.labels)
        keep = np.flatnonzero(labels >= 0)
        per_epoch = -(-len(keep) // p.batch_size)
        tokens = bb.tokenizer([p.train_template.format(c) for c in names]).to(bb.device)

        def loss_fn(step: int, micro: int, gen: torch.Generator):
            epoch, i = divmod(step * p.grad_accum + micro, per_epoch)
            perm = torch.randperm(len(keep), generator=torch.Generator().manual_seed(
                ctx.seed * 7_919 + epoch))
            idx = keep[perm[i * p.batch_size:(i + 1) * p.batch_size].numpy()]
            seeds = crop_seeds(len(idx), gen)
            part = shard_slice(len(idx))
            idx, seeds = idx[part], seeds[part]
            images = train_crops(manifest, idx.tolist(), pp.crop, pp.interpolation,
                                 p.crop_scale_min, seeds)
            x = normalize(images.to(bb.device), pp, dtype=torch.float32)
            img = F.normalize(encode_rows(model.encode_image, x), dim=-1)
            txt = F.normalize(encode_rows(model.encode_text, tokens[labels[idx]]), dim=-1)
            return cma_loss(img, txt, model.logit_scale.exp(), p.lam)

        return loss_fn

    def _encoder(self, ctx: Context, backbone):
        return ctx.text_encoder(backbone)

    def score_and_predict(self, feats):
        v = feats[GLOBAL].float()
        id_cos = v @ self.id_text.to(v.device).T
        neg_cos = v @ self.negatives.features.to(v.device).T
        return negative_label_score(id_cos, neg_cos, self.params.temperature), id_cos.argmax(1)

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[0]

    def predict(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[1]

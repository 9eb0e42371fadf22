"""LAPT: label-driven automated prompt tuning (Zhang et al., ECCV 2024).

Distribution-aware prompts: one shared ID context (``n_ctx`` = 4) for "[ctx] {class}." and one
shared OOD context for "[ood_ctx] {negative}." over the M_train = 1,000 least ID-like mined labels
(doc §1.7). Training minimises, over the joint softmax of the C + M_train learned prompt features at
CLIP's logit scale,

    L = CE(z_cm, y) + CE(z_cd, y~)   [+ CE(f, y) with ``plain_loss``]

where z_cm = normalize(lam f + (1 - lam) t_y) mixes a sample with a frozen text feature of its own
label under a random TIP template (cross-modal), and z_cd mixes each ID sample with a random
negative sample *of the same batch* and each negative sample with a random ID sample of the batch,
with the soft target lam e_a + (1 - lam) e_b (cross-distribution; a batch without both kinds
mixes each sample with itself). As the official trainer (``openood/trainers/oodmixup_trainer.py``,
``OodMixupTrainer_idood`` with ``mix_strategy=wccm_cd``: ``mixup_data`` calls ``np.random.beta``
once per call, ``create_mixed_indices`` pairs within the batch), each of the two mixings draws
*one* lam ~ Beta(alpha, alpha) per batch (:func:`lapt_mix`). Test: the grouped NegLabel score
(100 groups) of the learned ID prompts against the OOD context applied to M_test = 10,000
negatives re-mined for the test label set.

Training data, ``data`` (the paper trains on images: SDXL-generated and LAION-retrieved ones for
the ID and negative labels, the official list ``train_imagenet_idood_last1k_syn2_dedup.txt``;
these are not available offline):
- ``text`` (default): no images at all; the frozen text features of every label under the 7 TIP
  templates stand in for image features, with the same mixing. Not the paper's data, nor the
  official ``textmultice`` branch (plain CE on sampled text features, no mixing).
- ``real``: real images but not the paper's: the protocol's few-shot ID images, plus for each
  negative label the ``per_label`` images of an unlabeled pool (``pool_list``, disjoint from the
  OOD test sets) most similar to "a photo of a {label}." whose argmax over all labels is that label.
- ``list``: a user image list in the official format (``path label``: 0..C-1 ID, C.. negatives);
  the paper's own images when that list is the authors'.
The record's ``train.paper_data`` says which: ``false`` for ``text`` and ``real`` (a leaderboard
row must not pass for the paper's setting), ``null`` for ``list`` (unknown: the user's list).
The paper's beta (Q1) has no consistent code counterpart and is not implemented. Model selection
(``select="val_acc"``) uses ID accuracy on the protocol's val split only, never an OOD test set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.data.manifest import read_manifest
from oodbench.detectors.base import (
    GLOBAL,
    TRAIN,
    Context,
    Detector,
    DetectorParams,
    Recipe,
    require,
)
from oodbench.detectors.krnft import least_similar_words
from oodbench.detectors.neglabel import (
    corpus_sha256,
    group_permutation,
    load_corpus,
    negative_label_score,
)
from oodbench.errors import ConfigError
from oodbench.registry import DETECTORS
from oodbench.training.fewshot import fewshot_features
from oodbench.training.presets import apply_preset, preset_name, toy_preset
from oodbench.training.prompt_learner import PromptLearner, freeze
from oodbench.training.trainer import TrainConfig, epoch_batch, steps_for_epochs, train_artifact

TIP_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.",
                 "a photo of the large {}.", "a {} in a video game.", "art of the {}.",
                 "a photo of the small {}.")


@dataclass
class LAPTParams(DetectorParams):
    """Released-checkpoint / paper defaults (n_ctx 4, 1k train / 10k test negatives, 100 groups)."""

    preset: Literal["auto", "paper", "toy"] = "auto"
    data: Literal["text", "real", "list"] = "text"
    shots: int = 16
    split_seed: int | None = None
    per_label: int = 2
    pool_list: str | None = None
    pool_root: str | None = None
    image_list: str | None = None
    image_root: str | None = None
    n_ctx: int = 4
    n_neg_train: int = 1000
    n_neg_test: int = 10000
    corpus: str = "auto"
    alpha: float = 1.0
    cross_modal: bool = True
    cross_distribution: bool = True
    plain_loss: bool = False
    epochs: float = 10.0
    batch_size: int = 32
    lr: float = 0.01
    weight_decay: float = 1e-5
    temperature: float | None = None
    test_groups: int = 100
    group_seed: int = 0
    select: Literal["last", "val_acc"] = "last"
    max_steps: int | None = None

    def validate(self) -> None:
        require(self.n_ctx > 0, "n_ctx", "must be positive")
        require(self.n_neg_train > 0 and self.n_neg_test > 0, "n_neg_train",
                "n_neg_train and n_neg_test must be positive")
        require(self.alpha > 0, "alpha", "must be > 0")
        require(self.epochs > 0 and self.batch_size > 0 and self.lr > 0, "lr",
                "epochs, batch_size and lr must be positive")
        require((self.temperature is None or self.temperature > 0) and self.test_groups >= 1,
                "temperature", "temperature must be > 0 (or null: 1 / the backbone's logit "
                "scale, as the official code) and test_groups >= 1")
        require(self.data != "real" or self.pool_list is not None, "pool_list",
                "data='real' needs pool_list: an image list of unlabeled images disjoint from "
                "the OOD test sets, to retrieve images for the negative labels")
        require(self.data != "list" or self.image_list is not None, "image_list",
                "data='list' needs image_list ('path label' lines, labels 0..C+M-1)")
        require(self.max_steps is None or self.max_steps > 0, "max_steps", "must be positive")


TOY_PRESET = toy_preset("lapt")  # benchmarks/toy/select_presets.py writes it


@DETECTORS.register("lapt")
class LAPT(Detector):
    """LAPT: learned shared ID and negative prompt contexts, grouped NegLabel score."""

    name = "lapt"
    version = "3"  # 3: one mixing lam per batch, cross-distribution partner within the batch
    Params = LAPTParams
    needs = frozenset({GLOBAL, TRAIN})
    recipe = Recipe(
        source="YBZh/OpenOOD-VLM: openood/networks/clip_coop_negprompt.py, openood/"
               "preprocessors/test_preprocessor.py, configs/datasets/imagenet/imagenet_traditional"
               "_four_ood.yml (pre_size 256), scripts/ood/lapt/test.sh (interpolation bilinear)",
        interpolation="bilinear", resize_ratio=256 / 224,
        prompts="'[4 ctx] {c}.' ID and '[4 ctx] {w}.' negative, shared contexts",
        precision="not checked",
        negatives="OpenOOD-VLM's noun-first corpus rule; 1,000 train / 10,000 test negatives",
        groups="100 test groups", seeds="0")
    precision = "fp32"
    precision_reason = ("trains prompt contexts through the backbone's text tower on its image "
                        "features: full precision for training")

    def setup(self, ctx: Context) -> None:
        p = self.effective = apply_preset(self.params, TOY_PRESET, ctx.protocol.name)
        model, tok = ctx.backbone.model, ctx.backbone.tokenizer
        freeze(model)
        corpus, nouns, adjectives = load_corpus(p.corpus, ctx.protocol.name, rule="noun-first")
        names = ctx.protocol.training_classnames()
        neg_words = [w for w, _ in least_similar_words(ctx.encode_text, names, nouns, adjectives,
                                                       p.n_neg_train)]
        gen = torch.Generator().manual_seed(ctx.seed)
        id_pl = PromptLearner(model, tok, names, n_ctx=p.n_ctx, generator=gen)
        ood_pl = PromptLearner(model, tok, neg_words, n_ctx=p.n_ctx, generator=gen)
        learner = torch.nn.ModuleDict({"id": id_pl, "ood": ood_pl}).to(ctx.device)
        feats, labels, data_info = self.training_samples(ctx, p, names, neg_words)
        info = self._train(ctx, p, learner, feats, labels, names, neg_words, data_info)
        ctx.info["train"] = {"preset": preset_name(self.params, p),
                             "effective_params": p.to_dict(), **data_info, **info}
        test_words = neg_words if p.n_neg_test == p.n_neg_train and list(ctx.classnames) == \
            list(names) else [w for w, _ in least_similar_words(
                ctx.encode_text, list(ctx.classnames), nouns, adjectives, p.n_neg_test)]
        with torch.no_grad():
            self.t_id = self._prompts(model, tok, list(ctx.classnames), id_pl, ctx.device)
            self.t_neg = self._prompts(model, tok, test_words, ood_pl, ctx.device)
        self.perm = group_permutation(len(self.t_neg), p.test_groups, p.group_seed)
        # the official test logits are logit_scale.exp() x cosine (clip_coop_negprompt.py)
        self.temperature = (p.temperature if p.temperature is not None
                            else 1.0 / float(model.logit_scale.detach().exp()))
        ctx.info["temperature"] = self.temperature
        ctx.info["negatives"] = {"corpus": corpus, "corpus_rule": "noun-first",
                                 "corpus_sha256": corpus_sha256(nouns, adjectives),
                                 "n_train": len(neg_words),
                                 "n_test": len(test_words), "first_test": test_words[:3]}
        self.ready = True

    @staticmethod
    def _prompts(model, tok, words, trained: PromptLearner, device, chunk: int = 1000):
        """Features of ``words`` under a trained shared context (in chunks: 10k prompts at test)."""
        out = []
        for i in range(0, len(words), chunk):
            pl = PromptLearner(model, tok, words[i:i + chunk], n_ctx=trained.n_ctx).to(device)
            pl.ctx.data.copy_(trained.ctx.data)
            out.append(pl().float())
        return torch.cat(out)

    def training_samples(self, ctx, p, names, neg_words) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(N, D) features and (N,) labels in [0, C + M) of the training samples, and origin."""
        labels_all = list(names) + list(neg_words)
        if p.data == "text":
            prompts = [t.format(w) for w in labels_all for t in TIP_TEMPLATES]
            f = ctx.encode_text(prompts).float().clone()
            y = torch.arange(len(labels_all)).repeat_interleave(len(TIP_TEMPLATES))
            return f, y, {"data": "text", "paper_data": False, "n_samples": len(y),
                          "data_note": "TIP-template text features stand in for images"}
        if p.data == "list":
            root = Path(p.image_root or ".").expanduser()
            m = read_manifest(Path(p.image_list).expanduser(), root)
            if max(m.labels) >= len(labels_all):
                raise ConfigError(f"image_list {p.image_list}: label {max(m.labels)} >= the "
                                  f"{len(labels_all)} ID + negative labels")
            f = self._encode(ctx, m)
            return f, torch.tensor(m.labels), {"data": "list", "paper_data": None,
                                               "image_list": p.image_list, "n_samples": len(m),
                                               "data_note": "the user's image list"}
        split, arrays = fewshot_features(ctx, p.shots, ctx.seed if p.split_seed is None
                                         else p.split_seed, {GLOBAL})
        pool = read_manifest(Path(p.pool_list).expanduser(), Path(p.pool_root or ".").expanduser())
        pool_f = self._encode(ctx, pool)
        text = ctx.encode_text([f"a photo of a {w}." for w in labels_all]).float()
        sims = pool_f @ text.T
        best = sims.argmax(dim=1)
        picked = []
        for j in range(len(names), len(labels_all)):
            order = torch.argsort(sims[:, j], descending=True)
            good = order[best[order] == j][:p.per_label]
            picked.append(good if len(good) == p.per_label else order[:p.per_label])
        idx = torch.cat(picked)
        neg_y = torch.arange(len(names), len(labels_all)).repeat_interleave(p.per_label)
        f = torch.cat([torch.as_tensor(arrays[GLOBAL]).float().to(pool_f.device), pool_f[idx]])
        y = torch.cat([torch.as_tensor(arrays["labels"]).long(), neg_y])
        return f, y, {"data": "real", "paper_data": False, "split": split.describe(),
                      "pool_list": p.pool_list, "n_samples": len(y),
                      "data_note": "few-shot ID images + images retrieved from pool_list"}

    @staticmethod
    def _encode(ctx, manifest) -> torch.Tensor:
        arr = ctx.manifest_features(manifest, [GLOBAL])[GLOBAL]
        return torch.as_tensor(np.asarray(arr)).float().to(ctx.device)

    def _train(self, ctx, p, learner, feats, labels, names, neg_words, data_info) -> dict:
        model = ctx.backbone.model
        scale = float(model.logit_scale.exp())
        feats, labels = feats.to(ctx.device), labels.to(ctx.device)
        n_id, n_all = len(names), len(names) + len(neg_words)
        tip = ctx.encode_text([t.format(w) for w in list(names) + list(neg_words)
                               for t in TIP_TEMPLATES]).float().clone().view(n_all, -1,
                                                                               feats.shape[1])
        n = len(labels)

        def loss_fn(step, gen):
            idx = epoch_batch(n, p.batch_size, step, ctx.seed).to(ctx.device)
            t = torch.cat([learner["id"](), learner["ood"]()])
            f, y = feats[idx], labels[idx]
            loss = f.new_zeros(())
            if p.plain_loss or not (p.cross_modal or p.cross_distribution):
                loss = loss + F.cross_entropy(scale * F.normalize(f, dim=-1) @ t.T, y)
            mix = lapt_mix(f, y, tip, n_id, p.alpha, gen, p.cross_modal, p.cross_distribution)
            if "z_cm" in mix:
                loss = loss + F.cross_entropy(scale * mix["z_cm"] @ t.T, y)
            if "z_cd" in mix:
                logp = torch.log_softmax(scale * mix["z_cd"] @ t.T, dim=-1)
                loss = loss - (mix["target_cd"] * logp).sum(-1).mean()
            return loss

        steps = steps_for_epochs(n, p.batch_size, p.epochs)
        cfg = TrainConfig(steps=steps, lr=p.lr, optimizer="sgd", nesterov=True,
                          weight_decay=p.weight_decay, min_lr=p.lr * 1e-8, seed=ctx.seed,
                          max_steps=p.max_steps, checkpoint_every=50,
                          eval_every=steps_for_epochs(n, p.batch_size, 1.0)
                          if p.select == "val_acc" else 0)
        val_fn = self._val_fn(ctx, learner) if p.select == "val_acc" else None
        spec = {"backbone": ctx.backbone.key(), "data": data_info,
                "classes": _sha(names), "negatives": _sha(neg_words),
                "params": {k: v for k, v in p.to_dict().items()
                           if k not in ("preset", "n_neg_test", "test_groups", "temperature")},
                "version": self.version}
        return train_artifact(learner, loss_fn, cfg, name=self.name, spec=spec,
                              artifact_dir=ctx.artifact_dir, device=ctx.device, quiet=ctx.quiet,
                              val_fn=val_fn,
                              steps_per_epoch=steps_for_epochs(n, p.batch_size, 1.0),
                              images_per_step=min(p.batch_size, n))

    @staticmethod
    def _val_fn(ctx, learner):
        """ID accuracy of the learned ID prompts on the protocol's val split (never a test set)."""
        val = ctx.split_features("val", frozenset({GLOBAL}))
        v = torch.as_tensor(np.asarray(val[GLOBAL])).float().to(ctx.device)
        y = torch.as_tensor(val["labels"]).to(ctx.device)
        return lambda: float(((v @ learner["id"]().T).argmax(1) == y).float().mean())

    def score_and_predict(self, feats):
        v = feats[GLOBAL].float()
        li, ln = v @ self.t_id.T, v @ self.t_neg.T
        p = self.effective
        return (negative_label_score(li, ln, self.temperature, p.test_groups, self.perm),
                li.argmax(1))

    def score(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_and_predict(feats)[0]

    def predict(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return (feats[GLOBAL].float() @ self.t_id.T).argmax(1)


def lapt_mix(f: torch.Tensor, y: torch.Tensor, tip: torch.Tensor, n_id: int, alpha: float,
             gen: torch.Generator, cross_modal: bool = True,
             cross_distribution: bool = True) -> dict[str, torch.Tensor]:
    """LAPT's two mixings of one batch of (B, D) features ``f`` with labels ``y`` in [0, C + M).

    - cross-modal (``z_cm``): normalize(lam f + (1 - lam) tip[y, k]) with a random TIP template k
      per sample (``tip``: (C + M, 7, D) frozen text features), target y;
    - cross-distribution (``z_cd``, ``target_cd``, ``partner``): each ID sample (y < ``n_id``)
      mixed with a random negative sample of the batch, each negative sample with a random ID
      sample of the batch (``partner``: batch positions), normalize(lam f + (1 - lam) f[partner])
      with the soft target lam e_y + (1 - lam) e_y[partner]; a batch without both kinds pairs
      each sample with itself, as the official ``create_mixed_indices``.
    Each mixing draws one lam ~ Beta(alpha, alpha) for the whole batch (``lam_cm``, ``lam_cd``),
    as the official ``mixup_data`` (one ``np.random.beta`` per call); all draws come from ``gen``.
    """
    out: dict[str, torch.Tensor] = {}
    b, dev = len(y), f.device
    if cross_modal:
        lam = beta_draws(alpha, 1, gen)[0]
        tpl = torch.randint(0, tip.shape[1], (b,), generator=gen).to(dev)
        out["z_cm"] = F.normalize(lam * f + (1 - lam) * tip[y, tpl], dim=-1)
        out["lam_cm"] = lam
    if cross_distribution:
        is_id = (y < n_id).cpu()
        ids, negs = torch.nonzero(is_id)[:, 0], torch.nonzero(~is_id)[:, 0]
        partner = torch.arange(b)
        if len(ids) and len(negs):
            partner[ids] = negs[torch.randint(0, len(negs), (len(ids),), generator=gen)]
            partner[negs] = ids[torch.randint(0, len(ids), (len(negs),), generator=gen)]
        lam = beta_draws(alpha, 1, gen)[0]
        partner = partner.to(dev)
        n_all = tip.shape[0]
        out["z_cd"] = F.normalize(lam * f + (1 - lam) * f[partner], dim=-1)
        out["target_cd"] = (lam * F.one_hot(y, n_all).float()
                            + (1 - lam) * F.one_hot(y[partner], n_all).float())
        out["partner"], out["lam_cd"] = partner, lam
    return out


def beta_draws(alpha: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """n draws of Beta(alpha, alpha) from ``gen`` (ratio of gammas): resumed runs repeat them."""
    x, y = _gamma(alpha, n, gen), _gamma(alpha, n, gen)
    return x / (x + y)


def _gamma(a: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """Gamma(a, 1) draws from ``gen`` (sum of exponentials for integer a, else Marsaglia-Tsang)."""
    if float(a).is_integer():
        u = torch.rand(n, int(a), generator=gen).clamp_min(1e-12)
        return -torch.log(u).sum(dim=1)
    d = (a if a >= 1 else a + 1) - 1 / 3
    c = 1 / (9 * d) ** 0.5
    out = torch.empty(n)
    for i in range(n):
        while True:
            z = float(torch.randn(1, generator=gen))
            v = (1 + c * z) ** 3
            u = float(torch.rand(1, generator=gen))
            if v > 0 and np.log(max(u, 1e-300)) < 0.5 * z * z + d - d * v + d * np.log(v):
                out[i] = d * v
                break
    if a < 1:
        out = out * torch.rand(n, generator=gen).clamp_min(1e-12) ** (1 / a)
    return out


def _sha(items) -> str:
    return hashlib.sha256(json.dumps(list(items)).encode()).hexdigest()[:16]

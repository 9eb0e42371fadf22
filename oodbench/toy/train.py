"""Contrastive pretraining of the toy CLIP on generated (image, caption) pairs, then an evaluation.

Usage: python -m oodbench.toy.train [--steps N --cooldown-from K | --minutes M] [--out PATH]

Without arguments it reproduces the shipped weights: 420 steps, the learning rate constant to
step 300 and then decayed linearly (world v3 is harder than v2: without the decay, 300 steps
left ID accuracy at 0.78). With --minutes the step count is fixed after timing
the first steps and printed; rerunning with --steps N --cooldown-from K and the same seed
reproduces a run exactly (on the same torch build and thread count).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oodbench.backbones.base import encode_tokens
from oodbench.features.local import global_and_local
from oodbench.toy import generator as gen
from oodbench.toy import world
from oodbench.toy.model import (
    TOY_MODEL_CONFIG,
    WEIGHTS_PATH,
    build_toy_clip,
    load_toy_clip,
    preprocess_array,
    toy_tokenizer,
)

SHIPPED_STEPS = 420
SHIPPED_COOLDOWN_FROM = 300  # see the module docstring
DENSE_TOP_K = 4  # patches per class in the dense (v-path) class loss
SHIPPED_DENSE_WEIGHT = 1.0
PRETRAIN_CLASSES: tuple[str, ...] = gen.SHAPES + gen.NO_OBJECT_KINDS
# Attribute columns used to decide which captions of a batch truthfully describe which images.
ATTR_FIELDS = ("kind", "size", "colour", "fill", "position", "background", "colour2", "clutter",
               "patch")
_TEMPLATES = (("a photo of a", 0.7), ("a picture of a", 0.15), ("a", 0.15))
_OPTIONAL = ("size", "colour", "fill", "position", "background", "clutter", "patch")
NEGATION_P = 0.3  # share of object captions that name something the image lacks (", no stripes")
_NO_PATCH = len(gen.PATCH_KINDS)


def _index(values: tuple[str, ...] | list[str], v: str) -> int:
    """Position of v in values."""
    return list(values).index(v)


def _template(rng: np.random.Generator) -> str:
    """Random caption prefix, mostly the evaluation template."""
    names, probs = zip(*_TEMPLATES, strict=True)
    return names[rng.choice(len(names), p=probs)]


def _period(caption: str, rng: np.random.Generator) -> str:
    """Half the captions end with a full stop, so that prompts like "a photo of a {}." (CLIP's,
    Local-Prompt's, KR-NFT's) are as familiar to the toy text tower as to a web-trained one."""
    return caption + "." if rng.random() < 0.5 else caption


def object_sample(rng: np.random.Generator) -> tuple[np.ndarray, str, list[int], list[bool], int]:
    """One object image with a caption mentioning a random subset of its attributes and, at
    times, one thing it lacks: "no clutter" / "no patch" pin the clutter / patch columns, "no
    stripes" (a fill) is the last, negated-fill column (-1: none)."""
    shape = gen.SHAPES[rng.integers(len(gen.SHAPES))]
    a = gen.sample_object_attributes(shape, rng)
    img = gen.draw_object(a, rng)
    keep = {k: bool(rng.random() < 0.5) for k in _OPTIONAL}
    keep["fill"] = keep["fill"] and a["fill"] != "solid"
    keep["clutter"] = keep["clutter"] and a["clutter"]
    keep["patch"] = keep["patch"] and a["patch"] is not None
    negate = None
    if rng.random() < NEGATION_P:
        options = gen.true_negations(a)
        negate = options[rng.integers(len(options))]
    cap = _period(gen.object_caption(a, keep, prefix=_template(rng), negate=negate), rng)
    bg = _index(list(gen.BACKGROUND_COLOURS), a["background"]) * 2 + int(a["gradient"])
    patch = _NO_PATCH if a["patch"] is None else _index(list(gen.PATCH_KINDS), a["patch"])
    fill_words = list(gen.NEGATABLE_FILLS.values())
    neg_fill = (_index(gen.FILLS, list(gen.NEGATABLE_FILLS)[fill_words.index(negate)])
                if negate in fill_words else -1)
    attrs = [
        _index(PRETRAIN_CLASSES, shape),
        _index(gen.SIZES, a["size"]),
        _index(list(gen.COLOURS), a["colour"]),
        _index(gen.FILLS, a["fill"]),
        _index(gen.POSITIONS, a["position"]),
        bg,
        -1,
        int(a["clutter"]),
        patch,
        neg_fill,
    ]
    mention = [
        True,
        keep["size"],
        keep["colour"],
        keep["fill"],
        keep["position"],
        keep["background"],
        False,
        keep["clutter"] or negate == "clutter",
        keep["patch"] or negate == "patch",
        False,
    ]
    return img, cap, attrs, mention, attrs[0]


def no_object_sample(
    rng: np.random.Generator,
) -> tuple[np.ndarray, str, list[int], list[bool], int]:
    """One no-object image with a caption using a random synonym and optional colours."""
    kind = gen.NO_OBJECT_KINDS[rng.integers(len(gen.NO_OBJECT_KINDS))]
    a = gen.sample_no_object_attributes(kind, rng)
    img = gen.draw_no_object(a, rng)
    phrase = int(rng.integers(len(gen.NO_OBJECT_PHRASES[kind])))
    colours = bool(rng.random() < 0.5) and kind not in gen.COLOURLESS_KINDS
    cap = _period(gen.no_object_caption(a, phrase, colours, prefix=_template(rng)), rng)
    cols = list(gen.COLOURS)
    attrs = [
        _index(PRETRAIN_CLASSES, kind),
        -1,
        _index(cols, a["colour"]),
        -1,
        -1,
        -1,
        _index(cols, a["colour2"]),
        -1,
        -1,
        -1,
    ]
    mention = [True, False, colours, False, False, False, colours and kind != "blank", False,
               False, False]
    return img, cap, attrs, mention, attrs[0]


def make_batch(seed: int, step: int, batch: int, p_object: float = 0.85) -> dict:
    """Deterministic batch number `step`: images, captions, attributes, mention masks, classes."""
    rng = np.random.default_rng([seed, 7919, step])
    samples = [
        object_sample(rng) if rng.random() < p_object else no_object_sample(rng)
        for _ in range(batch)
    ]
    imgs, caps, attrs, mention, cls = zip(*samples, strict=True)
    return {
        "images": torch.from_numpy(np.stack(imgs)),
        "captions": list(caps),
        "attrs": torch.tensor(attrs),
        "mention": torch.tensor(mention),
        "classes": torch.tensor(cls),
    }


def positives(attrs: torch.Tensor, mention: torch.Tensor) -> torch.Tensor:
    """pos[i, j]: caption j truly describes image i (all attributes it mentions match, and the
    fill it negates, last column, is not image i's)."""
    cols = len(ATTR_FIELDS)
    same = attrs[:, None, :cols] == attrs[None, :, :cols]
    pos = (same | ~mention[None, :, :cols]).all(-1)
    fill = ATTR_FIELDS.index("fill")
    neg = attrs[None, :, cols]
    return pos & ((neg < 0) | (attrs[:, None, fill] != neg))


def multi_positive_nce(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE, every truthful caption a positive (duplicates are not negatives)."""
    neg_inf = torch.finfo(logits.dtype).min
    i2t = logits.logsumexp(1) - logits.masked_fill(~pos, neg_inf).logsumexp(1)
    t2i = logits.logsumexp(0) - logits.masked_fill(~pos, neg_inf).logsumexp(0)
    return (i2t.mean() + t2i.mean()) / 2


class Tokens:
    """Caching wrapper around the toy tokenizer (captions repeat a lot)."""

    def __init__(self) -> None:
        self.tok = toy_tokenizer()
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """Token ids (N, context_length) of the texts."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, row in zip(missing, self.tok(missing), strict=True):
                self.cache[t] = row
        return torch.stack([self.cache[t] for t in texts])


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on gains, biases, embeddings and the logit scale."""
    no_decay = ("positional_embedding", "class_embedding", "token_embedding", "logit_scale")
    decay, rest = [], []
    for name, p in model.named_parameters():
        (rest if p.ndim < 2 or any(k in name for k in no_decay) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_at(step: int, peak: float, warmup: int, cooldown: tuple[int, int] | None) -> float:
    """Warmup-stable-decay: warmup, constant peak, linear decay to 2% from cooldown[0] to [1]."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if cooldown is None or step < cooldown[0]:
        return peak
    frac = (step - cooldown[0]) / max(1, cooldown[1] - cooldown[0])
    return peak * max(0.02, 1.0 - frac)


def plan_cooldown(step: int, left_s: float, step_s: float) -> tuple[int, int]:
    """(cooldown start, last step) so that the decay phase fills the remaining time budget."""
    return step, step + max(50, int(left_s / step_s))


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC of ID (positive, higher score) vs OOD, ties counted half (Mann-Whitney)."""
    s = np.concatenate([id_scores, ood_scores])
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inv, ranks) / counts)[inv]
    n1, n0 = len(id_scores), len(ood_scores)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@torch.no_grad()
def image_features(model, images: np.ndarray, batch: int = 250) -> torch.Tensor:
    """L2-normalised image features of a uint8 image array."""
    chunks = [
        model.encode_image(
            preprocess_array(torch.from_numpy(images[i : i + batch])), normalize=True
        )
        for i in range(0, len(images), batch)
    ]
    return torch.cat(chunks)


@torch.no_grad()
def class_text_features(
    model, classes: tuple[str, ...], template: str = "a photo of a {}"
) -> torch.Tensor:
    """L2-normalised text features of the prompt of each class."""
    return model.encode_text(toy_tokenizer()([template.format(c) for c in classes]), normalize=True)


@torch.no_grad()
def local_accuracy(model, images: np.ndarray, labels: np.ndarray, txt: torch.Tensor) -> float:
    """Zero-shot accuracy read from the v-path patches alone (best patch per class)."""
    _, local = global_and_local(model.visual, preprocess_array(torch.from_numpy(images)))
    logits = F.normalize(local.float(), dim=-1) @ txt.T
    return float((logits.amax(dim=1).argmax(-1).numpy() == labels).mean())


def mcm_scores(img: torch.Tensor, txt: torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    """MCM score: max softmax over raw ID-class cosines divided by T."""
    return (img @ txt.T / temperature).softmax(-1).max(-1).values.numpy()


@functools.cache
def _eval_split(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rendered world split, cached so that periodic evaluations do not re-render it."""
    return world.render_split(split, seed)


def evaluate(model, seed: int = 0, fraction: float = 1.0) -> dict:
    """Zero-shot accuracy and MCM AUROCs on the toy world test splits (random fraction of each)."""
    model.eval()
    feats, labels = {}, {}
    for split in world.SPLITS:
        if split.endswith("_train") or split in world.VAL_SPLITS:
            continue
        imgs, labs = _eval_split(split, seed)
        keep = np.random.default_rng(0).permutation(len(imgs))[: max(1, int(len(imgs) * fraction))]
        feats[split], labels[split] = image_features(model, imgs[keep]), labs[keep]
    out = {}
    for proto, id_split, near, classes in (
        ("toy", "id_test", "near", world.ID_CLASSES),
        ("toy-unseen", "unseen_id_test", "unseen_near", world.UNSEEN_ID_CLASSES),
    ):
        txt = class_text_features(model, classes)
        acc = (feats[id_split] @ txt.T).argmax(-1).numpy() == labels[id_split]
        s_id = mcm_scores(feats[id_split], txt)
        out[proto] = {
            "acc": float(acc.mean()),
            "near_auroc": auroc(s_id, mcm_scores(feats[near], txt)),
            "far_auroc": auroc(s_id, mcm_scores(feats["far"], txt)),
        }
    txt = class_text_features(model, world.ID_CLASSES)
    out["toy"]["local_acc"] = local_accuracy(model, *_eval_split("id_test", seed), txt)
    out["toy-shift"] = {
        s: float(((feats[f"shift_{s}"] @ txt.T).argmax(-1).numpy() == labels[f"shift_{s}"]).mean())
        for s in gen.SHIFT_STYLES
    }
    model.train()
    return out


def aux_heads(embed_dim: int) -> nn.ModuleDict:
    """Training-only linear class heads on image and caption embeddings (not saved).

    They break the symmetric start of CLIP training: without them neither tower separates the
    shapes, because the other tower gives it no shape signal yet.
    """
    n = len(PRETRAIN_CLASSES)
    return nn.ModuleDict({"image": nn.Linear(embed_dim, n), "text": nn.Linear(embed_dim, n)})


def dense_class_loss(local: torch.Tensor, prompts: torch.Tensor, cls: torch.Tensor,
                     scale: torch.Tensor, k: int = DENSE_TOP_K) -> torch.Tensor:
    """CE of class logits read from the patches: per class, the mean of its top-k patch logits.

    ``local`` (B, P, D) and ``prompts`` (C, D) are L2-normalised. Real CLIP's v-path patches are
    text-aligned (what GL-MCM, LoCoOp and Local-Prompt rely on); a 2-layer toy ViT's are not
    unless its pretraining asks for it, which this term does.
    """
    logits = scale * local @ prompts.T  # (B, P, C)
    per_class = logits.topk(min(k, logits.shape[1]), dim=1).values.mean(dim=1)
    return F.cross_entropy(per_class, cls)


def train_step(model, heads, opt, tokens: Tokens, batch: dict, prompts: torch.Tensor, bf16=True,
               dense_weight: float = 0.0):
    """One step: caption contrastive + class-prompt + auxiliary class losses (bf16 autocast),
    plus the patch-level class loss on the v-path local features when ``dense_weight`` > 0."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        img_raw, local = global_and_local(model.visual, preprocess_array(batch["images"]))
        txt_raw = encode_tokens(model, tokens(batch["captions"]))
        prm = encode_tokens(model, prompts)
    img_raw, txt_raw = img_raw.float(), txt_raw.float()
    img, txt, prm = (F.normalize(f.float(), dim=-1) for f in (img_raw, txt_raw, prm))
    scale = model.logit_scale.exp()
    cls = batch["classes"]
    loss_cap = multi_positive_nce(scale * img @ txt.T, positives(batch["attrs"], batch["mention"]))
    loss_cls = F.cross_entropy(scale * img @ prm.T, cls)
    loss_aux = F.cross_entropy(heads["image"](img_raw), cls) + F.cross_entropy(
        heads["text"](txt_raw), cls
    )
    loss = loss_cap + loss_cls + 0.5 * loss_aux
    if dense_weight > 0:
        loss = loss + dense_weight * dense_class_loss(F.normalize(local.float(), dim=-1), prm,
                                                      cls, scale)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(heads.parameters()), 1.0)
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss.item()


def class_prompts() -> list[str]:
    """Canonical prompt of every pretraining class: shapes and no-object kinds."""
    return [f"a photo of a {s}" for s in gen.SHAPES] + [
        f"a photo of a {gen.NO_OBJECT_PHRASES[k][0]}" for k in gen.NO_OBJECT_KINDS
    ]


def save_weights(model, out: Path, meta: dict) -> None:
    """Write fp16 safetensors weights and a JSON record next to them, each atomically."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, out)
    meta = {**meta, "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}  # checked at load
    js = out.with_suffix(".json")
    tmp_js = js.with_name(js.name + ".tmp")
    tmp_js.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_js, js)


def main(argv: list[str] | None = None) -> dict:
    """Train the toy CLIP, evaluate it, save weights; returns the record saved next to them."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--minutes", type=float, default=None, help="time budget instead of a step count"
    )
    ap.add_argument(
        "--steps", type=int, default=SHIPPED_STEPS, help="exact number of steps (reproducible)"
    )
    ap.add_argument(
        "--cooldown-from", type=int, default=SHIPPED_COOLDOWN_FROM,
        help="LR decay start (--cooldown-from N with --steps N: no decay)"
    )
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dense-weight", type=float, default=SHIPPED_DENSE_WEIGHT,
                    help="weight of the patch-level (v-path) class loss")
    ap.add_argument("--fp32", action="store_true", help="disable bf16 autocast")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (one: a shared 2-core machine runs it fastest)")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    ap.add_argument("--init", type=Path, default=None, help="start from these weights")
    ap.add_argument("--first-batch", type=int, default=0, help="index of the first data batch")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    model = build_toy_clip().train()
    if args.init is not None:
        model = load_toy_clip(args.init).train()
        print(f"continuing from {args.init}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"toy CLIP: {n_params / 1e6:.2f}M parameters, batch {args.batch}, seed {args.seed}",
        flush=True,
    )
    heads = aux_heads(TOY_MODEL_CONFIG["embed_dim"])
    groups = param_groups(model, args.weight_decay)
    groups[0]["params"] += list(heads.parameters())
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    tokens = Tokens()
    prompt_tokens = tokens(class_prompts())
    cooldown = None
    if args.minutes is None:
        cooldown = (args.steps if args.cooldown_from is None else args.cooldown_from, args.steps)
    else:
        budget_s = args.minutes * 60 - 90  # keep time for the final evaluation and saving
    step, gen_s, times = 0, 0.0, []
    while cooldown is None or step < cooldown[1]:
        elapsed = time.time() - t0
        if cooldown is None and elapsed >= 0.78 * budget_s:
            cooldown = plan_cooldown(step, budget_s - elapsed, float(np.mean(times[-50:])))
            print(f"cooldown planned: steps {cooldown[0]} -> {cooldown[1]}", flush=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr, args.warmup, cooldown)
        ts = time.time()
        batch = make_batch(args.seed, args.first_batch + step, args.batch)
        gen_s += time.time() - ts
        loss = train_step(model, heads, opt, tokens, batch, prompt_tokens, not args.fp32,
                          args.dense_weight)
        times.append(time.time() - ts)
        step += 1
        if step % 25 == 0:
            print(
                f"step {step}/{cooldown[1] if cooldown else '?'} loss {loss:.3f} scale "
                f"{model.logit_scale.exp().item():.1f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{np.mean(times[-25:]):.2f} s/step elapsed {(time.time() - t0) / 60:.1f} min "
                f"(data {gen_s:.0f}s)",
                flush=True,
            )
        if args.eval_every and step % args.eval_every == 0:
            print(f"  eval@{step}: {json.dumps(evaluate(model, fraction=0.2))}", flush=True)
    train_s = time.time() - t0
    results = evaluate(model)
    print(
        f"trained {step} steps in {train_s / 60:.1f} min; final eval:\n"
        f"{json.dumps(results, indent=1)}",
        flush=True,
    )
    meta = {
        "model_config": TOY_MODEL_CONFIG,
        "seed": args.seed,
        "steps": step,
        "batch": args.batch,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup": args.warmup,
        "dense_weight": args.dense_weight,
        "threads": args.threads,
        "bf16": not args.fp32,
        "world_version": world.WORLD_VERSION,
        "parameters": n_params,
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
        "eval": results,
        "cooldown_from": cooldown[0],
        "init": None if args.init is None else str(args.init),
        "first_batch": args.first_batch,
        "command": f"python -m oodbench.toy.train --steps {step} --cooldown-from {cooldown[0]} "
        f"--seed {args.seed} --batch {args.batch} --lr {args.lr} --warmup {args.warmup} "
        f"--threads {args.threads} --first-batch {args.first_batch} "
        f"--dense-weight {args.dense_weight}",
    }
    save_weights(model, args.out, meta)
    print(
        f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), "
        f"total {(time.time() - t0) / 60:.1f} min"
    )
    return meta


if __name__ == "__main__":
    main()

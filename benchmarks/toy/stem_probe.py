"""Why the toy CLIP has a normalised conv stem: supervised accuracy of candidate image towers.

Each tower is trained alone (linear head, AdamW, 50 warm-up steps, batch 128) on the toy CLIP's
pretraining batches (34 classes) and the mean top-1 accuracy of the last 50 training batches is
printed. Usage: python benchmarks/toy/stem_probe.py [--steps 200] [--towers plain,bn,cnn,shipped]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oodbench.toy.model import TOY_MODEL_CONFIG, build_toy_clip, preprocess_array
from oodbench.toy.train import PRETRAIN_CLASSES, make_batch


def _convs(channels: list[tuple[int, int, int]], norm) -> list[nn.Module]:
    """3x3 conv + norm + GELU for each (in, out, stride)."""
    out: list[nn.Module] = []
    for ci, co, s in channels:
        out += [nn.Conv2d(ci, co, 3, s, 1, bias=False), norm(co), nn.GELU()]
    return out


def tower(kind: str) -> nn.Module:
    """Image tower producing (N, embed_dim) features."""
    if kind == "shipped":  # the toy CLIP's own image tower
        return build_toy_clip().visual
    if kind == "cnn":  # plain conv net, global average pooling, no transformer
        plan = [(3, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)]
        return nn.Sequential(*_convs(plan, nn.BatchNorm2d), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    cfg = {**TOY_MODEL_CONFIG, "vision_cfg": {**TOY_MODEL_CONFIG["vision_cfg"], "layers": 4}}
    import open_clip

    visual = open_clip.CLIP(**cfg).visual  # 4-layer ViT, 8-pixel patch conv
    width = cfg["vision_cfg"]["width"]
    if kind == "bn":  # earlier candidate: BatchNorm conv stem under the 4-layer ViT
        plan = [(3, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]
        visual.conv1 = nn.Sequential(*_convs(plan, nn.BatchNorm2d), nn.Conv2d(128, width, 1))
    elif kind != "plain":
        raise SystemExit(f"unknown tower {kind!r}; choose from plain, bn, cnn, shipped")
    return visual


def probe(kind: str, steps: int, lr: float) -> tuple[float, float]:
    """(mean accuracy of the last 50 batches, seconds per step) of one tower."""
    torch.manual_seed(0)
    net = tower(kind)
    with torch.no_grad():
        dim = net(preprocess_array(make_batch(0, 0, 2)["images"])).shape[1]
    head = nn.Linear(dim, len(PRETRAIN_CLASSES))
    opt = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=lr, weight_decay=0.05)
    accs, t0 = [], time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50)
        b = make_batch(0, step, 128)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = net(preprocess_array(b["images"]))
        logits = head(feats.float())
        loss = F.cross_entropy(logits, b["classes"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        accs.append((logits.argmax(1) == b["classes"]).float().mean().item())
    return float(np.mean(accs[-50:])), (time.time() - t0) / steps


def main() -> None:
    """Print one row per tower."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--towers", default="plain,bn,cnn,shipped")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lrs = {"cnn": 3e-3}
    print(f"| tower | accuracy, last 50 of {args.steps} steps | s/step |\n|---|---|---|")
    for kind in args.towers.split(","):
        acc, sps = probe(kind, args.steps, lrs.get(kind, 1e-3))
        print(f"| {kind} | {acc:.3f} | {sps:.2f} |", flush=True)


if __name__ == "__main__":
    main()

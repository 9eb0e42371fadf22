"""Local-Prompt's regional losses and diversity term against their written definitions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from oodbench.detectors.local_prompt import (
    LocalPrompt,
    diversity_loss,
    negative_region_loss,
    positive_region_loss,
)
from oodbench.errors import ConfigError

G = torch.Generator().manual_seed(0)
B, R, C, M, K = 2, 6, 4, 3, 2


def test_positive_region_loss_matches_the_formula():
    a, an = torch.randn(B, R, C, generator=G), torch.randn(B, R, M, generator=G)
    y = torch.tensor([1, 3])
    ref = []
    for b in range(B):
        num = a[b, :, y[b]].topk(K).values.exp().sum()
        den = sum(a[b, :, c].topk(K).values.exp().sum() for c in range(C))
        den = den + sum(an[b, :, j].topk(K).values.exp().sum() for j in range(M))
        ref.append(-torch.log(num / den))
    torch.testing.assert_close(positive_region_loss(a, an, y, K), torch.stack(ref).mean())


def test_negative_region_loss_matches_the_formula():
    bi, bn = torch.randn(B, R, C, generator=G), torch.randn(B, R, M, generator=G)
    y = torch.tensor([0, 2])
    ref = []
    for b in range(B):
        regions = bi[b, :, y[b]].topk(K).indices
        num = bn[b, regions].exp().sum()
        id_mass = sum(bi[b, :, c].topk(K).values.exp().sum() for c in range(C))
        ref.append(-torch.log(num / (num + id_mass)))
    torch.testing.assert_close(negative_region_loss(bi, bn, y, K), torch.stack(ref).mean())


def test_diversity_counts_the_diagonal():
    q = torch.randn(5, 8, generator=G)
    n = F.normalize(q, dim=-1)
    off = sum(float(n[i] @ n[j]) for i in range(5) for j in range(5) if i != j)
    assert abs(float(diversity_loss(q)) - (5 + off) / 20) < 1e-5


def test_a_protocol_with_another_label_set_is_refused_by_name():
    same = SimpleNamespace(name="toy", classnames=["a"], training_classnames=lambda: ["a"])
    other = SimpleNamespace(name="toy-unseen", classnames=["c"], training_classnames=lambda: ["a"])
    LocalPrompt({}).check_protocol(same)
    with pytest.raises(ConfigError, match="toy-unseen.*krnft, lapt or locoop"):
        LocalPrompt({}).check_protocol(other)


def test_augment_and_a_fractional_warmup_are_refused_by_name():
    from oodbench.detectors.local_prompt import LocalPromptParams

    assert LocalPromptParams().augment == "official"  # the paper preset redraws every epoch
    with pytest.raises(ConfigError, match="augment='views:0'"):
        LocalPromptParams.from_dict({"augment": "views:0"})
    with pytest.raises(ConfigError, match="warmup_epochs.*whole number"):
        LocalPromptParams.from_dict({"warmup_epochs": 0.5})

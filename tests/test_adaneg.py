"""AdaNeg's memory, step by step on a hand-made stream, and its batch semantics.

The expected memory contents are worked out by hand from the official update rule (OpenOOD-VLM
``ttaprompt_postprocessor.py`` L813-868): slot 0 holds the label's text feature, the fill index
starts at 1 and stops at ``memory_size``; a full label replaces its largest-entropy slot when some
slot's entropy exceeds the newcomer's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oodbench.detectors.adaneg import AdaNeg, FeatureMemory
from oodbench.detectors.base import GLOBAL
from oodbench.features.stream import score_stream

D = 4
E = torch.eye(D)


def tiny_adaneg(memory_size: int = 3, scale: float = 10.0, **params) -> AdaNeg:
    """AdaNeg over 2 ID labels (e0, e1) and 2 negatives (e2, e3), 1 group."""
    det = AdaNeg({"memory_size": memory_size, "groups": 1, "logit_scale": scale,
                  "batch_size": 1, **params})
    det.effective = det.params
    det.n_id, det.text, det.scale = 2, E.clone(), scale
    det.ngroups, det.perm = 1, torch.arange(2)
    det.reset_stream()
    return det


def unit(*v: float) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def entropy_of(logits: list[float]) -> float:
    e = [math.exp(z - max(logits)) for z in logits]
    p = [x / sum(e) for x in e]
    return -sum(q * math.log(q + 1e-8) for q in p)


def step(det: AdaNeg, *rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        return det.score_and_predict({GLOBAL: torch.stack(rows)})


def test_memory_update_step_by_step():
    det = tiny_adaneg()
    a = unit(1.0, 0.2, 0.0, 0.0)  # confident ID, label 0 (score ~0.99 > 0.75)
    step(det, a)
    mem = det.memory
    torch.testing.assert_close(mem.feats[0, 0], E[0])  # slot 0: the text feature
    torch.testing.assert_close(mem.feats[0, 1], a)
    assert mem.index[0] == 2 and mem.index[2] == 1
    ent_a = entropy_of([10 * float(a[0]), 10 * float(a[1])])  # softmax over the ID logits only
    assert mem.entropy[0, 1].item() == pytest.approx(ent_a, rel=1e-5)

    b = unit(1.0, 0.5, 0.0, 0.0)  # label 0 again, larger entropy; fills slot 2: now full
    step(det, b)
    assert mem.index[0] == 3 and torch.equal(mem.feats[0, 2], b)
    torch.testing.assert_close(mem.feats[0, 3], torch.zeros(D))  # slot memory_size stays empty

    c = unit(1.0, 0.0, 0.0, 0.0)  # entropy below b's: replaces b (the largest entropy)
    step(det, c)
    assert torch.equal(mem.feats[0, 2], c) and torch.equal(mem.feats[0, 1], a)
    worse = unit(1.0, 0.9, 0.0, 0.0)  # ID argmax 0 with entropy above every slot: dropped
    conf_v = 1 / (1 + math.exp(torch.logsumexp(10 * E[2:] @ worse, 0).item()
                               - torch.logsumexp(10 * E[:2] @ worse, 0).item()))
    assert conf_v > 0.75  # it is an ID candidate ...
    before = mem.feats.clone()
    step(det, worse)
    assert torch.equal(mem.feats, before)  # ... but the full memory keeps its better slots

    o = unit(0.0, 0.1, 1.0, 0.3)  # confident OOD (score < 0.25): label 2 + 0 -> row 2
    step(det, o)
    assert torch.equal(mem.feats[2, 1], o) and mem.index[2] == 2
    ent_o = entropy_of([10 * float(o[2]), 10 * float(o[3])])  # softmax over the negatives
    assert mem.entropy[2, 1].item() == pytest.approx(ent_o, rel=1e-5)

    mid = unit(1.0, 0.0, 1.0, 0.0)  # ID mass 0.5: neither side, nothing stored
    before = mem.feats.clone()
    step(det, mid)
    assert torch.equal(mem.feats, before)

    # the task-adaptive proxies: normalise(mean of the label's slots)
    proxy = (E[0] + a + c) / 4
    torch.testing.assert_close(mem.task_proxies()[0], proxy / proxy.norm())


def test_a_batch_updates_the_memory_before_it_is_scored():
    """Two images in one batch are scored with the memory both filled; one at a time, the first
    is scored before the second is stored (the documented batch-size dependence)."""
    a, b = unit(1.0, 0.2, 0.0, 0.0), unit(1.0, 0.3, 0.0, 0.5)  # b pulls label 0 towards e3
    together, _ = step(tiny_adaneg(scale=4.0), a, b)  # both stored (ID mass 0.96, 0.84)
    det = tiny_adaneg(scale=4.0)
    first, _ = step(det, a)
    second, _ = step(det, b)
    assert det.memory.index[0] == 3  # both were stored
    assert together[1].item() == pytest.approx(second.item(), abs=1e-6)
    assert abs(together[0].item() - first.item()) > 1e-4


def test_reset_forgets_the_stream_and_score_stream_resets():
    det = tiny_adaneg()
    x = {GLOBAL: np.stack([unit(1.0, 0.2, 0, 0).numpy(), unit(0, 0.1, 1, 0.3).numpy()] * 3)}
    s1, _ = score_stream(det, x, torch.device("cpu"), 2)
    s2, _ = score_stream(det, x, torch.device("cpu"), 2)  # reset at the start: same scores
    np.testing.assert_array_equal(s1, s2)
    s3, _ = score_stream(det, x, torch.device("cpu"), 6)
    assert not np.allclose(s1, s3)  # the batch size enters, as in the official code


def test_sample_adaptive_cosines_equal_the_explicit_proxies():
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    mem = FeatureMemory(text, 4)
    for k, n in ((0, 3), (2, 2), (4, 5)):
        for _ in range(n):
            mem.store(k, torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0),
                      float(torch.rand(1, generator=g)))
    x = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1)
    beta = 5.0
    # L871-891: sa[b, k] = normalise(sum_l exp(-beta (1 - <m_kl, x_b>)) m_kl); cos = <x_b, sa>
    f = mem.feats.double()
    w = torch.exp(-beta * (1 - torch.einsum("kld,bd->bkl", f, x.double())))
    sa = torch.einsum("bkl,kld->bkd", w, f)
    sa = sa / sa.norm(dim=-1, keepdim=True)
    expected = torch.einsum("bd,bkd->bk", x.double(), sa)
    torch.testing.assert_close(mem.sample_cosines(x, beta).double(), expected, atol=1e-6,
                               rtol=0)

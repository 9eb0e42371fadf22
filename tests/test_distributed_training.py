"""CLIPN and CMA under torchrun: two gloo processes compute the one-process global-batch loss.

Each rank encodes its share of the global batch, the loss all-gathers the features and the
trainer averages the gradients; the loss value and the summed gradient must equal those of one
process holding the whole global batch. Float32 sums taken in another order differ by a few ulps
of the O(1) values (~1e-7), so 1e-5 leaves a wide margin while a rank that saw only its own rows
(a 3 x 3 or 4 x 4 loss instead of 7 x 7) misses by ~1e-1.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from oodbench.features import distributed
from oodbench.training.contrastive import (
    average_gradients,
    clipn_loss,
    cma_loss,
    shard_slice,
    step_generator,
)

GLOBAL_BATCH = 7  # odd: the ranks hold 3 and 4 rows
TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grads_after(module: torch.nn.Module, loss_fn, step: int = 0) -> tuple[float, dict]:
    """Loss of ``step`` and the gradient the trainer hands the optimiser (reduced over ranks)."""
    module.zero_grad(set_to_none=True)
    loss, _ = loss_fn(step, 0, step_generator(0, step))
    loss.backward()
    average_gradients([p for p in module.parameters() if p.requires_grad])
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in module.named_parameters()
                                  if p.requires_grad}


def _array_problem(kind: str):
    """A linear map on fixed random inputs feeding CMA's or CLIPN's loss (global rows sliced)."""
    gen = torch.Generator().manual_seed(0)
    x, t, u = (torch.randn(GLOBAL_BATCH, 6, generator=gen) for _ in range(3))
    module = torch.nn.Linear(6, 5)
    with torch.no_grad():
        module.weight.copy_(torch.randn(5, 6, generator=gen))
        module.bias.copy_(torch.randn(5, generator=gen))

    def loss_fn(step, micro, g):
        part = shard_slice(GLOBAL_BATCH)
        img = F.normalize(module(x[part]), dim=-1)
        txt = F.normalize(t[part, :5], dim=-1)
        if kind == "cma":
            return cma_loss(img, txt, 14.0, 0.5)
        return clipn_loss(img, txt, F.normalize(module(u[part]), dim=-1), 14.0)

    return module, loss_fn


def _clipn_toy_problem():
    """The CLIPN detector's own loss on the toy world (toy CLIP, toy captioned images)."""
    from oodbench.backbones import load_backbone
    from oodbench.detectors.clipn import CLIPN, NoTextTower, PairSource

    bb = load_backbone("toy")
    det = CLIPN({})
    det.tower = NoTextTower(bb.model).float()
    with torch.no_grad():  # a non-trivial "no" prompt bank, the same on every rank
        det.tower.prompt_no.copy_(0.02 * torch.randn(det.tower.prompt_no.shape,
                                                     generator=torch.Generator().manual_seed(1)))
    source = PairSource("toy", "toy", bb)
    ctx = SimpleNamespace(backbone=bb, seed=0)
    return det.tower, det.loss_fn(ctx, source, GLOBAL_BATCH)


def _cma_problem(standin_root: str, batch: int = GLOBAL_BATCH):
    """CMA's own loss on stand-in training images through a small CLIP (both towers train)."""
    import copy

    from oodbench.backbones import load_backbone
    from oodbench.data.manifest import scan_image_folder
    from oodbench.detectors.cma import CMA

    bb = load_backbone("tiny-random")
    manifest = scan_image_folder(Path(standin_root), "imagenet/train", "train")
    model = copy.deepcopy(bb.model).float().eval()
    for q in model.parameters():
        q.requires_grad_(True)
    det = CMA({"batch_size": batch})
    names = [f"class {i}" for i in range(max(manifest.labels) + 1)]
    return model, det.loss_fn(SimpleNamespace(backbone=bb, seed=0), model, manifest, names)


def _problems(standin_root: str) -> dict:
    return {"cma-arrays": lambda: _array_problem("cma"),
            "clipn-arrays": lambda: _array_problem("clipn"),
            "clipn-toy": _clipn_toy_problem,
            "cma-images": lambda: _cma_problem(standin_root),
            # 12 images in batches of 11: batch 1 holds one image, rank 0's share is empty
            "cma-tail": lambda: _cma_problem(standin_root, 11)}


ARRAYS = ("cma-arrays", "clipn-arrays")
DETECTORS = ("clipn-toy", "cma-images", "cma-tail")


def _run_all(names, standin_root: str, tmp: Path) -> dict:
    torch.set_num_threads(1)
    out = {}
    problems = _problems(standin_root)
    for name in names:
        module, loss_fn = problems[name]()
        out[name] = _grads_after(module, loss_fn, step=1 if name.endswith("tail") else 0)
    return out


def _rank_main(rank: int, world: int, port: int, names, standin_root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    distributed.init_from_env(torch.device("cpu"))
    assert distributed.world_size() == world
    assert distributed.broadcast(f"rank {rank}") == "rank 0"
    result = _run_all(names, standin_root, Path(out) / f"run{rank}")
    torch.save(result, Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


def _check_two_ranks_equal_one(names, standin_root: str, tmp_path: Path) -> dict:
    single = _run_all(names, standin_root, tmp_path / "single")
    mp.spawn(_rank_main, args=(2, _free_port(), names, standin_root, str(tmp_path)), nprocs=2,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, (loss, grads) in single.items():
        for got_loss, got_grads in (ranks[0][name], ranks[1][name]):
            assert got_loss == pytest.approx(loss, abs=TOL), name
            assert got_grads.keys() == grads.keys()
            for k, g in grads.items():
                scale = max(1.0, float(g.abs().max()))
                torch.testing.assert_close(got_grads[k], g, atol=TOL * scale, rtol=1e-4,
                                           msg=f"{name}: gradient of {k}")
    return single


def test_shards_tile_the_global_batch_in_order():
    for n in (1, 7, 8, 2048):
        for world in (1, 2, 3, 4):
            rows = [i for r in range(world) for i in range(n)[shard_slice(n, r, world)]]
            assert rows == list(range(n))
    assert [shard_slice(7, r, 2) for r in (0, 1)] == [slice(0, 3), slice(3, 7)]


def test_two_gloo_processes_compute_the_one_process_global_batch_loss(tmp_path):
    single = _check_two_ranks_equal_one(ARRAYS, "", tmp_path)
    # the test can fail: a rank that kept to its own rows would compute another loss
    module, _ = _array_problem("cma")
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(GLOBAL_BATCH, 6, generator=gen), torch.randn(GLOBAL_BATCH, 6, generator=gen)
    with torch.no_grad():
        own = cma_loss(F.normalize(module(x[:3]), dim=-1), F.normalize(t[:3, :5], dim=-1),
                       14.0, 0.5)[0]
    assert abs(float(own) - single["cma-arrays"][0]) > 100 * TOL


@pytest.mark.slow
def test_clipn_on_the_toy_world_and_cma_on_images_under_two_processes(standin_root, tmp_path):
    """The detectors' own loss functions: data sharding, crop seeds and prompt picks included."""
    _check_two_ranks_equal_one(DETECTORS, str(standin_root), tmp_path)


@pytest.mark.slow
def test_torchrun_fine_tunes_cma_on_a_global_batch_shared_by_the_ranks(standin_root, tmp_path):
    """A real ``torchrun`` run: one artifact, one set of tuned-feature cache entries, and a record
    saying the global batch was split over two processes."""
    import json
    import subprocess
    import sys

    from oodbench.features.cache import Cache

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "oodbench", "run", "--detector", "cma",
           "--protocol", "imagenet1k-mos4", "--backbone", "tiny-random", "--data-root",
           str(standin_root), "--workers", "0", "--quiet", "--cache-dir", str(tmp_path / "c"),
           "--results-dir", str(tmp_path / "r"), "--param", "cma.max_steps=2", "--param",
           "cma.batch_size=5", "--param", "cma.warmup_steps=1"]
    subprocess.run(cmd, check=True, env=env, timeout=600)
    (record,) = (tmp_path / "r").rglob("cma@*/seed0.json")
    train = json.loads(record.read_text())["train"]
    assert train["world_size"] == 2 and train["global_batch"] == 5
    assert train["per_process_batch"] == 3 and train["precision"] == "fp32"
    tuned = [e for e in Cache(tmp_path / "c").entries()
             if e.level == "images" and e.spec["backbone"].get("finetuned") == "cma"]
    assert len(tuned) == 5  # each test set once: both ranks keyed it by rank 0's artifact sum

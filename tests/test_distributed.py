"""Sharded extraction: two gloo processes on a CPU write the same cache entries as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from oodbench.backbones import load_backbone
from oodbench.data.manifest import scan_image_folder
from oodbench.features import distributed
from oodbench.features.cache import Cache
from oodbench.features.extract import ExtractStats, extract


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _extract(root: Path, cache_dir: Path) -> tuple[np.ndarray, int]:
    torch.set_num_threads(1)
    bb = load_backbone("tiny-random")
    m = scan_image_folder(root, "imagenet/val", "val")
    st = ExtractStats()
    arr = extract(bb, m, ["global"], Cache(cache_dir), batch_size=2, chunk_size=2, workers=0,
                  stats=st)["global"]
    return np.array(arr), st.images_encoded


def _rank_main(rank: int, world: int, port: int, root: str, cache_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")
    assert distributed.world_size() == world and distributed.rank() == rank
    arr, encoded = _extract(Path(root), Path(cache_dir))
    again, encoded_again = _extract(Path(root), Path(cache_dir))  # now a cache hit on every rank
    np.save(Path(out) / f"rank{rank}.npy", arr)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(
        {"encoded": encoded, "encoded_again": encoded_again, "same": bool((arr == again).all())}))
    distributed.shutdown()


def _entries(cache_dir: Path) -> dict[str, str]:
    return {e.key: json.loads((e.path / "meta.json").read_text())["sha256"]
            for e in Cache(cache_dir).entries()}


def test_two_gloo_ranks_equal_one_process(standin_root, tmp_path):
    single, n_single = _extract(standin_root, tmp_path / "single")
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_rank_main, args=(2, _free_port(), str(standin_root), str(tmp_path / "multi"),
                               str(out)), nprocs=2, join=True)
    logs = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert n_single == 12 and [lg["encoded"] for lg in logs] == [6, 6]  # 6 chunks of 2, 3 each
    assert [lg["encoded_again"] for lg in logs] == [0, 0] and all(lg["same"] for lg in logs)
    for r in (0, 1):
        np.testing.assert_array_equal(np.load(out / f"rank{r}.npy"), single)
    # the very same cache entry (key and bytes) a single process writes, and no leftover chunks
    assert _entries(tmp_path / "multi") == _entries(tmp_path / "single")
    assert not list((tmp_path / "multi").glob("**/chunks"))


def test_world_of_one_is_a_no_op():
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    distributed.barrier()
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.slow
def test_torchrun_run_writes_one_set_of_records_equal_to_one_process(standin_root, tmp_path):
    args = ["run", "--detector", "mcm,energy", "--protocol", "imagenet1k-mos4",
            "--backbone", "tiny-random", "--data-root", str(standin_root), "--workers", "0",
            "--batch-size", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = [sys.executable, "-m", "oodbench", *args, "--cache-dir", str(tmp_path / "c1"),
           "--results-dir", str(tmp_path / "r1")]
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "oodbench", *args,
           "--cache-dir", str(tmp_path / "c2"), "--results-dir", str(tmp_path / "r2")]
    for cmd in (one, two):
        subprocess.run(cmd, check=True, env=env, timeout=300)
    recs = {r: sorted(p.relative_to(tmp_path / r) for p in (tmp_path / r).rglob("*.json"))
            for r in ("r1", "r2")}
    assert recs["r1"] == recs["r2"] and len(recs["r1"]) == 2
    for rel in recs["r1"]:
        a = json.loads((tmp_path / "r1" / rel).read_text())
        b = json.loads((tmp_path / "r2" / rel).read_text())
        assert a["metrics"] == b["metrics"]
        sa = np.load((tmp_path / "r1" / rel).with_suffix(".npz"))
        sb = np.load((tmp_path / "r2" / rel).with_suffix(".npz"))
        for k in sa.files:
            np.testing.assert_array_equal(sa[k], sb[k])
    images = {k: v for k, v in _entries(tmp_path / "c1").items()}
    assert set(images) <= set(_entries(tmp_path / "c2"))

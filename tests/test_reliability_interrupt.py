"""Interrupted runs: a killed extraction resumes from its finished chunks to the clean numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import oodbench.io
from oodbench.cli import main
from oodbench.features.cache import Cache

RUN = ["run", "--detector", "mcm,energy", "--protocol", "imagenet1k-mos4", "--backbone",
       "tiny-random", "--workers", "0", "--batch-size", "2", "--chunk-size", "2", "--quiet"]


def run_args(root: Path, cache: Path, results: Path) -> list[str]:
    return [*RUN, "--data-root", str(root), "--cache-dir", str(cache),
            "--results-dir", str(results)]


def record(results: Path, detector: str) -> dict:
    return json.loads((results / f"runs/imagenet1k-mos4/tiny-random/{detector}/seed0.json")
                      .read_text())


def scores(results: Path, detector: str) -> dict[str, np.ndarray]:
    with np.load(results / f"runs/imagenet1k-mos4/tiny-random/{detector}/seed0.npz") as z:
        return {k: z[k] for k in z.files}


def chunk_files(cache: Path) -> set[Path]:
    """Chunks of entries still being built (a complete entry's stale chunks are never read)."""
    return {p for p in cache.glob("images/*/*/chunks/*.npy")
            if not (p.parents[1] / "meta.json").exists()}


def assert_same_results(a: Path, b: Path) -> None:
    for det in ("mcm", "energy"):
        ra, rb = record(a, det), record(b, det)
        assert ra["metrics"] == rb["metrics"] and ra["groups"] == rb["groups"]
        assert ra["id_accuracy"] == rb["id_accuracy"]
        sa, sb = scores(a, det), scores(b, det)
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)  # bit-identical


def reused(rec: dict) -> int:
    return sum(v.get("chunks_reused", 0) for v in rec["cache"]["images"].values())


@pytest.fixture
def clean(standin_root, tmp_path) -> Path:
    """Results of an uninterrupted run (its own cache)."""
    out = tmp_path / "clean-results"
    assert main(run_args(standin_root, tmp_path / "clean-cache", out)) == 0
    return out


def test_interrupted_extraction_resumes_to_the_clean_numbers(standin_root, tmp_path, clean,
                                                             monkeypatch, capsys):
    """In-process stand-in for a kill: the 5th chunk write raises KeyboardInterrupt."""
    cache, results = tmp_path / "cache", tmp_path / "results"
    real = oodbench.io.atomic_write
    written = []

    def failing(path, write):
        if "chunks" in Path(path).parts:
            if len(written) == 4:
                raise KeyboardInterrupt
            written.append(path)
        real(path, write)

    monkeypatch.setattr(oodbench.io, "atomic_write", failing)
    assert main(run_args(standin_root, cache, results)) == 130
    assert "rerun to resume" in capsys.readouterr().err
    assert len(chunk_files(cache)) == 4 and not results.exists()
    monkeypatch.setattr(oodbench.io, "atomic_write", real)

    assert main(run_args(standin_root, cache, results)) == 0
    assert_same_results(clean, results)
    assert reused(record(results, "mcm")) == 4
    assert Cache(cache).verify() == [] and not chunk_files(cache)


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "oodbench", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_after_new_chunk(args: list[str], cache: Path, timeout: float = 120.0) -> bool:
    """Start a run and SIGKILL it as soon as it writes a chunk it did not find on disk.

    Returns whether the kill left partial chunks behind (False: the run ended first, or the kill
    fell between the join and the removal of the chunks).
    """
    before = chunk_files(cache)
    proc = _spawn(args)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if chunk_files(cache) - before:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    return bool(chunk_files(cache))


@pytest.mark.slow
def test_sigkill_three_times_then_rerun_matches_a_clean_run(standin_root, tmp_path, clean):
    """A real `oodbench run` killed with SIGKILL three times (mid-extraction) resumes exactly."""
    cache, results = tmp_path / "cache", tmp_path / "results"
    args = run_args(standin_root, cache, results)
    kills = []
    for _ in range(6):  # three kills that left partial chunks; a few spare tries for the races
        kills.append(kill_after_new_chunk(args, cache))
        if kills.count(True) >= 3 and kills[-1]:
            break
    assert kills.count(True) >= 3 and kills[-1], kills
    left = len(chunk_files(cache))

    r = subprocess.run([sys.executable, "-m", "oodbench", *args], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert_same_results(clean, results)
    assert reused(record(results, "mcm")) == left  # every finished chunk was reused
    v = subprocess.run([sys.executable, "-m", "oodbench", "cache", "verify", "--cache-dir",
                        str(cache)], capture_output=True, text=True)
    assert v.returncode == 0 and " 0 damaged" in v.stdout, v.stdout
    assert not chunk_files(cache)

"""Interrupted runs: a killed extraction resumes from its finished chunks to the clean numbers."""

from __future__ import annotations

import json
import os
import shutil
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


# A process that runs the CLI with every atomic write logged, and one chosen write stalled halfway
# (half its bytes in the temporary file, then a long sleep): a slow disk, so that a SIGKILL lands
# exactly in that write. STALL_MATCH picks the writes by a substring of their path, STALL_SKIP how
# many of those complete first; an empty STALL_MATCH stalls nothing.
SHIM = r"""
import io, os, sys, time
import oodbench.io as oio
real, seen = oio.atomic_write, [0]
match, skip = os.environ.get("STALL_MATCH", ""), int(os.environ.get("STALL_SKIP", "0"))

def logged(path, write):
    with open(os.environ["WRITE_LOG"], "a") as log:
        log.write(f"{path}\n")
    if match and match in str(path):
        seen[0] += 1
        if seen[0] > skip:
            def half(f):
                buf = io.BytesIO()
                write(buf)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
                # the marker appears whole (the test kills this process the moment it exists)
                with open(os.environ["STALL_MARKER"] + ".tmp", "w") as m:
                    m.write(str(path))
                os.replace(os.environ["STALL_MARKER"] + ".tmp", os.environ["STALL_MARKER"])
                time.sleep(600)
            return real(path, half)
    return real(path, write)

oio.atomic_write = logged
from oodbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _spawn(args: list[str], tmp: Path, match: str = "", skip: int = 0) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "STALL_MATCH": match,
           "STALL_SKIP": str(skip), "STALL_MARKER": str(tmp / "stalled"),
           "WRITE_LOG": str(tmp / "writes.log")}
    (tmp / "stalled").unlink(missing_ok=True)
    (tmp / "writes.log").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-c", SHIM, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 180.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail if the process ended first."""
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]


def kill_after_new_chunk(args: list[str], cache: Path, tmp: Path) -> bool:
    """Start a run and SIGKILL it as soon as it writes a chunk it did not find on disk (no stall:
    the moment falls wherever the process happens to be). Returns whether partial chunks are left
    (False: the kill fell between the join of the chunks and their removal)."""
    before = chunk_files(cache)
    _kill_when(_spawn(args, tmp), lambda: bool(chunk_files(cache) - before))
    return bool(chunk_files(cache))


def kill_in_write(args: list[str], tmp: Path, match: str, skip: int) -> Path:
    """Start a run, stall its (skip+1)-th write whose path contains ``match`` halfway, SIGKILL it
    there; returns the file that was being written."""
    marker = tmp / "stalled"
    _kill_when(_spawn(args, tmp, match, skip), marker.exists)
    return Path(marker.read_text())


def writes(tmp: Path) -> list[Path]:
    """The files the last spawned process wrote (or began to write), in order."""
    return [Path(p) for p in (tmp / "writes.log").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_three_times_then_rerun_matches_a_clean_run(standin_root, tmp_path, clean):
    """A real `oodbench run` SIGKILLed during extraction, during scoring (in the write of a score
    entry) and during the writing of its result records resumes each time from what was complete
    and ends with the numbers of a clean run, bit for bit, and a cache that verifies."""
    cache, results = tmp_path / "cache", tmp_path / "results"
    args = run_args(standin_root, cache, results)

    # 1. during extraction, at whatever moment the first new chunk shows (retried if the kill
    #    fell after the chunks were joined: then there is nothing partial to resume from)
    for _ in range(4):
        if kill_after_new_chunk(args, cache, tmp_path):
            break
    done = chunk_files(cache)
    assert done, "no kill left partial chunks"
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert Cache(cache).verify() == []

    # 2. during scoring: in the write of the second score entry (the first one is complete)
    stalled = kill_in_write(args, tmp_path, match=f"{os.sep}scores{os.sep}", skip=2)
    wrote = writes(tmp_path)
    assert not done & set(wrote), "finished chunks were extracted again"
    assert {p for p in done if p.exists() and p.stat().st_mtime_ns != stamps[p]} == set()
    assert stalled.name == "data.npy" and not (stalled.parent / "meta.json").exists()
    assert not chunk_files(cache)  # extraction was completed by this run
    assert not results.exists() and Cache(cache).verify() == []

    # 3. while writing the records: in the write of mcm's .json, after its .npz
    stalled = kill_in_write(args, tmp_path, match=f"{os.sep}runs{os.sep}", skip=1)
    assert stalled.name == "seed0.json" and stalled.with_suffix(".npz").is_file()
    assert not stalled.exists()  # half a record is never visible under its name
    assert list(stalled.parent.glob(".seed0.json.*.tmp"))  # only the hidden temporary file
    assert not any(f"{os.sep}images{os.sep}" in str(p) for p in writes(tmp_path))
    assert Cache(cache).verify() == []

    # the rerun (the plain CLI, in its own process)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "oodbench", *args], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert time.perf_counter() - t < 120
    assert_same_results(clean, results)
    for det in ("mcm", "energy"):  # features came from the cache; nothing was re-extracted
        for entry in record(results, det)["cache"]["images"].values():
            assert entry["global"] in ("cache", "memory") and "images_encoded" not in entry
    assert record(results, "mcm")["cache"]["scores_hit"]  # its scores were complete: reused
    v = subprocess.run([sys.executable, "-m", "oodbench", "cache", "verify", "--cache-dir",
                        str(cache)], capture_output=True, text=True)
    assert v.returncode == 0 and " 0 damaged" in v.stdout, v.stdout
    assert not chunk_files(cache)
    assert main(["leaderboard", "--results-dir", str(results), "--quiet"]) == 0  # tmp ignored


def test_a_leaderboard_killed_mid_write_keeps_the_old_tables(clean, tmp_path):
    """SIGKILL in the middle of writing a leaderboard: the old tables stay whole; a rerun
    writes the new ones."""
    results = tmp_path / "results"
    shutil.copytree(clean, results)
    energy = results / "runs/imagenet1k-mos4/tiny-random/energy"
    shutil.move(energy, tmp_path / "energy")
    assert main(["leaderboard", "--results-dir", str(results), "--quiet"]) == 0
    board = results / "leaderboard"
    old = {p.name: p.read_bytes() for p in board.iterdir()}
    shutil.move(tmp_path / "energy", energy)  # a new record: the tables must change

    for skip in (0, 1):  # stall the .csv, then the .md (the .csv already new)
        stalled = kill_in_write(["leaderboard", "--results-dir", str(results), "--quiet"],
                                tmp_path, match=f"{os.sep}leaderboard{os.sep}", skip=skip)
        assert stalled.parent == board
        assert board.joinpath(stalled.name).read_bytes() == old[stalled.name]
    assert main(["leaderboard", "--results-dir", str(results), "--quiet"]) == 0
    assert main(["leaderboard", "--results-dir", str(clean), "--out", str(tmp_path / "fresh"),
                 "--quiet"]) == 0
    for p in (tmp_path / "fresh").iterdir():
        assert (board / p.name).read_bytes() == p.read_bytes()
    assert all(p.name.startswith(".") for p in board.iterdir() if p.name not in old)

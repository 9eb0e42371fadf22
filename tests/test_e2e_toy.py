"""End to end on the toy world, as a user runs it: the acceptance numbers of the toy protocols."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from oodbench.record import ResultRecord


def oodbench(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "oodbench", *args], capture_output=True,
                          text=True, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


def _record(workdir, protocol, detector="mcm"):
    return ResultRecord.read(workdir / f"results/runs/{protocol}/toy/{detector}/seed0.json")


def test_mcm_on_toy_reaches_the_documented_numbers_within_a_minute(workdir):
    t = time.perf_counter()
    r = oodbench("run", "--detector", "mcm", "--protocol", "toy", "--backbone", "toy",
                 "--seeds", "0", "--quiet", cwd=workdir)
    seconds = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    rec = _record(workdir, "toy")
    assert rec.id_accuracy >= 0.85
    assert rec.metrics["far"]["auroc"] >= 0.85
    assert 0.60 <= rec.metrics["near"]["auroc"] <= 0.92
    assert seconds < 90, f"a cold MCM toy run took {seconds:.0f}s"


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["toy-unseen", "toy-shift"])
def test_mcm_runs_on_the_other_toy_protocols(workdir, protocol):
    r = oodbench("run", "--detector", "mcm", "--protocol", protocol, "--quiet", cwd=workdir)
    assert r.returncode == 0, r.stderr
    rec = _record(workdir, protocol)
    assert rec.metrics["far"]["auroc"] > 0.8
    if protocol == "toy-shift":
        assert set(rec.shifted) == {"shift-sketch", "shift-blur", "shift-noise", "shift-invert"}
        for s in rec.shifted.values():
            assert s["id_accuracy"] > 0.3  # chance is 0.1


@pytest.mark.slow
def test_bench_writes_the_toy_leaderboards(workdir):
    r = oodbench("bench", "--detector", "mcm,energy", "--quiet", cwd=workdir)
    assert r.returncode == 0, r.stderr
    for protocol in ("toy", "toy-unseen", "toy-shift"):
        md = workdir / f"results/leaderboard/{protocol}.md"
        assert md.is_file()
        assert "mcm" in md.read_text() and "energy" in md.read_text()

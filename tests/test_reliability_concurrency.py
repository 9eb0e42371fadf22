"""Several processes on one cache directory: every run finishes right and the cache stays intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oodbench.features.cache import Cache
from oodbench.locks import FileLock, held_by_me
from oodbench.runner import RunSpec, run

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def spawn_run(root: Path, cache: Path, results: Path, detectors: str) -> subprocess.Popen:
    args = ["run", "--detector", detectors, "--protocol", "imagenet1k-mos4", "--backbone",
            "tiny-random", "--data-root", str(root), "--cache-dir", str(cache), "--results-dir",
            str(results), "--workers", "0", "--batch-size", "2", "--chunk-size", "2", "--quiet"]
    return subprocess.Popen([sys.executable, "-m", "oodbench", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reference(root: Path, tmp: Path, detectors: list[str]) -> dict[str, dict]:
    """Metrics of each detector from a run alone on its own cache."""
    recs = run(RunSpec(detectors=detectors, protocol="imagenet1k-mos4", backbone="tiny-random",
                       data_root=str(root), cache_dir=str(tmp / "ref-cache"),
                       results_dir=str(tmp / "ref-results"), workers=0, quiet=True))
    return {r.detector["name"]: r.metrics for r in recs}


def metrics(results: Path, detector: str) -> dict:
    path = results / f"runs/imagenet1k-mos4/tiny-random/{detector}/seed0.json"
    return json.loads(path.read_text())["metrics"]


def finish(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err


@pytest.mark.slow
def test_two_runs_on_one_cache_same_and_different_detectors(standin_root, tmp_path):
    cache = tmp_path / "shared-cache"
    a = spawn_run(standin_root, cache, tmp_path / "a", "mcm,energy")
    b = spawn_run(standin_root, cache, tmp_path / "b", "mcm,maxlogit")
    want = reference(standin_root, tmp_path, ["mcm", "energy", "maxlogit"])
    finish([a, b])
    for results, dets in ((tmp_path / "a", ["mcm", "energy"]),
                          (tmp_path / "b", ["mcm", "maxlogit"])):
        for d in dets:
            assert metrics(results, d) == want[d]
    c = Cache(cache)
    assert c.verify() == []
    assert not list(cache.glob("images/*/*/chunks"))
    assert not [p for p in cache.rglob("*.tmp")]
    # one entry per set: the second run waited for or reused the first one's extraction
    assert len([e for e in c.entries() if e.level == "images"]) == 5


@pytest.mark.slow
def test_three_runs_writing_the_same_records(standin_root, tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    procs = [spawn_run(standin_root, cache, results, "mcm,energy") for _ in range(3)]
    want = reference(standin_root, tmp_path, ["mcm", "energy"])
    finish(procs)
    assert metrics(results, "mcm") == want["mcm"] and metrics(results, "energy") == want["energy"]
    assert Cache(cache).verify() == []


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_file_lock_keeps_another_process_out(tmp_path):
    path = tmp_path / "locks" / "x.lock"
    with FileLock(path):
        with FileLock(path):  # re-entrant within one process
            assert held_by_me(path)
        p = _python(f"""
            import time
            from oodbench.locks import FileLock
            t = time.monotonic()
            with FileLock({str(path)!r}, what="the test's lock"):
                print(f"{{time.monotonic() - t:.2f}}")
        """)
        time.sleep(1.0)
        assert p.poll() is None  # still waiting
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert float(out) > 0.2  # it waited (its own start-up ate part of the second)
    assert "waiting for the test's lock" in err and f"pid {os.getpid()}" in err
    assert not held_by_me(path)


def test_racing_writers_never_tear_an_entry(tmp_path):
    """Four processes load-or-save the same 40 keys with different arrays: every reader sees one
    writer's whole array, and every entry left behind verifies."""
    code = f"""
        import sys
        import numpy as np
        from oodbench.features.cache import Cache
        c, me = Cache({str(tmp_path)!r}), int(sys.argv[1])
        for i in range(40):
            spec = {{"k": i}}
            arr = c.load("text", spec, mmap=False)
            if arr is None:
                c.save("text", spec, np.full((64, 256), me, np.float32))
                arr = c.load("text", spec, mmap=False)
            assert arr is not None and (arr == arr.flat[0]).all(), "torn entry"
        print("ok")
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(k)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
    c = Cache(tmp_path)
    assert c.verify() == [] and len(c.entries()) == 40
    for k in range(40):
        arr = c.load("text", {"k": k}, mmap=False)
        assert (arr == arr.flat[0]).all() and int(arr.flat[0]) in range(4)
    assert not list(tmp_path.rglob("*.tmp"))

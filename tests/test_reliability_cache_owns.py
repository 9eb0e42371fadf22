"""Cache maintenance touches only the cache's own files (issue 16, cases 1 and 3).

``cache gc/verify/ls`` act only on a folder that carries the cache's marker, and only on entries
named as the cache names them; anything else is reported and left alone. gc takes each entry's
lock and collects only temporaries older than a grace period, so it cannot take a fresh entry
caught between the two writes of ``save``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from oodbench.cli import main
from oodbench.features.cache import MARKER, Cache, default_cache_dir, spec_key

SPEC = {"what": "gc-test", "n": 3}


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its sha256 (folders as 'dir')."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))}


def user_files(root: Path) -> None:
    """Photos that look like a cache level to a careless glob (images/<a>/<b>/meta.json)."""
    trip = root / "images" / "2023" / "trip"
    trip.mkdir(parents=True)
    (trip / "photo.jpg").write_bytes(b"\xff\xd8 my holiday")
    (trip / "meta.json").write_text('{"camera": "x"}')
    (root / "notes.txt").write_text("keep me")


@pytest.mark.parametrize("command", ["gc", "verify", "ls"])
def test_maintenance_refuses_a_folder_that_is_not_a_cache(tmp_path, capsys, command):
    user_files(tmp_path)
    before = tree(tmp_path)
    assert main(["cache", command, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oodbench: error: ") and MARKER in err and "notes.txt" in err
    assert "nothing was touched" in err
    assert tree(tmp_path) == before


def test_gc_in_a_real_cache_leaves_foreign_files_and_names_them(tmp_path, capsys):
    c = Cache(tmp_path / "c")
    d = c.save("text", SPEC, np.zeros((3, 2), np.float32))
    user_files(c.root)
    (c.root / "notes.txt").unlink()  # a marked cache with a stray folder in a level
    stray_in_entry = d / "mine.txt"
    stray_in_entry.write_text("x")
    old = time.time() - 10 * 86400
    os.utime(c.root / "images" / "2023" / "trip" / "meta.json", (old, old))
    before = tree(c.root)
    assert main(["cache", "gc", "--cache-dir", str(c.root), "--older-than-days", "1"]) == 0
    out = capsys.readouterr().out
    assert f"not the cache's, left alone: {c.root / 'images' / '2023'}" in out
    assert f"not the cache's, left alone: {stray_in_entry}" in out
    assert "removed" not in out
    assert tree(c.root) == before


def test_a_damaged_entry_is_removed_file_by_file_keeping_strangers(tmp_path, capsys):
    c = Cache(tmp_path / "c")
    d = c.save("text", SPEC, np.zeros((3, 2), np.float32))
    (d / "data.npy").write_bytes(b"garbage")
    (d / "mine.txt").write_text("x")
    assert main(["cache", "gc", "--cache-dir", str(c.root)]) == 0
    assert f"removed {d}" in capsys.readouterr().out
    assert sorted(p.name for p in d.iterdir()) == ["mine.txt"]


def test_an_unmarked_cache_of_an_older_version_is_adopted(tmp_path, capsys):
    c = Cache(tmp_path / "old")
    c.save("text", SPEC, np.zeros((3, 2), np.float32))
    (c.root / MARKER).unlink()  # as an older oodbench left it
    assert main(["cache", "ls", "--cache-dir", str(c.root)]) == 0
    assert "1 entries" in capsys.readouterr().out
    assert json.loads((c.root / MARKER).read_text())["layout"] == 1


def test_a_run_into_a_folder_with_other_files_works_but_does_not_mark_it(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    c = Cache(tmp_path)
    c.save("text", SPEC, np.zeros((3, 2), np.float32))
    assert c.load("text", SPEC) is not None and not (tmp_path / MARKER).exists()


def test_an_empty_oodbench_cache_is_unset_not_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OODBENCH_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path / "xdg" / "oodbench"
    assert Cache("").root == tmp_path / "xdg" / "oodbench"
    user_files(tmp_path)
    before = tree(tmp_path)
    assert main(["cache", "gc", "--cache-dir", ""]) == 2
    assert f"no cache at {tmp_path / 'xdg' / 'oodbench'}" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_the_default_cache_follows_oodbench_cache_then_xdg_then_home(tmp_path, monkeypatch):
    """$OODBENCH_CACHE wins; else $XDG_CACHE_HOME/oodbench; else ~/.cache/oodbench (never the
    current folder, so changing directory does not re-extract)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "own"
    monkeypatch.delenv("OODBENCH_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "oodbench"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "oodbench"


# ---------------------------------------------------------------------------------------------
# Case 3: gc racing a writer.
# ---------------------------------------------------------------------------------------------


def test_gc_leaves_a_fresh_array_whose_sidecar_is_not_written_yet(tmp_path, capsys):
    c = Cache(tmp_path)
    c.save("text", {"other": 1}, np.zeros(2))  # the cache exists and is marked
    d = c.entry_dir("text", spec_key(SPEC))
    d.mkdir(parents=True)
    np.save(d / "data.npy", np.zeros((3, 2), np.float32))  # save's first write, not its second
    assert main(["cache", "gc", "--cache-dir", str(tmp_path)]) == 0
    assert "removed" not in capsys.readouterr().out
    assert (d / "data.npy").exists()
    old = time.time() - 7200  # the same state an hour later: its writer died
    os.utime(d / "data.npy", (old, old))
    assert main(["cache", "gc", "--cache-dir", str(tmp_path)]) == 0
    assert f"removed {d / 'data.npy'}" in capsys.readouterr().out
    assert not d.exists()


WRITER = """
import sys, time
import numpy as np
import oodbench.features.cache as C
real = C.atomic_write_json
def slow(path, obj):
    print("between", flush=True)
    time.sleep(1.5)
    real(path, obj)
C.atomic_write_json = slow
C.Cache(sys.argv[1]).save("text", {"what": "gc-test", "n": 3}, np.zeros((3, 2), np.float32))
"""


def test_gc_waits_for_the_entry_lock_of_a_live_writer(tmp_path):
    c = Cache(tmp_path)
    c.ensure_marker()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "between"
        assert c.gc(stale_s=0.0) == []  # no grace at all: the lock alone protects the entry
    finally:
        assert writer.wait(timeout=60) == 0
    assert c.load("text", SPEC) is not None


def test_gc_collects_a_stale_half_written_toy_world(tmp_path, capsys):
    c = Cache(tmp_path)
    c.ensure_marker()
    stale = tmp_path / "toy-world" / ".toy-tmp-99-dead"
    (stale / "near").mkdir(parents=True)
    (stale / "near" / "00001.png").write_bytes(b"half")
    fresh = tmp_path / "toy-world" / ".toy-tmp-98-live"
    fresh.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert main(["cache", "gc", "--cache-dir", str(tmp_path)]) == 0
    assert f"removed {stale}" in capsys.readouterr().out
    assert not stale.exists() and fresh.exists()

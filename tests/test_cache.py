"""The content-addressed cache: damaged or hostile entries are never trusted, failed writes leave
nothing half-written, and leftovers of interrupted runs are told apart from damage."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import oodbench.io
from oodbench.cli import main
from oodbench.errors import DataError
from oodbench.features.cache import Cache, spec_key
from oodbench.io import WriteError

SPEC = {"what": "test", "n": 3}


def entry(cache: Cache, spec: dict = SPEC) -> Path:
    return cache.entry_dir("text", spec_key(spec))


def test_round_trip_and_sidecar(tmp_path):
    c = Cache(tmp_path)
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    d = c.save("text", SPEC, a, note="x")
    meta = json.loads((d / "meta.json").read_text())
    assert meta["spec"] == SPEC and meta["shape"] == [3, 2] and meta["note"] == "x"
    np.testing.assert_array_equal(c.load("text", SPEC), a)
    assert c.has("text", SPEC) and c.verify() == []


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    """Entries and records are readable by whoever may read the folder (a shared cache)."""
    mask = os.umask(0o022)
    os.umask(mask)
    d = Cache(tmp_path).save("text", SPEC, np.zeros((3, 2), np.float32))
    for f in (d / "data.npy", d / "meta.json"):
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


def test_a_valid_entry_is_never_replaced(tmp_path):
    """First writer wins: a concurrent second save of the same key keeps the first bytes."""
    c = Cache(tmp_path)
    c.save("text", SPEC, np.zeros((3, 2), np.float32))
    c.save("text", SPEC, np.ones((3, 2), np.float32))
    assert float(c.load("text", SPEC).sum()) == 0.0


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "delete-data"])
def test_damaged_data_is_dropped_not_trusted(tmp_path, damage):
    c = Cache(tmp_path)
    c.save("text", SPEC, np.arange(6, dtype=np.float32).reshape(3, 2))
    data = entry(c) / "data.npy"
    blob = bytearray(data.read_bytes())
    if damage == "flip-a-byte":
        blob[-1] ^= 0xFF
        data.write_bytes(bytes(blob))
    elif damage == "truncate":
        data.write_bytes(bytes(blob[: len(blob) // 2]))
    else:
        data.unlink()
    assert [why for _, why in c.verify()] in (["data does not match its recorded sha256"],
                                              ["sidecar without data"])
    assert c.load("text", SPEC) is None
    assert not (entry(c) / "meta.json").exists()  # dropped, so the next run recomputes it


@pytest.mark.parametrize("sidecar", [
    "not json at all",
    json.dumps(["a", "list"]),
    "SPEC_FOR_ANOTHER_KEY",
    "WRONG_LEVEL",
    "NO_SHA",
])
def test_bad_sidecars_are_refused_before_the_data_is_read(tmp_path, sidecar):
    c = Cache(tmp_path)
    d = c.save("text", SPEC, np.zeros((3, 2), np.float32))
    meta = json.loads((d / "meta.json").read_text())
    if sidecar == "SPEC_FOR_ANOTHER_KEY":
        meta["spec"] = {"what": "something else", "n": 3}
        sidecar = json.dumps(meta)
    elif sidecar == "WRONG_LEVEL":
        meta["level"] = "images"
        sidecar = json.dumps(meta)
    elif sidecar == "NO_SHA":
        del meta["sha256"]
        sidecar = json.dumps(meta)
    (d / "meta.json").write_text(sidecar)
    assert c.load("text", SPEC) is None
    assert c.verify() == []  # the bad entry was dropped by the load


def test_a_pickled_array_with_a_matching_checksum_is_not_unpickled(tmp_path):
    """A planted object array (a pickle inside .npy) with a forged sidecar is refused."""
    c = Cache(tmp_path)
    d = c.save("text", SPEC, np.zeros(3, np.float32))
    evil = np.array([{"payload": 1}, None, 3], dtype=object)
    with open(d / "data.npy", "wb") as f:
        np.save(f, evil, allow_pickle=True)
    meta = json.loads((d / "meta.json").read_text())
    meta.update(dtype="object", sha256=__import__("oodbench.features.cache").features.cache
                .array_sha256(d / "data.npy"))
    (d / "meta.json").write_text(json.dumps(meta))
    assert c.load("text", SPEC, mmap=False) is None
    assert not (d / "data.npy").exists()


def test_an_array_of_the_wrong_length_is_refused(tmp_path):
    c = Cache(tmp_path)
    (c.chunk_dir("images", SPEC)).mkdir(parents=True)
    with pytest.raises(DataError, match="has 2 rows but 3 images were extracted"):
        c.save("images", SPEC, np.zeros((2, 4), np.float32))
    assert not c.chunk_dir("images", SPEC).exists() and not c.has("images", SPEC)


def test_a_corrupt_feature_entry_is_rebuilt_to_the_same_numbers(standin_root, tmp_path):
    from oodbench.runner import RunSpec, run

    spec = RunSpec(detectors=["mcm"], protocol="imagenet1k-mos4", backbone="tiny-random",
                   data_root=str(standin_root), cache_dir=str(tmp_path / "c"),
                   results_dir=str(tmp_path / "r"), workers=0, quiet=True)
    (first,) = run(spec)
    c = Cache(tmp_path / "c")
    (sun,) = [e for e in c.entries() if e.level == "images" and e.spec["n"] == 5
              and "SUN" in json.loads((e.path / "meta.json").read_text()).get("source", "")]
    data = sun.path / "data.npy"
    good = data.read_bytes()
    blob = bytearray(good)
    blob[len(blob) // 2] ^= 0x01  # one flipped bit in one feature value
    data.write_bytes(bytes(blob))
    shutil.rmtree(tmp_path / "c" / "scores")  # make the rerun read the features
    (again,) = run(spec)
    assert again.cache["images"]["SUN"]["global"] == "extracted"  # not trusted: recomputed
    assert again.metrics == first.metrics
    assert data.read_bytes() == good and c.verify() == []


# ---------------------------------------------------------------------------------------------
# Disk full: a write that fails midway leaves nothing behind, and says what failed.
# ---------------------------------------------------------------------------------------------


def half_then_enospc(f, arr, allow_pickle=False):
    """np.save that writes a part of the bytes, then fails as a full disk does."""
    f.write(b"\x93NUMPY" + b"\0" * 64)
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_data_leaves_no_entry(tmp_path, monkeypatch):
    c = Cache(tmp_path)
    monkeypatch.setattr(np, "save", half_then_enospc)
    with pytest.raises(WriteError, match="could not write .*data.npy .No space left") as e:
        c.save("text", SPEC, np.zeros((3, 2), np.float32))
    assert isinstance(e.value, OSError)
    assert not entry(c).exists() or not any(entry(c).iterdir())  # no data, sidecar or temp file


def test_disk_full_while_writing_the_sidecar_removes_the_data(tmp_path, monkeypatch):
    c = Cache(tmp_path)
    real = oodbench.io.atomic_write

    def failing(path, write):
        if Path(path).name == "meta.json":
            raise WriteError(f"could not write {path} (No space left on device)")
        real(path, write)

    monkeypatch.setattr(oodbench.io, "atomic_write", failing)
    with pytest.raises(WriteError, match="meta.json"):
        c.save("text", SPEC, np.zeros((3, 2), np.float32))
    assert not (entry(c) / "data.npy").exists() and c.load("text", SPEC) is None


def test_disk_full_while_writing_a_record_keeps_the_old_one(standin_root, tmp_path, monkeypatch,
                                                            capsys):
    args = ["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
            "tiny-random", "--data-root", str(standin_root), "--cache-dir", str(tmp_path / "c"),
            "--results-dir", str(tmp_path / "r"), "--workers", "0", "--quiet"]
    assert main(args) == 0
    rec = tmp_path / "r/runs/imagenet1k-mos4/tiny-random/mcm/seed0.json"
    old = rec.read_bytes()
    real = oodbench.io.atomic_write

    def failing(path, write):
        if Path(path).suffix == ".json" and "runs" in Path(path).parts:
            return real(path, lambda f: (f.write(b'{"half": '), (_ for _ in ()).throw(
                OSError(errno.ENOSPC, "No space left on device"))))
        return real(path, write)

    monkeypatch.setattr(oodbench.io, "atomic_write", failing)
    assert main(args) == 2  # the rerun rewrites the record, and the disk is full
    err = capsys.readouterr().err
    assert f"could not write {rec}" in err and "No space left on device" in err
    assert "Traceback" not in err
    assert rec.read_bytes() == old  # the earlier record is intact
    assert not list(rec.parent.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------
# Leftovers of interrupted runs are not damage; gc removes them.
# ---------------------------------------------------------------------------------------------


def test_leftovers_are_not_damage_and_gc_removes_them(tmp_path):
    c = Cache(tmp_path)
    orphan = c.entry_dir("images", "ab" + "0" * 30)
    orphan.mkdir(parents=True)
    np.save(orphan / "data.npy", np.zeros(3))  # killed between the data and its sidecar
    os.utime(orphan / "data.npy", (time.time() - 7200,) * 2)  # an hour ago: its writer died
    building = c.chunk_dir("images", {"x": 1})
    building.mkdir(parents=True)
    np.save(building / "000000000-000000002.npy", np.zeros(2))  # a build to resume
    d = c.save("text", SPEC, np.zeros((3, 2), np.float32))
    old_tmp, new_tmp = d / ".data.npy.old.tmp", d / ".data.npy.new.tmp"
    old_tmp.write_bytes(b"x")
    new_tmp.write_bytes(b"x")
    os.utime(old_tmp, (time.time() - 7200,) * 2)
    assert c.verify() == []
    assert set(c.leftovers()) == {orphan / "data.npy", old_tmp}
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 0
    c.gc()
    assert not (orphan / "data.npy").exists() and not old_tmp.exists()
    assert new_tmp.exists() and building.exists() and c.load("text", SPEC) is not None


def test_cache_verify_cli_reports_damage(tmp_path, capsys):
    c = Cache(tmp_path)
    d = c.save("text", SPEC, np.zeros((3, 2), np.float32))
    (d / "data.npy").write_bytes(b"garbage")
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "data does not match its recorded sha256" in out and "1 damaged" in out

"""Unreadable folders (issue 16, case 7): an error naming the folder, never a silently smaller
set and never a traceback.

Permissions are simulated by making ``os.scandir`` (which ``os.walk`` uses) refuse a folder, so
the test runs as root too; one test uses real permissions and is skipped as root, who reads
everything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from oodbench.cli import main

RUN = ["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone", "tiny-random",
       "--workers", "0", "--quiet"]


@pytest.fixture
def root(standin_root, tmp_path) -> Path:
    return Path(shutil.copytree(standin_root, tmp_path / "data"))


def refuse(monkeypatch, folder: Path) -> None:
    """Make ``folder`` unreadable to os.scandir / os.walk, as chmod 000 does for a non-root."""
    real = os.scandir

    def scandir(path="."):
        if Path(os.fspath(path)).resolve() == folder.resolve():
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def class_folder(root: Path) -> Path:
    return sorted((root / "imagenet" / "val").iterdir())[1]


@pytest.mark.parametrize("which", ["class", "set"])
def test_an_unreadable_folder_stops_the_run_naming_it(root, tmp_path, capsys, monkeypatch, which):
    folder = class_folder(root) if which == "class" else root / "SUN" / "images"
    refuse(monkeypatch, folder)
    code = main([*RUN, "--data-root", str(root), "--cache-dir", str(tmp_path / "c"),
                 "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert f"cannot read the folder {folder} (Permission denied)" in err
    assert not (tmp_path / "r").exists()


def test_data_check_names_an_unreadable_class_folder(root, capsys, monkeypatch):
    folder = class_folder(root)
    refuse(monkeypatch, folder)
    assert main(["data", "check", "imagenet1k-mos4", "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "is not ready" in err and f"cannot read the folder {folder}" in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads every folder whatever its mode")
def test_a_chmod_000_class_folder_is_an_error(root, tmp_path, capsys):
    folder = class_folder(root)
    folder.chmod(0)
    try:
        code = main([*RUN, "--data-root", str(root), "--cache-dir", str(tmp_path / "c"),
                     "--results-dir", str(tmp_path / "r")])
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2 and f"cannot read the folder {folder}" in err, err


def test_a_link_outside_the_data_root_is_followed_and_noted(root, tmp_path, capsys):
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes((root / "SUN" / "images" / "SUN_0.jpg").read_bytes())
    os.symlink(outside, root / "SUN" / "images" / "linked.jpg")
    assert main(["data", "check", "imagenet1k-mos4", "--data-root", str(root)]) == 0
    captured = capsys.readouterr()
    assert "is ready" in captured.out
    assert ("note: SUN: 1 image(s) are symbolic links to files outside the data root (followed), "
            "e.g. SUN/images/linked.jpg") in captured.err

"""The CLI as a user types it."""

from __future__ import annotations

import subprocess
import sys


def oodbench(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "oodbench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )


def test_misspelled_detector_suggests_the_right_one(tmp_path):
    r = oodbench(
        "run",
        "--detector",
        "mcmm",
        "--protocol",
        "toy",
        "--backbone",
        "toy",
        "--cache-dir",
        str(tmp_path),
    )
    assert r.returncode == 2
    assert "did you mean 'mcm'" in r.stderr.lower()
    assert "Traceback" not in r.stderr


def test_misspelled_protocol_suggests_the_right_one(tmp_path):
    r = oodbench(
        "run", "--detector", "mcm", "--protocol", "imagenet1k-mos", "--cache-dir", str(tmp_path)
    )
    assert r.returncode == 2 and "imagenet1k-mos4" in r.stderr


def test_list_shows_names_with_descriptions():
    r = oodbench("list", "detectors")
    assert r.returncode == 0
    assert "mcm" in r.stdout and "Maximum Concept Matching" in r.stdout
    r = oodbench("list", "protocols")
    assert all(p in r.stdout for p in ("imagenet1k-mos4", "toy", "toy-unseen", "toy-shift"))
    r = oodbench("list", "backbones")
    assert "toy" in r.stdout and "ViT-B-16:openai" in r.stdout


def test_run_then_cache_verify_and_ls(standin_root, tmp_path):
    r = oodbench(
        "run",
        "--detector",
        "mcm,energy",
        "--protocol",
        "imagenet1k-mos4",
        "--backbone",
        "tiny-random",
        "--data-root",
        str(standin_root),
        "--cache-dir",
        str(tmp_path / "c"),
        "--results-dir",
        str(tmp_path / "r"),
        "--workers",
        "0",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r/runs/imagenet1k-mos4/tiny-random/energy/seed0.json").is_file()
    v = oodbench("cache", "verify", "--cache-dir", str(tmp_path / "c"))
    assert v.returncode == 0 and "0 damaged" in v.stdout
    ls = oodbench("cache", "ls", "--cache-dir", str(tmp_path / "c"))
    assert "images" in ls.stdout and "scores" in ls.stdout


def test_missing_data_names_the_sets_and_their_sources(tmp_path):
    r = oodbench("data", "check", "imagenet1k-mos4", "--data-root", str(tmp_path))
    assert r.returncode == 2
    assert "iNaturalist" in r.stderr and "iNaturalist.tar.gz" in r.stderr
    assert str(tmp_path) in r.stderr


def test_bad_hyperparameter_names_the_field(standin_root, tmp_path):
    r = oodbench(
        "run",
        "--detector",
        "mcm",
        "--protocol",
        "imagenet1k-mos4",
        "--backbone",
        "tiny-random",
        "--data-root",
        str(standin_root),
        "--cache-dir",
        str(tmp_path),
        "--param",
        "mcm.temperature=-1",
    )
    assert r.returncode == 2 and "temperature" in r.stderr


def test_bench_over_several_protocols_skips_a_detector_that_refuses_one(monkeypatch, tmp_path):
    """Local-Prompt cannot score toy-unseen (another label set): `make reference` over the toy
    protocols skips it there, with a message, instead of stopping."""
    from types import SimpleNamespace

    from oodbench import cli
    from oodbench.registry import PROTOCOLS

    unseen = SimpleNamespace(name="toy-unseen", classnames=["a", "b"],
                             training_classnames=lambda: ["c", "d"])
    monkeypatch.setattr(PROTOCOLS, "get", lambda name: lambda: SimpleNamespace(
        build=lambda root, cache: unseen))
    kept = cli._detectors_for("toy-unseen", ["mcm", "local-prompt", "krnft"], {}, None,
                              str(tmp_path / "cache"), True)
    assert kept == ["mcm", "krnft"]

"""Logging and progress (rich on a terminal, periodic plain lines otherwise, -q), --version, the
early backbone check, `list backbones`, `cache ls` names and a reader that leaves the pipe."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oodbench.logs import cli_logging, setup_logging
from oodbench.progress import PlainProgress, progress, say

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oodbench", *args], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, **kw)


def test_plain_progress_logs_set_count_rate_and_eta(capsys):
    with cli_logging():
        with progress(terminal=False, every_s=0.0) as bar:
            assert isinstance(bar, PlainProgress)
            t = bar.add_task("extract ID", total=4, extra="toy")
            bar.advance(t, 1)
            bar.update(t, completed=4)
            bar.advance(t, 0)  # finished: no second final line
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "extract ID" in ln]
    assert len(lines) == 2, err
    assert "1/4 images" in lines[0] and "img/s" in lines[0] and "ETA" in lines[0]
    assert "4/4 images" in lines[1] and "done in" in lines[1] and "(toy)" in lines[1]


def test_plain_progress_waits_between_lines():
    bar = PlainProgress(every_s=3600)
    t = bar.add_task("extract far", total=100)
    for _ in range(50):
        bar.advance(t, 1)
    assert bar.lines == []  # not due yet; the end always is
    bar.advance(t, 50)
    assert len(bar.lines) == 1 and "100/100" in bar.lines[0]


def test_a_quiet_progress_is_rich_and_disabled():
    with progress(quiet=True, terminal=False) as bar:
        assert not isinstance(bar, PlainProgress) and bar.disable


def test_plain_log_lines_drop_markup_and_name_other_loggers_warnings(capsys):
    with cli_logging():
        setup_logging(terminal=False)
        say("[bold]oodbench[/] toy | seeds [0]")
        logging.getLogger("open_clip_like").warning("pretrained weights [x] missing")
        logging.getLogger("some.lib").info("not shown: other libraries' info")
    err = capsys.readouterr().err
    assert "oodbench toy | seeds [0]" in err and "[bold]" not in err
    assert "warning [open_clip_like]: pretrained weights [x] missing" in err
    assert "not shown" not in err


def test_quiet_keeps_warnings_only_and_is_restored_after_the_command(capsys):
    with cli_logging(quiet=True):
        say("hidden")
        logging.getLogger("oodbench").warning("kept")
    say("shown again")  # the command's -q did not outlive it
    err = capsys.readouterr().err
    assert "hidden" not in err and "kept" in err and "shown again" in err


def test_version():
    r = cli("--version")
    import oodbench

    assert r.returncode == 0 and r.stdout.strip() == f"oodbench {oodbench.__version__}"


def test_a_bad_backbone_is_refused_before_any_data_work(tmp_path, capsys, monkeypatch):
    """The data root does not exist and the cache is not created: the backbone is checked first."""
    from oodbench.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec, said in (("ViT-B-61:openai", "unknown open_clip architecture 'ViT-B-61'"),
                       ("ViT-B-16:opnai", "no pretrained tag 'opnai'"),
                       ("ViT-B-16:/no/such/weights.pt", "weights file /no/such/weights.pt"),
                       ("ViT-B-32:openai", "not in the local cache")):
        rc = main(["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
                   spec, "--data-root", str(tmp_path / "nowhere"), "--cache-dir",
                   str(tmp_path / "c")])
        err = capsys.readouterr().err
        assert rc == 2 and said in err, err
        assert "data root" not in err and not (tmp_path / "c").exists()


def test_weights_in_the_hub_cache_count_as_present(tmp_path, monkeypatch):
    """A snapshot laid out as huggingface_hub writes it makes ARCH:TAG present (and checked)."""
    import huggingface_hub.constants as hc
    import open_clip

    from oodbench.backbones.openclip import OpenClipBackbone, weights_present

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not weights_present("ViT-B-32", "openai")
    repo, filename = os.path.split(open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"])
    folder = tmp_path / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    snap = folder / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / (filename or "open_clip_model.safetensors")).write_bytes(b"not real weights")
    assert weights_present("ViT-B-32", "openai")
    OpenClipBackbone().check("ViT-B-32:openai")  # present: accepted (loading is another step)


def test_list_backbones_shows_open_clip_tags_and_random_init():
    r = cli("list", "backbones")
    assert r.returncode == 0
    assert "open_clip weights" in r.stdout and "ARCH:random" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["ViT-B-16"])
    assert "openai" in line and "laion2b_s34b_b88k" in line


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory, standin_root):
    root = tmp_path_factory.mktemp("c")
    r = cli("run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
            "tiny-random", "--data-root", str(standin_root), "--cache-dir", str(root),
            "--results-dir", str(root.parent / "r"), "--workers", "0", "-q")
    assert r.returncode == 0 and r.stderr == "", r.stderr  # -q: nothing but warnings
    return root


def test_cache_ls_names_backbones_and_sets(small_cache):
    r = cli("cache", "ls", "--cache-dir", str(small_cache))
    assert r.returncode == 0, r.stderr
    assert "tiny-random global features of iNaturalist (5 images)" in r.stdout
    assert "mcm scores on imagenet1k-mos4/SUN, seed 0, tiny-random" in r.stdout
    assert "readability check of Textures" in r.stdout


def test_cache_ls_counts_the_toy_world(small_cache):
    world = small_cache / "toy-world" / "toy"
    world.mkdir(parents=True)
    (world / "a.png").write_bytes(b"x" * 2_000_000)
    try:
        r = cli("cache", "ls", "--cache-dir", str(small_cache))
        assert "toy world (generated images)" in r.stdout and "2.00 MB" in r.stdout
    finally:
        (world / "a.png").unlink()
        world.rmdir()
        world.parent.rmdir()


def test_cache_ls_into_a_closed_pipe_ends_quietly(small_cache):
    p = subprocess.Popen([sys.executable, "-m", "oodbench", "cache", "ls", "--cache-dir",
                          str(small_cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    p.stdout.close()  # the reader is gone before the first line (as `| head -0`)
    err = p.stderr.read().decode()
    assert p.wait() == 141 and "Traceback" not in err and "BrokenPipe" not in err, err

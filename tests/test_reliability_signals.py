"""SIGTERM and a second Ctrl-C (issue 16, case 11): a word, an exit code, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The real console script's main, with a run that waits (after the readability check) holding an
# object whose destructor is slow, as a DataLoader shutting its workers down is.
SCRIPT = """
import sys, time
import oodbench.runner as R
from oodbench.cli import main

class Workers:
    def __del__(self):
        print("cleanup", flush=True)
        time.sleep(1.5)

real = R.readable_manifests
def waiting(*a, **k):
    out = real(*a, **k)
    workers = Workers()
    print("ready", flush=True)
    time.sleep(60)
    return out
R.readable_manifests = waiting
sys.exit(main(sys.argv[1:]))
"""


def start(tmp_path: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
            "tiny-random", "--data-root", str(root), "--quiet", "--workers", "0",
            "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")]
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, *argv], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_says_so_and_exits_143(standin_root, tmp_path):
    p = start(tmp_path, standin_root)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "oodbench: terminated (SIGTERM); finished chunks and records are kept" in err
    assert "Traceback" not in err and "Exception ignored" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_ctrl_c_while_cleaning_up_exits_without_a_traceback(standin_root, tmp_path):
    p = start(tmp_path, standin_root)
    p.send_signal(signal.SIGINT)
    assert p.stdout.readline().strip() == "cleanup"  # unwinding: the slow destructor runs
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted again; exiting now" in err
    assert "Traceback" not in err and "Exception ignored" not in err

"""Records that smoke runs cannot overwrite, and a leaderboard that does not trust the results
folder (issue 16, cases 2 and 8).

A ``--limit`` run (or one without unreadable images) is another measurement: its record path says
so, the full run's record stays byte for byte, and the leaderboard leaves it out unless asked.
A copy of a record never counts as a second seed; a malformed record is named, not a traceback.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest

from oodbench.cli import main
from oodbench.runner import measurement_suffix

FOLDER = "runs/imagenet1k-mos4/tiny-random/mcm"


def run(capsys, root: Path, tmp: Path, *args: str) -> int:
    code = main(["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
                 "tiny-random", "--workers", "0", "--quiet", "--data-root", str(root),
                 "--cache-dir", str(tmp / "cache"), "--results-dir", str(tmp / "results"), *args])
    capsys.readouterr()
    return code


def sums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def rows(board: Path) -> list[dict]:
    with open(board / "imagenet1k-mos4.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def results(standin_root, tmp_path_factory) -> Path:
    """A full run, then a --limit 2 run into the same results folder."""
    tmp = tmp_path_factory.mktemp("records")
    capsys = type("C", (), {"readouterr": staticmethod(lambda: None)})
    assert run(capsys, standin_root, tmp) == 0
    full = sums(tmp / "results" / FOLDER)
    assert run(capsys, standin_root, tmp, "--limit", "2") == 0
    (tmp / "full.json").write_text(json.dumps(full))
    return tmp


def test_a_limit_run_keeps_the_full_runs_record(results):
    folder = results / "results" / FOLDER
    full = json.loads((results / "full.json").read_text())
    assert set(full) == {"seed0.json", "seed0.npz"}  # a full run's path is unchanged
    now = sums(folder)
    assert {k: now[k] for k in full} == full  # byte for byte
    (limited,) = [n for n in now if n.endswith(".json") and n != "seed0.json"]
    assert limited.startswith("seed0_limit2_") and limited[:-5] + ".npz" in now
    rec = json.loads((folder / limited).read_text())
    assert rec["limit"] == 2 and rec["scores_file"] == limited[:-5] + ".npz"


def test_the_leaderboard_leaves_limited_runs_out_unless_asked(results, capsys):
    res = results / "results"
    assert main(["leaderboard", "--results-dir", str(res), "--quiet"]) == 0
    assert "1 smoke run(s) (--limit) left out" in capsys.readouterr().err
    (row,) = rows(res / "leaderboard")
    assert row["limit"] == "" and row["n_seeds"] == "1"
    assert main(["leaderboard", "--results-dir", str(res), "--quiet", "--include-limited"]) == 0
    both = rows(res / "leaderboard")
    assert sorted(r["limit"] for r in both) == ["", "2"]
    md = (res / "leaderboard" / "imagenet1k-mos4.md").read_text()
    assert "| mcm (smoke: ≤2 images/set) |" in md and "| mcm |" in md


def test_the_suffix_encodes_limit_skips_and_the_image_lists():
    digests = {"ID": "a" * 64, "SUN": "b" * 64}
    assert measurement_suffix(None, {}, digests) == ""
    assert measurement_suffix(None, {"SUN": 0}, digests) == ""
    a = measurement_suffix(100, {}, digests)
    assert a.startswith("_limit100_") and len(a) == len("_limit100_") + 8
    assert measurement_suffix(100, {"SUN": 3}, digests).startswith("_limit100_skip3_")
    assert measurement_suffix(100, {}, {**digests, "SUN": "c" * 64}) != a  # another data root


def test_a_copied_record_is_not_a_second_seed(results, capsys, tmp_path):
    res = tmp_path / "res"
    (res / FOLDER).mkdir(parents=True)
    src = results / "results" / FOLDER
    for name in ("seed0.json", "seed0.npz"):
        (res / FOLDER / name).write_bytes((src / name).read_bytes())
    (res / FOLDER / "seed0 (copy).json").write_bytes((src / "seed0.json").read_bytes())
    assert main(["leaderboard", "--results-dir", str(res), "--quiet"]) == 0
    assert "seed0 (copy).json is not named like a result record" in capsys.readouterr().err
    (row,) = rows(res / "leaderboard")
    assert row["n_seeds"] == "1"


@pytest.mark.parametrize("damage", [
    lambda d: [1, 2, 3],
    lambda d: {**d, "metrics": None},
    lambda d: {**d, "metrics": {"SUN": {"auroc": "0.9"}}},
    lambda d: {**d, "seed": 7},
    lambda d: {**d, "detector": "mcm"},
    lambda d: {**d, "protocol": None},
    "folder",
    "dangling",
])
def test_malformed_records_are_named_not_a_traceback(results, capsys, tmp_path, damage):
    res = tmp_path / "res"
    (res / FOLDER).mkdir(parents=True)
    good = json.loads((results / "results" / FOLDER / "seed0.json").read_text())
    bad = res / FOLDER / "seed1.json"
    if damage == "folder":
        bad.mkdir()
    elif damage == "dangling":
        os.symlink(tmp_path / "nowhere.json", bad)
    else:
        bad.write_text(json.dumps(damage({**good, "seed": 1})))
    assert main(["leaderboard", "--results-dir", str(res), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oodbench: error: result record ") and str(bad) in err
    assert "Traceback" not in err
    assert not (res / "leaderboard").exists()

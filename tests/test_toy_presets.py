"""The toy presets file: written by benchmarks/toy/select_presets.py, read by the detectors."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from oodbench.training.presets import TOY_PRESETS_PATH, toy_preset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    """The selection script as a module (it lives outside the package)."""
    spec = importlib.util.spec_from_file_location(
        "select_presets", ROOT / "benchmarks" / "toy" / "select_presets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_detectors_read_their_toy_preset_from_the_file():
    from oodbench.detectors import adaneg, clipn, krnft, lapt, local_prompt, locoop

    data = json.loads(TOY_PRESETS_PATH.read_text())["presets"]
    assert locoop.TOY_PRESET == data["locoop"]
    assert local_prompt.TOY_PRESET == data["local-prompt"]
    assert krnft.TOY_PRESET == data["krnft"]
    assert lapt.TOY_PRESET == data["lapt"]
    assert adaneg.TOY_PRESET == data["adaneg"]
    assert clipn.CLIPNParams().toy_steps == data["clipn"]["toy_steps"]
    assert clipn.TOY_GLOBAL_BATCH == data["clipn"]["toy_batch"]
    assert toy_preset("locoop") is not toy_preset("locoop")  # a fresh dict each time


def test_every_preset_is_the_fixed_budget_plus_one_grid_point(script):
    data = json.loads(TOY_PRESETS_PATH.read_text())
    assert data["protocol"] == "toy-val"
    assert set(data["presets"]) == set(script.GRID)
    for det, preset in data["presets"].items():
        assert {**preset} in [{**script.FIXED[det], **p} for p in script.grid_points(det)], det


def test_presets_were_chosen_for_the_shipped_weights_and_match_the_sweep_table(script):
    data = json.loads(TOY_PRESETS_PATH.read_text())
    weights = json.loads((TOY_PRESETS_PATH.parent / "toy_clip.json").read_text())
    assert data["toy_clip_sha256"] == weights["sha256"]
    with open(script.SWEEP_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    for det in script.GRID:
        mine = [r for r in rows if r["detector"] == det]
        assert len(mine) == len(script.grid_points(det)), det
        results = [{"point": {k: type(v)(r[f"param:{k}"]) for k, v in p.items()},
                    "row": {"avg_fpr95": float(r["avg_fpr95"]),
                            "avg_auroc": float(r["avg_auroc"])}}
                   for p, r in zip(script.grid_points(det), mine, strict=True)]
        chosen = script.choose(results)
        assert [r["chosen"] for r in mine] == [str(x["point"] == chosen) for x in results]
        assert all(data["presets"][det][k] == v for k, v in chosen.items())


def test_choose_takes_the_lowest_fpr_then_the_higher_auroc_then_the_first(script):
    def res(p, fpr, auroc):
        return {"point": {"x": p}, "row": {"avg_fpr95": fpr, "avg_auroc": auroc}}

    assert script.choose([res(1, 20.0, 90.0), res(2, 10.0, 80.0)]) == {"x": 2}
    assert script.choose([res(1, 10.0, 80.0), res(2, 10.0, 90.0)]) == {"x": 2}
    assert script.choose([res(1, 10.0, 90.0), res(2, 10.0, 90.0)]) == {"x": 1}

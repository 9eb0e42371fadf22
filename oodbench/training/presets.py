"""Toy presets: small training budgets for the toy protocols, with the paper values as defaults.

Trainable detectors keep the paper's hyperparameters as their ``Params`` defaults and carry a
``preset`` field: ``auto`` (default) applies the detector's toy preset on protocols whose name
starts with "toy", ``toy`` always, ``paper`` never. A preset only changes fields the user did not
set (with ``--param``, even to the paper value); the record's ``train`` names the preset and the
effective values.

The toy preset values live in one data file, ``oodbench/toy/weights/toy_presets.json``, beside the
toy CLIP they were chosen for; ``benchmarks/toy/select_presets.py`` is its only writer (it picks
the swept fields on the ``toy-val`` protocol, never on a test set, and records the sweep).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

TOY_PRESETS_PATH = Path(__file__).resolve().parents[1] / "toy" / "weights" / "toy_presets.json"


@functools.cache
def _toy_presets() -> dict:
    """The presets file's ``presets`` table (detector name -> field values)."""
    try:
        return json.loads(TOY_PRESETS_PATH.read_text())["presets"]
    except (OSError, ValueError, KeyError) as e:
        raise RuntimeError(
            f"toy presets unreadable at {TOY_PRESETS_PATH} ({e}); reinstall oodbench or rerun "
            "python benchmarks/toy/select_presets.py") from e


def toy_preset(detector: str) -> dict:
    """The toy preset of one detector (a fresh dict) as the selection script wrote it."""
    return dict(_toy_presets().get(detector, {}))


def is_toy(protocol_name: str) -> bool:
    """True for the toy protocols (``toy``, ``toy-unseen``, ``toy-shift``)."""
    return protocol_name.startswith("toy")


def apply_preset(params, preset: dict, protocol_name: str):
    """``params`` with ``preset`` applied to every field the user did not set."""
    if params.preset == "paper" or (params.preset == "auto" and not is_toy(protocol_name)):
        return params
    given = params.given_fields()
    changes = {k: v for k, v in preset.items() if k not in given}
    return dataclasses.replace(params, **changes)


def preset_name(given, used) -> str:
    """'toy' when the preset changed anything, else 'paper' (for the record)."""
    return "paper" if given == used else "toy"

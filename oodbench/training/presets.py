"""Toy presets: small training budgets for the toy protocols, with the paper values as defaults.

Trainable detectors keep the paper's hyperparameters as their ``Params`` defaults and carry a
``preset`` field: ``auto`` (default) applies the detector's toy preset on protocols whose name
starts with "toy", ``toy`` always, ``paper`` never. A preset only changes fields the user did not
set (with ``--param``, even to the paper value); the record's ``train`` names the preset and the
effective values.
"""

from __future__ import annotations

import dataclasses


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

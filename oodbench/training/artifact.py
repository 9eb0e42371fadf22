"""Finished training artifacts: `final.pt` weights plus a `final.json` sidecar with their sha256.

Both trainers (few-shot and contrastive) store their results this way; an artifact is reused only
when its weights still hash to the recorded sum, otherwise the run is trained again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from oodbench.features.cache import array_sha256
from oodbench.io import atomic_write, atomic_write_json


def artifact_paths(run_dir: Path) -> tuple[Path, Path]:
    """(weights, sidecar) of the artifact in ``run_dir``."""
    return run_dir / "final.pt", run_dir / "final.json"


def load_artifact(run_dir: Path, device: torch.device) -> tuple[dict, dict] | None:
    """(state dict, sidecar) of a finished, intact artifact; None when absent or damaged."""
    final, meta_path = artifact_paths(run_dir)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(meta, dict) and "sha256" in meta and "result" in meta):
        return None
    if not final.is_file() or array_sha256(final) != meta["sha256"]:
        return None
    return torch.load(final, map_location=device, weights_only=True), meta


def save_artifact(run_dir: Path, state: dict, meta: dict) -> str:
    """Write the weights, then the sidecar with their sha256 (each atomically); returns the sum."""
    final, meta_path = artifact_paths(run_dir)
    atomic_write(final, lambda f: torch.save(state, f))
    sha = array_sha256(final)
    atomic_write_json(meta_path, {**meta, "sha256": sha})
    return sha

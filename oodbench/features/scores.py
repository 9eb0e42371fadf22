"""Scoring a set, and the key of the score cache: detectors' scores are cached like features.

A score entry's key names the features it was computed from, the detector (name, version,
hyperparameters and the sha256 of its source file), the seed, the protocol (version, class lists,
training split) and the backbone; an edit of any of them makes a new entry.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import torch

from oodbench.detectors.base import Detector
from oodbench.errors import ConfigError
from oodbench.features.cache import Cache, spec_key
from oodbench.features.extract import feature_spec
from oodbench.protocols.base import Protocol

SCORE_BATCH = 4096


def score_arrays(
    det: Detector, arrays: dict[str, np.ndarray], device: torch.device, batch: int = SCORE_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """Score a whole set in batches: float64 scores and int64 predictions."""
    n = len(next(iter(arrays.values())))
    scores, preds = [], []
    with torch.inference_mode():
        for i in range(0, n, batch):
            fb = {
                k: torch.from_numpy(np.array(v[i : i + batch])).to(device, torch.float32)
                for k, v in arrays.items()
            }
            s, p = det.score_and_predict(fb)
            scores.append(s.double().cpu().numpy())
            preds.append(p.cpu().numpy().astype(np.int64))
    if not scores:
        return np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(scores), np.concatenate(preds)


@functools.cache
def detector_code_digest(cls: type) -> str:
    """sha256 of the source file defining a detector, so that cached scores do not outlive an edit
    of its code or of its toy preset (which a user's params alone would not reveal). A plugin's
    detector (defined outside oodbench) hashes its whole package instead (:func:`package_digest`):
    an edit of any helper module it imports counts too.

    A class with no file to read (typed into ``python -`` or a notebook) is hashed from its own
    source when ``inspect`` finds it, else from the bytecode of its methods (:func:`code_bytes`);
    one of ``__main__`` adds its own bytecode to the file's hash, since code run by ``exec`` or a
    notebook kernel is not in the file that ``__main__`` names.
    """
    if cls.__module__.split(".", 1)[0] not in ("oodbench", "__main__"):
        return package_digest(cls.__module__)
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:  # a built-in or C-defined class
        path = None
    if path and Path(path).is_file():
        data = Path(path).read_bytes()
        if cls.__module__ == "__main__":
            data += b"\0" + code_bytes(cls)
        return hashlib.sha256(data).hexdigest()[:16]
    try:
        data = inspect.getsource(cls).encode()
    except (OSError, TypeError):
        data = code_bytes(cls)
    return hashlib.sha256(data).hexdigest()[:16]


def code_bytes(cls: type) -> bytes:
    """A class's own definition as bytes: qualified name, bytecode and constants of every function
    in its body (nested ones included), and the repr of its other attributes, in order."""
    out = [f"{cls.__module__}:{cls.__qualname__}".encode()]

    def code(c) -> None:
        out.extend([c.co_name.encode(), c.co_code, repr(c.co_names).encode()])
        for k in c.co_consts:
            code(k) if inspect.iscode(k) else out.append(_stable_repr(k))

    for name, value in cls.__dict__.items():
        func = getattr(value, "__func__", value)  # staticmethod / classmethod
        out.append(name.encode())
        if inspect.isfunction(func):
            code(func.__code__)
        elif name not in ("__dict__", "__weakref__", "__module__", "__doc__"):
            out.append(_stable_repr(value))
    return b"\0".join(out)


def _stable_repr(value: object) -> bytes:
    """repr that does not depend on the process's hash seed (sets listed sorted)."""
    if isinstance(value, (set, frozenset)):
        return repr(sorted(repr(v) for v in value)).encode()
    return repr(value).encode()


def package_digest(module: str) -> str:
    """sha256 over every ``.py`` file of the top-level package that holds ``module`` (its whole
    module tree, names and bytes) and its distribution's version, when it is installed as one."""
    import sys

    from oodbench.registry import distribution_of

    top = module.split(".", 1)[0]
    mod = sys.modules.get(top)
    h = hashlib.sha256(repr(distribution_of(top)).encode())
    roots = list(getattr(mod, "__path__", []) or [])
    files = ([(f"{i}/{p.relative_to(r).as_posix()}", p) for i, r in enumerate(map(Path, roots))
              for p in sorted(Path(r).rglob("*.py"))] if roots
             else [(top, Path(mod.__file__))] if getattr(mod, "__file__", None) else [])
    for name, path in files:
        h.update(f"{name}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def score_spec(
    det: Detector, seed: int, protocol: Protocol, backbone, manifest, kinds, decode: str = "cpu"
) -> dict:
    """Cache key of one detector's scores on one set (entries of layout 2 carry setup's info)."""
    train = protocol.train.manifest.digest() if protocol.train is not None else None
    return {
        "layout": 2,
        "features": {k: spec_key(feature_spec(backbone, manifest, k, decode)) for k in kinds},
        "detector": det.describe(),
        "code": detector_code_digest(type(det)),
        "seed": seed,
        "protocol": {
            "name": protocol.name,
            "version": protocol.version,
            "classes": _sha(protocol.classnames),
            "train": train,
            "train_classes": _sha(protocol.training_classnames()),
            **({"templates": list(protocol.templates)} if protocol.templates else {}),
        },
        "backbone": backbone.key(),
    }


class StoredScores:
    """One (detector, seed)'s scores on every set of a protocol: read from the score cache when
    every set has an entry (``hit``), else computed and written there, set by set."""

    def __init__(self, cache: Cache, det: Detector, seed: int, protocol: Protocol, backbone,
                 manifests: dict, kinds: list[str], decode: str = "cpu"):
        self.cache, self.protocol, self.manifests = cache, protocol, manifests
        self.specs = {name: score_spec(det, seed, protocol, backbone, m, kinds, decode)
                      for name, m in manifests.items()}
        self.cached = {n: cache.load("scores", sp, mmap=False) for n, sp in self.specs.items()}
        self.hit = all(v is not None for v in self.cached.values())

    def setup_info(self) -> dict:
        """What setup reported (training split, checkpoint) when the cached scores were made."""
        meta = self.cache.meta("scores", self.specs[self.protocol.id_test.name])
        return dict(meta.get("setup_info", {}))

    def get_or_score(self, det: Detector, arrays: dict[str, dict], device: torch.device,
                     info: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(scores, predictions) per set: the cached ones on a hit, else ``det`` scores
        ``arrays`` and each set's result is cached with ``info``."""
        scores, preds = {}, {}
        for name, spec in self.specs.items():
            if self.hit:
                both = self.cached[name]
            else:
                sc, pr = score_arrays(det, arrays[name], device)
                check_scores(det.name, name, sc, self.manifests[name])
                both = np.stack([sc, pr.astype(np.float64)])
                self.cache.save("scores", spec, both, detector=det.name, set=name,
                                setup_info=info)
            scores[name], preds[name] = both[0], both[1].astype(np.int64)
        return scores, preds


def check_scores(detector: str, set_name: str, scores: np.ndarray, manifest) -> None:
    """Refuse NaN or inf scores before they are cached or ranked, naming the images."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        shown = ", ".join(str(manifest.absolute(int(i))) for i in bad[:3])
        raise ConfigError(
            f"{detector} gave {bad.size} non-finite (NaN or inf) score(s) on set {set_name!r}, "
            f"e.g. {shown}; nothing was cached or recorded. Check its hyperparameters (a "
            "temperature of 0 or inf, a zero weight) and the features of these images")


def _sha(names: list[str]) -> str:
    return hashlib.sha256(json.dumps(list(names)).encode()).hexdigest()[:16]

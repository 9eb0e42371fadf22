"""MCM and the logit baselines against their formulas, on features the runner cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oodbench.backbones import load_backbone
from oodbench.data.classnames import imagenet1k_classnames
from oodbench.features.cache import Cache
from oodbench.features.extract import feature_spec
from oodbench.registry import PROTOCOLS
from oodbench.runner import RunSpec, run

MCM_CODE = {"interpolation": "bilinear", "resize": 32}  # tiny-random's input is 32 pixels


@pytest.fixture(scope="module")
def mos4_run(standin_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mcm")
    spec = RunSpec(detectors=["mcm", "msp", "maxlogit", "energy"], protocol="imagenet1k-mos4",
                   backbone="tiny-random", data_root=str(standin_root), cache_dir=str(tmp / "c"),
                   results_dir=str(tmp / "r"), workers=0, quiet=True)
    return spec, run(spec)


def _direct(spec, standin_root, preprocess=None):
    """Cached image features and freshly encoded text features, computed without the detectors;
    ``preprocess`` names the official recipe's preprocessing (MCM's code: bilinear Resize)."""
    bb = load_backbone("tiny-random", preprocess=preprocess)
    proto = PROTOCOLS.get("imagenet1k-mos4")().build(standin_root, None)
    cache = Cache(spec.cache_dir)
    feats = {s.name: np.asarray(cache.load("images", feature_spec(bb, s.manifest, "global")))
             for s in proto.sets()}
    text = bb.encode_text([f"a photo of a {c}" for c in imagenet1k_classnames()]).numpy()
    return feats, text.astype(np.float64)


def test_mcm_equals_direct_computation_from_cached_features(mos4_run, standin_root):
    spec, records = mos4_run
    feats, text = _direct(spec, standin_root, MCM_CODE)
    saved = np.load(f"{spec.results_dir}/runs/imagenet1k-mos4/tiny-random/mcm/seed0.npz")
    for name, f in feats.items():
        s = f.astype(np.float64) @ text.T  # raw cosines, T = 1
        p = np.exp(s - s.max(1, keepdims=True))
        expected = (p / p.sum(1, keepdims=True)).max(1)
        np.testing.assert_allclose(saved[f"scores/{name}"], expected, rtol=1e-5, atol=1e-9)
        # the predicted class is the top one up to float32 rounding of the cosines (float32
        # features and text, a dot product over the embedding width): a near tie may flip
        picked = s[np.arange(len(s)), saved[f"preds/{name}"]]
        assert (picked >= s.max(1) - f.shape[1] * np.finfo(np.float32).eps).all()


def _lse(z):
    return np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)


def test_logit_baselines_match_their_formulas(mos4_run, standin_root):
    """MCM's code: energy = logsumexp and max-logit = max of the raw cosines (T = 1), on bilinear
    Resize(224) images; MSP: softmax of 100 x cosine (CLIPN's zero_shot_infer.py), on the
    weights' transform."""
    spec, _ = mos4_run
    feats, text = _direct(spec, standin_root, MCM_CODE)
    s = feats["ImageNet-1k"].astype(np.float64) @ text.T
    feats_own, text_own = _direct(spec, standin_root)
    z = 100.0 * feats_own["ImageNet-1k"].astype(np.float64) @ text_own.T  # CLIPN's MSP
    expected = {"maxlogit": s.max(1), "energy": _lse(s), "msp": np.exp(z.max(1) - _lse(z))}
    for det, exp in expected.items():
        got = np.load(f"{spec.results_dir}/runs/imagenet1k-mos4/tiny-random/{det}/seed0.npz")
        np.testing.assert_allclose(got["scores/ImageNet-1k"], exp, rtol=1e-4, atol=1e-6)


def test_mcm_default_template_and_temperature_follow_the_paper():
    from oodbench.detectors.mcm import MCM

    p = MCM().params
    assert p.template == "a photo of a {}" and p.temperature == 1.0


def test_mcm_temperature_sharpens_but_keeps_the_argmax():
    from oodbench.detectors.mcm import MCM

    det = MCM({"temperature": 0.01})
    det.text = torch.eye(4)
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.0, 0.0]]), dim=1)
    assert det.score({"global": x}).item() > MCM().score_from_logits(x @ det.text.T).item()
    assert det.predict({"global": x}).item() == 0

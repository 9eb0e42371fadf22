"""Non-finite features and scores, and damaged toy weights (issue 16, case 6).

Each ends with exit code 2 and a message naming what and where, before anything is cached or
recorded; none is a traceback after all the work.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import oodbench.features.extract as E
from oodbench.cli import main
from oodbench.metrics import MetricsError, ood_metrics
from oodbench.toy import model as toy_model


def run(capsys, root: Path | None, tmp: Path, *args: str, backbone: str = "tiny-random",
        protocol: str = "imagenet1k-mos4") -> tuple[int, str]:
    argv = ["run", "--detector", "mcm", "--protocol", protocol, "--backbone", backbone,
            "--workers", "0", "--quiet", "--cache-dir", str(tmp / "c"),
            "--results-dir", str(tmp / "r"), *args]
    if root is not None:
        argv += ["--data-root", str(root)]
    code = main(argv)
    return code, capsys.readouterr().err


def test_non_finite_features_name_the_set_and_image(standin_root, tmp_path, capsys, monkeypatch):
    enc, dtype = E.KIND_ENCODERS["global"]

    def nan_for_the_second(bb, x):
        out = enc(bb, x)
        if len(out) > 1:
            out[1] = float("nan")
        return out

    monkeypatch.setitem(E.KIND_ENCODERS, "global", (nan_for_the_second, dtype))
    code, err = run(capsys, standin_root, tmp_path)
    assert code == 2 and "Traceback" not in err, err
    assert "non-finite (NaN or inf) global features" in err and "of set 'ImageNet-1k'" in err
    assert "ILSVRC2012_val_00001.JPEG" in err  # the second image of the first set
    assert not (tmp_path / "r").exists()
    assert not any((tmp_path / "c").glob("images/*/*/*.npy"))


def test_non_finite_scores_are_named_before_the_metrics(standin_root, tmp_path, capsys,
                                                       monkeypatch):
    from oodbench.detectors.mcm import MCM

    real = MCM.score_and_predict

    def nan_for_the_second(self, feats):
        s, p = real(self, feats)
        s = s.clone()
        s[1:2] = float("nan")
        return s, p

    monkeypatch.setattr(MCM, "score_and_predict", nan_for_the_second)
    code, err = run(capsys, standin_root, tmp_path)
    assert code == 2 and "Traceback" not in err, err
    assert "mcm gave" in err and "non-finite (NaN or inf) score(s) on set 'ImageNet-1k'" in err
    assert "ILSVRC2012_val_00001.JPEG" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "c" / "scores").exists()


def test_metrics_refuse_non_finite_scores_with_a_message():
    with pytest.raises(MetricsError, match="non-finite value"):
        ood_metrics(np.array([0.5, np.nan]), np.array([0.1, 0.2]))


def test_a_bit_flip_in_the_toy_weights_is_refused(tmp_path, capsys, monkeypatch):
    src = toy_model.WEIGHTS_PATH
    weights = tmp_path / "w" / src.name
    weights.parent.mkdir()
    shutil.copy(src.with_suffix(".json"), weights.with_suffix(".json"))
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of a tensor
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(toy_model, "WEIGHTS_PATH", weights)
    code, err = run(capsys, None, tmp_path, backbone="toy", protocol="toy")
    assert code == 2 and "Traceback" not in err, err
    assert f"toy CLIP weights {weights} are damaged" in err and "not the recorded" in err
    # the shipped file itself matches its record
    assert isinstance(toy_model.load_toy_clip(src), torch.nn.Module)

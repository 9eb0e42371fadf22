"""The runner: records as the schema says, features extracted once, caches reused across runs."""

from __future__ import annotations

import json

import pytest

from oodbench.record import ResultRecord
from oodbench.runner import RunSpec, run


def _spec(root, tmp, detectors, **kw):
    return RunSpec(detectors=detectors, protocol="imagenet1k-mos4", backbone="tiny-random",
                   data_root=str(root), cache_dir=str(tmp / "cache"), results_dir=str(tmp / "res"),
                   workers=0, quiet=True, **kw)


def test_record_has_every_documented_field(standin_root, tmp_path):
    (rec,) = run(_spec(standin_root, tmp_path, ["mcm"]))
    path = tmp_path / "res/runs/imagenet1k-mos4/tiny-random/mcm/seed0.json"
    d = json.loads(path.read_text())
    assert ResultRecord.from_dict(d).to_dict() == json.loads(json.dumps(rec.to_dict()))
    assert set(d["metrics"]) == {"iNaturalist", "SUN", "Places", "Textures"}
    for m in d["metrics"].values():
        assert set(m) == {"auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out"}
    assert {"average", "far"} <= set(d["groups"])
    assert d["protocol"]["sets"]["ImageNet-1k"]["n"] == 12
    assert len(d["protocol"]["sets"]["iNaturalist"]["manifest_sha256"]) == 64
    assert d["detector"] == {"name": "mcm", "version": "1",
                             "params": {"template": "a photo of a {}", "temperature": 1.0}}
    assert {"extract", "setup", "score", "total"} <= set(d["timings"])
    assert {"torch", "open_clip", "git_commit", "device"} <= set(d["environment"])
    assert (path.parent / d["scores_file"]).is_file()


def test_second_detector_extracts_no_image_features(standin_root, tmp_path):
    (first,) = run(_spec(standin_root, tmp_path, ["mcm"]))
    assert all(v["global"] == "extracted" for v in first.cache["images"].values())
    (second,) = run(_spec(standin_root, tmp_path, ["energy"]))
    assert all(v == {"global": "cache"} for v in second.cache["images"].values())
    assert second.cache["text_misses"] == 0  # same prompts as MCM: text cache hit
    (again,) = run(_spec(standin_root, tmp_path, ["mcm"]))
    assert again.cache["scores_hit"] and again.metrics == first.metrics


def test_detectors_of_one_run_share_features(standin_root, tmp_path):
    a, b = run(_spec(standin_root, tmp_path, ["mcm", "maxlogit"]))
    assert all(v == {"global": "memory"} for v in b.cache["images"].values())
    assert b.timings["extract"] == 0.0


def test_changed_hyperparameters_get_their_own_record(standin_root, tmp_path):
    run(_spec(standin_root, tmp_path, ["mcm"], params={"mcm": {"temperature": 2.0}}))
    runs = tmp_path / "res/runs/imagenet1k-mos4/tiny-random"
    (d,) = [p.name for p in runs.iterdir()]
    assert d.startswith("mcm@")


def test_seeds_write_one_record_each(standin_root, tmp_path):
    recs = run(_spec(standin_root, tmp_path, ["mcm"], seeds=[0, 1]))
    assert [r.seed for r in recs] == [0, 1]
    assert (tmp_path / "res/runs/imagenet1k-mos4/tiny-random/mcm/seed1.json").is_file()


def test_bad_run_spec_fields_are_named():
    from oodbench.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown field"):
        RunSpec.from_dict({"detectors": ["mcm"], "protocol": "toy", "backbone": "toy", "sedes": 1})
    with pytest.raises(ConfigError, match="temperature"):
        from oodbench.runner import make_detector

        make_detector("mcm", {"temperature": "hot"})

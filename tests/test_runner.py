"""The runner: records as the schema says, features extracted once, caches reused across runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import oodbench.runner as runner
from oodbench.backbones.base import Backbone
from oodbench.detectors.baselines import MaxLogit
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
    assert d["detector"] == {"name": "mcm", "version": "1", "stochastic": False,
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


def test_cached_scores_do_not_outlive_an_edit_of_the_detector_code(standin_root, tmp_path,
                                                                    monkeypatch):
    run(_spec(standin_root, tmp_path, ["mcm"]))
    (hit,) = run(_spec(standin_root, tmp_path, ["mcm"]))
    assert hit.cache["scores_hit"]
    from oodbench.features import scores

    monkeypatch.setattr(scores, "detector_code_digest", lambda cls: "edited")
    (fresh,) = run(_spec(standin_root, tmp_path, ["mcm"]))
    assert not fresh.cache["scores_hit"]


def test_detectors_of_one_run_share_features(standin_root, tmp_path):
    a, b = run(_spec(standin_root, tmp_path, ["mcm", "maxlogit"]))
    assert all(v == {"global": "memory"} for v in b.cache["images"].values())
    assert b.timings["extract"] == 0.0


def test_changed_hyperparameters_get_their_own_record(standin_root, tmp_path):
    run(_spec(standin_root, tmp_path, ["mcm"], params={"mcm": {"temperature": 2.0}}))
    runs = tmp_path / "res/runs/imagenet1k-mos4/tiny-random"
    (d,) = [p.name for p in runs.iterdir()]
    assert d.startswith("mcm@")


def test_seeds_write_one_record_each(standin_root, tmp_path, monkeypatch):
    from oodbench.detectors.mcm import MCM

    monkeypatch.setattr(MCM, "stochastic", True)  # as a detector whose scores use the seed
    recs = run(_spec(standin_root, tmp_path, ["mcm"], seeds=[0, 1]))
    assert [r.seed for r in recs] == [0, 1]
    assert (tmp_path / "res/runs/imagenet1k-mos4/tiny-random/mcm/seed1.json").is_file()


def test_a_deterministic_detector_runs_once_for_several_seeds(standin_root, tmp_path):
    recs = run(_spec(standin_root, tmp_path, ["mcm", "maxlogit"], seeds=[3, 1]))
    assert [(r.detector["name"], r.seed, r.detector["stochastic"]) for r in recs] == [
        ("mcm", 3, False), ("maxlogit", 3, False)]
    assert not (tmp_path / "res/runs/imagenet1k-mos4/tiny-random/mcm/seed1.json").exists()


def test_bad_run_spec_fields_are_named():
    from oodbench.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown field"):
        RunSpec.from_dict({"detectors": ["mcm"], "protocol": "toy", "backbone": "toy", "sedes": 1})
    with pytest.raises(ConfigError, match="temperature"):
        from oodbench.runner import make_detector

        make_detector("mcm", {"temperature": "hot"})


def test_a_detector_declaring_fp32_gets_fp32_features_under_bf16(standin_root, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(MaxLogit, "precision", "fp32")
    monkeypatch.setattr(MaxLogit, "precision_reason", "kept at fp32 for this test")
    mcm, maxlogit = run(_spec(standin_root, tmp_path, ["mcm", "maxlogit"], precision="bf16"))
    assert mcm.backbone["precision"] == "bf16" and maxlogit.backbone["precision"] == "fp32"
    assert maxlogit.backbone["precision_requested"] == "bf16"
    assert "fp32 used" in maxlogit.backbone["precision_reason"]
    assert "kept at fp32 for this test" in maxlogit.backbone["precision_reason"]
    assert "as requested" in mcm.backbone["precision_reason"]
    # its own cache entries (precision is in the key), extracted, not mcm's bf16 ones
    assert all(v["global"] == "extracted" for v in maxlogit.cache["images"].values())
    images = [json.loads(m.read_text())["spec"] for m in (tmp_path / "cache").glob(
        "images/*/*/meta.json")]
    assert sorted(e["backbone"]["precision"] for e in images) == ["bf16"] * 5 + ["fp32"] * 5
    # the very scores of an fp32 run
    (alone,) = run(_spec(standin_root, tmp_path / "fp32", ["maxlogit"]))
    assert alone.backbone["precision"] == "fp32"
    a = np.load(tmp_path / "res/runs/imagenet1k-mos4/tiny-random/maxlogit/seed0.npz")
    b = np.load(tmp_path / "fp32/res/runs/imagenet1k-mos4/tiny-random/maxlogit/seed0.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_unknown_precision_is_a_config_error(standin_root, tmp_path):
    from oodbench.errors import ConfigError

    with pytest.raises(ConfigError, match="precision 'fp8'"):
        _spec(standin_root, tmp_path, ["mcm"], precision="fp8")


def test_all_detectors_kinds_are_extracted_in_one_pass(tmp_path, monkeypatch):
    """mcm (global) then gl-mcm (global + local): each image is decoded and encoded once."""
    calls: list[tuple[str, tuple[str, ...], int]] = []
    from oodbench.features import provider

    real_extract = provider.extract

    def counting_extract(backbone, manifest, kinds, cache, **kw):
        out = real_extract(backbone, manifest, kinds, cache, **kw)
        calls.append((manifest.name, tuple(kinds), kw["stats"].images_encoded))
        return out

    encoded = []
    real_prepare = Backbone.prepare_images

    def counting_prepare(self, images):
        encoded.append(len(images))
        return real_prepare(self, images)

    monkeypatch.setattr(provider, "extract", counting_extract)
    monkeypatch.setattr(Backbone, "prepare_images", counting_prepare)
    batch = 8
    spec = RunSpec(detectors=["mcm", "gl-mcm"], protocol="toy", backbone="toy", limit=40,
                   batch_size=batch, cache_dir=str(tmp_path / "cache"),
                   results_dir=str(tmp_path / "res"), workers=0, quiet=True)
    mcm, glmcm = run(spec)
    sizes = {name: v["n"] for name, v in mcm.protocol["sets"].items()}
    # one extraction per set, of both kinds, encoding every image of the set once
    assert sorted(calls) == sorted((name, ("global", "local"), n) for name, n in sizes.items())
    total = sum(sizes.values())
    # forward passes: every image once, plus at most one batch encoded twice more by the check
    # that the joint global+local pass equals the kinds' own encoders
    assert total <= sum(encoded) <= total + 2 * batch
    for name, n in sizes.items():  # reported once, to the first record asking for each kind
        assert mcm.cache["images"][name] == {"global": "extracted", "images_encoded": n,
                                             "chunks_reused": 0}
        assert glmcm.cache["images"][name] == {"global": "memory", "local": "extracted"}
    assert mcm.timings["extract"] > 0 and glmcm.timings["extract"] == 0.0


def test_fp32_and_bf16_runs_keep_separate_records_and_leaderboard_rows(standin_root, tmp_path):
    from oodbench.leaderboard import load_runs, rows_of

    run(_spec(standin_root, tmp_path, ["mcm"]))
    run(_spec(standin_root, tmp_path, ["mcm"], precision="bf16"))
    runs = tmp_path / "res/runs/imagenet1k-mos4"
    assert sorted(p.name for p in runs.iterdir()) == ["tiny-random", "tiny-random@bf16"]
    rows = rows_of(load_runs(tmp_path / "res"))
    assert sorted(r.backbone for r in rows) == ["tiny-random", "tiny-random (bf16)"]


def test_a_field_set_to_its_default_by_hand_is_not_the_toy_preset(tmp_path):
    from oodbench.detectors.locoop import LoCoOp

    unset, by_hand = LoCoOp({}), LoCoOp({"shots": 16})  # 16 is the default; the toy preset's is 8
    assert unset.params.to_dict() == by_hand.params.to_dict()
    assert by_hand.describe()["explicit_defaults"] == ["shots"]
    assert "explicit_defaults" not in unset.describe()
    assert runner.record_stem(tmp_path, unset, 0) != runner.record_stem(tmp_path, by_hand, 0)
    assert runner.record_stem(tmp_path, unset, 0).parent.name == "locoop"
    assert LoCoOp({"shots": 8}).params.explicit_defaults() == []


def test_cached_scores_keep_what_setup_recorded(standin_root, tmp_path, monkeypatch):
    from oodbench.detectors.mcm import MCM

    orig = MCM.setup

    def setup(self, ctx):
        orig(self, ctx)
        ctx.info["train"] = {"split": "4-shot seed 0", "checkpoint": "abc"}

    monkeypatch.setattr(MCM, "setup", setup)
    (first,) = run(_spec(standin_root, tmp_path, ["mcm"]))
    (again,) = run(_spec(standin_root, tmp_path, ["mcm"]))
    assert again.cache["scores_hit"] and not first.cache["scores_hit"]
    assert again.train == first.train == {"split": "4-shot seed 0", "checkpoint": "abc"}


def test_a_detector_refusing_the_protocol_stops_the_run_before_any_work(standin_root, tmp_path,
                                                                         monkeypatch):
    from oodbench.errors import ConfigError

    def refuse(self, protocol):
        raise ConfigError(f"maxlogit cannot run on {protocol.name}")

    monkeypatch.setattr(MaxLogit, "check_protocol", refuse)
    with pytest.raises(ConfigError, match="cannot run on imagenet1k-mos4"):
        run(_spec(standin_root, tmp_path, ["mcm", "maxlogit"]))
    assert not (tmp_path / "res").exists() and not (tmp_path / "cache" / "images").exists()


def test_detectors_own_feature_requests_use_the_runs_decode_path(monkeypatch):
    import contextlib

    seen: dict = {}
    from oodbench.features import provider

    monkeypatch.setattr(provider, "extract_lock", lambda *a: contextlib.nullcontext())
    monkeypatch.setattr(provider, "extract", lambda *a, **kw: seen.update(kw) or {})
    spec = RunSpec(detectors=["cma"], protocol="toy", backbone="toy", decode="device")
    provider.locked_extract(None, None, ["global"], None, spec, None)
    assert seen["decode"] == "device"

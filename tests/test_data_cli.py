"""`oodbench data check` / `data index` on an empty root and on the stand-in MOS-four root."""

from __future__ import annotations

import json
import shutil

from PIL import Image

from oodbench.cli import main


def test_check_on_an_empty_root_names_the_root_and_every_missing_set(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "check", "imagenet1k-mos4", "--data-root", str(empty)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err
    for name, where in (("iNaturalist", "iNaturalist/images"), ("SUN", "SUN/images"),
                        ("Places", "Places/images"), ("Textures", "dtd/images"),
                        ("ImageNet-1k", "imagenet/val")):
        assert f"{name} (" in err and str(empty / where) in err
    assert "huangrui/imagenet_ood_dataset/iNaturalist.tar.gz" in err  # where it comes from
    assert "robots.ox.ac.uk/~vgg/data/dtd" in err


def test_check_passes_on_the_standin_root(standin_root, capsys):
    assert main(["data", "check", "imagenet1k-mos4", "--data-root", str(standin_root)]) == 0
    assert "is ready" in capsys.readouterr().out


def test_deep_check_names_a_corrupt_image(standin_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(standin_root, root)
    bad = root / "SUN/images/SUN_0.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["data", "check", "imagenet1k-mos4", "--data-root", str(root)]) == 0
    assert main(["data", "check", "imagenet1k-mos4", "--data-root", str(root), "--deep"]) == 2
    assert "SUN/images/SUN_0.jpg" in capsys.readouterr().err


def test_index_writes_checksums_that_runs_record_and_a_new_file_makes_it_stale(
        standin_root, tmp_path, capsys):
    from oodbench.data.prepare import sha256_file
    from oodbench.registry import PROTOCOLS

    root = tmp_path / "root"
    shutil.copytree(standin_root, root)
    assert main(["data", "index", "imagenet1k-mos4", "--data-root", str(root)]) == 0
    table = root / ".oodbench/index/iNaturalist_images.sha256"
    lines = [ln.split("\t") for ln in table.read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 5
    rel, digest = lines[0]
    assert digest == sha256_file(root / rel)

    proto = PROTOCOLS.get("imagenet1k-mos4")().build(root, tmp_path / "cache")
    inat = next(s for s in proto.ood if s.name == "iNaturalist").manifest
    assert inat.checksums is not None and inat.checksums[0] == digest

    Image.new("RGB", (8, 8)).save(root / "iNaturalist/images/new.jpg")
    assert main(["data", "check", "imagenet1k-mos4", "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "data index" in err and "iNaturalist" in err


def test_run_on_the_indexed_standin_root_goes_end_to_end(standin_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(standin_root, root)
    assert main(["data", "index", "imagenet1k-mos4", "--data-root", str(root)]) == 0
    results = tmp_path / "results"
    assert main(["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
                 "tiny-random", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"),
                 "--results-dir", str(results), "--device", "cpu", "--quiet"]) == 0
    rec = json.loads(next(results.glob("runs/imagenet1k-mos4/*/mcm/seed0.json")).read_text())
    from oodbench.registry import PROTOCOLS

    proto = PROTOCOLS.get("imagenet1k-mos4")().build(root, tmp_path / "cache")
    assert rec["protocol"]["sets"]["SUN"]["manifest_sha256"] == next(
        s for s in proto.ood if s.name == "SUN").manifest.digest()
    assert main(["leaderboard", "--results-dir", str(results), "--quiet"]) == 0
    assert (results / "leaderboard/imagenet1k-mos4.md").is_file()

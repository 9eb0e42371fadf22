"""Protocol definitions: class lists, set roles, and manifests built from stand-in layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from oodbench.errors import DataError
from oodbench.registry import PROTOCOLS

REAL = [n for n in PROTOCOLS.names() if not n.startswith("toy")]


def img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 200)).save(path)


def test_every_protocol_of_the_issue_is_registered():
    for name in ("imagenet1k-mos4", "imagenet100-mos4", "openood-v1.5-imagenet1k",
                 "openood-v1.5-imagenet1k-fs", "covariate-shift", "covariate-shift-v2",
                 "covariate-shift-a-200", "hard-ood-imagenet10", "hard-ood-imagenet20",
                 "unseen-id-cifar10", "unseen-id-cifar100", "unseen-id-cub", "unseen-id-cars",
                 "unseen-id-food", "unseen-id-pet", "unseen-id-imagenet-new"):
        assert name in REAL


@pytest.mark.parametrize("name", REAL)
def test_protocol_tables_are_consistent(name):
    proto = PROTOCOLS.get(name)()
    roles = [s.role for s in proto.sets]
    assert roles.count("id") == 1 and "ood" in roles
    assert len({s.name for s in proto.sets}) == len(proto.sets)
    assert all(s.source for s in proto.sets)
    names = proto.classnames()
    assert names and all(isinstance(c, str) and c for c in names)
    for s in proto.sets:  # ImageNet variants are ID, never OOD
        if any(v in s.name for v in ("ImageNet-V2", "ImageNet-Sketch", "ImageNet-A",
                                     "ImageNet-R", "ImageNet-C")):
            assert s.role in ("id", "shifted-id")


def test_class_list_sizes_and_mcm_names():
    assert len(PROTOCOLS.get("imagenet100-mos4")().classnames()) == 100
    in10 = PROTOCOLS.get("hard-ood-imagenet10")().classnames()
    assert set(in10) == {"warplane", "sports car", "brambling bird", "Siamese cat", "antelope",
                         "swiss mountain dog", "bull frog", "garbage truck", "horse",
                         "container ship"}
    assert in10[0] == "brambling bird"  # n01530575 is the smallest WNID: sorted-WNID order
    in20 = PROTOCOLS.get("hard-ood-imagenet20")().classnames()
    assert len(in20) == 20 and "eft" in in20 and "zebra" in in20
    assert len(PROTOCOLS.get("covariate-shift-a-200")().classnames()) == 200
    assert len(PROTOCOLS.get("unseen-id-cub")().classnames()) == 100
    assert len(PROTOCOLS.get("unseen-id-cars")().classnames()) == 98
    assert len(PROTOCOLS.get("unseen-id-food")().classnames()) == 50
    assert len(PROTOCOLS.get("unseen-id-cifar100")().classnames()) == 100
    new = PROTOCOLS.get("unseen-id-imagenet-new")()
    assert len(new.classnames()) == 500 and len(new.train_classnames()) == 500
    assert new.classnames()[0] != new.train_classnames()[0]


def test_openood_reads_imglists_with_ood_labels_forced_and_val_kept_out_of_test(tmp_path):
    lists = tmp_path / "benchmark_imglist/imagenet"
    lists.mkdir(parents=True)
    files = {"test_imagenet.txt": ["imagenet_1k/val/a.JPEG 5", "imagenet_1k/val/b.JPEG 7"],
             "val_imagenet.txt": ["imagenet_1k/val/c.JPEG 1"],
             "val_openimage_o.txt": ["openimage_o/v.jpg 0"],
             "test_ssb_hard.txt": ["ssb_hard/x.jpg 3"], "test_ninco.txt": ["ninco/n.jpg 0"],
             "test_inaturalist.txt": ["inaturalist/i.jpg 0"],
             "test_textures.txt": ["textures/t.jpg 0"],
             "test_openimage_o.txt": ["openimage_o/o.jpg 0"]}
    for f, rows in files.items():
        (lists / f).write_text("\n".join(rows) + "\n")
        base = "images_classic" if f == "test_textures.txt" else "images_largescale"
        for r in rows:
            img(tmp_path / base / r.split()[0])
    proto = PROTOCOLS.get("openood-v1.5-imagenet1k")().build(tmp_path, tmp_path / "cache")
    assert proto.id_test.manifest.labels == (5, 7)
    assert proto.id_test.manifest.paths[0] == "images_largescale/imagenet_1k/val/a.JPEG"
    assert proto.val.name == "ImageNet-1k-val"
    assert {s.name: s.group for s in proto.ood} == {
        "SSB-hard": "near", "NINCO": "near", "iNaturalist": "far", "Textures": "far",
        "OpenImage-O": "far"}
    assert all(y == -1 for s in proto.ood for y in s.manifest.labels)
    assert "OpenImage-O-val" not in {s.name for s in proto.sets()}
    fs = PROTOCOLS.get("openood-v1.5-imagenet1k-fs")()
    problems = fs.check(tmp_path, tmp_path / "cache")
    assert {p.what.split(" ")[0] for p in problems} == {"ImageNet-V2", "ImageNet-C", "ImageNet-R",
                                                         "ImageNet-ES"}
    es = next(p for p in problems if p.what.startswith("ImageNet-ES"))
    assert "shifted-id" in es.what and "test_imagenet_es.txt" in es.where
    assert "data_setup('DATA_ROOT', 'imagenet')" in es.fix  # download.py does not fetch it


def test_imagenet_v2_folders_are_labelled_by_number_not_by_string_order(tmp_path):
    from oodbench.protocols.imagenet import IMAGENET_V2

    for c in (0, 2, 10, 999):
        img(tmp_path / IMAGENET_V2.path / str(c) / "x.jpeg")
    proto = PROTOCOLS.get("covariate-shift-v2")()
    m = proto.manifest(tmp_path, proto.sets[0])
    assert sorted(m.labels) == [0, 2, 10, 999]
    assert dict(zip(m.paths, m.labels, strict=True))[f"{IMAGENET_V2.path}/10/x.jpeg"] == 10


def test_imagenet_subset_protocols_read_only_their_folders_in_their_order(tmp_path):
    from oodbench.protocols.classlists import wnid_table

    wnids10, _ = wnid_table("imagenet10_classes.tsv")
    wnids20, _ = wnid_table("imagenet20_classes.tsv")
    for w in wnids10 + wnids20 + ["n01440764"]:
        img(tmp_path / "imagenet/val" / w / "a.JPEG")
    proto = PROTOCOLS.get("hard-ood-imagenet10")().build(tmp_path, tmp_path / "cache")
    assert proto.id_test.manifest.labels == tuple(range(10))
    assert len(proto.ood[0].manifest) == 20 and set(proto.ood[0].manifest.labels) == {-1}
    assert not any("n01440764" in p for p in proto.id_test.manifest.paths)
    (tmp_path / "imagenet/val" / wnids10[3] / "a.JPEG").unlink()
    (tmp_path / "imagenet/val" / wnids10[3]).rmdir()
    with pytest.raises(DataError, match="class folders are missing"):
        PROTOCOLS.get("hard-ood-imagenet10")().build(tmp_path, tmp_path / "cache")


def test_fine_grained_half_split_relabels_id_and_marks_the_rest_ood(tmp_path):
    lst = tmp_path / "finegrained/food/test.txt"
    lst.parent.mkdir(parents=True)
    rows = [("food-101/images/apple_pie/1.jpg", 0), ("food-101/images/cannoli/2.jpg", 12),
            ("food-101/images/pho/3.jpg", 75), ("food-101/images/waffles/4.jpg", 100)]
    lst.write_text("".join(f"{p} {y}\n" for p, y in rows))
    for p, _ in rows:
        img(tmp_path / p)
    proto = PROTOCOLS.get("unseen-id-food")().build(tmp_path, tmp_path / "cache")
    assert proto.id_test.manifest.labels == (0, 12)
    assert proto.ood[0].manifest.labels == (-1, -1)
    assert proto.classnames[12] == "Cannoli"
    assert len(proto.training_classnames()) == 1000

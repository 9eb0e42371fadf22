"""Real downloads as they unpack (issue 15): flat ILSVRC val, stray and mixed files, per-class
tars, MCM's and OpenOOD-VLM's layouts, a sorted val reused for OpenOOD's flat lists.

Every root is built in a temporary folder with the real file-name patterns; each test checks
``oodbench data check``'s verdict and message, and where it applies the labels a ``--limit`` run
scored with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oodbench.cli import main
from oodbench.data.classnames import imagenet1k_wnids

WNIDS = imagenet1k_wnids()
# val image number -> WNID; three classes, not in file order (as the real ground truth)
TRUTH = {1: WNIDS[2], 2: WNIDS[0], 3: WNIDS[1], 4: WNIDS[2], 5: WNIDS[0], 6: WNIDS[1]}


def img(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (shade * 40 % 255, 90, 200)).save(path)


def val_name(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}.JPEG"


def mos_ood(base: Path) -> None:
    """The MOS four as their tars unpack, under ``base``."""
    for s in ("iNaturalist", "SUN", "Places"):
        for i in range(2):
            img(base / s / "images" / f"{s.lower()}_{i:05d}.jpg", i)
    for t in ("banded", "zigzagged"):
        img(base / "dtd/images" / t / f"{t}_0001.jpg", 3)


def flat_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in TRUTH:
        img(root / "imagenet/val" / val_name(i), i)
    mos_ood(root)
    return root


def loc_solution(path: Path, truth: dict[int, str] = TRUTH) -> Path:
    rows = ["ImageId,PredictionString"]
    rows += [f"ILSVRC2012_val_{i:08d},{w} 10 20 110 120 {w} 5 5 50 50 " for i, w in truth.items()]
    path.write_text("\n".join(rows) + "\n")
    return path


def check(root: Path, capsys, protocol: str = "imagenet1k-mos4", *extra: str):
    code = main(["data", "check", protocol, "--data-root", str(root), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def limited_run(root: Path, tmp_path: Path, protocol: str = "imagenet1k-mos4",
                limit: int = 4) -> dict[str, np.ndarray]:
    results = tmp_path / "results"
    assert main(["run", "--detector", "mcm", "--protocol", protocol, "--backbone", "tiny-random",
                 "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"),
                 "--results-dir", str(results), "--device", "cpu", "--limit", str(limit),
                 "--quiet"]) == 0
    rec_path = next(results.glob(f"runs/{protocol}/**/mcm/seed0_limit{limit}_*.json"))
    rec = json.loads(rec_path.read_text())
    with np.load(rec_path.parent / rec["scores_file"]) as z:
        return {k[len("labels/"):]: z[k] for k in z.files if k.startswith("labels/")}


# ---------------------------------------------------------------------------- 1. flat ImageNet val

def test_flat_val_is_refused_with_the_command_that_labels_it(tmp_path, capsys):
    root = flat_root(tmp_path)
    code, _, err = check(root, capsys)
    assert code == 2
    assert "ILSVRC2012_img_val.tar" in err and "no labels" in err
    assert f"oodbench data prepare imagenet-val --ground-truth /path/to/LOC_val_solution.csv " \
           f"--data-root {root}" in err
    # a run stops the same way, before any work, without a traceback
    assert main(["run", "--detector", "mcm", "--protocol", "covariate-shift", "--backbone",
                 "tiny-random", "--data-root", str(root), "--cache-dir", str(tmp_path / "c"),
                 "--results-dir", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "oodbench data prepare imagenet-val" in err and "Traceback" not in err


def test_prepare_from_loc_solution_writes_a_list_and_a_limit_run_scores_true_labels(
        tmp_path, capsys):
    root = flat_root(tmp_path)
    before = sorted(p.name for p in (root / "imagenet/val").iterdir())
    gt = loc_solution(tmp_path / "LOC_val_solution.csv")
    assert main(["data", "prepare", "imagenet-val", "--ground-truth", str(gt),
                 "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    listed = root / ".oodbench/lists/imagenet_val.txt"
    assert str(listed) in out and "6 images" in out and "3 classes" in out
    assert sorted(p.name for p in (root / "imagenet/val").iterdir()) == before  # nothing moved
    code, out, err = check(root, capsys)
    assert code == 0 and "is ready" in out and "layout oodbench, detected" in out

    labels = limited_run(root, tmp_path)["ImageNet-1k"]
    # --limit 4 of the 6 sorted files keeps entries 0, 1, 3, 4 (evenly spaced) = images 1, 2, 4, 5
    assert labels.tolist() == [WNIDS.index(TRUTH[i]) for i in (1, 2, 4, 5)] == [2, 0, 2, 0]

    argv = ["data", "prepare", "imagenet-val", "--ground-truth", str(gt), "--data-root", str(root)]
    assert main(argv) == 0  # its own list is rewritten
    listed.write_text("my notes\n")  # a file oodbench did not write is never replaced
    assert main(argv) == 2
    assert "was not written by oodbench" in capsys.readouterr().err
    assert listed.read_text() == "my notes\n"


def test_prepare_reads_the_devkit_ground_truth_through_its_meta_mat(tmp_path, capsys):
    scipy_io = pytest.importorskip("scipy.io")
    root = flat_root(tmp_path)
    # the devkit numbers classes by ILSVRC2012_ID, not by sorted WNID: give them another order
    ids = {w: 1000 - k for k, w in enumerate(WNIDS)}
    synsets = np.zeros((1001,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    for k, w in enumerate(WNIDS):
        synsets[k] = (ids[w], w)
    synsets[1000] = (1001, "n00001740")  # an inner node of the hierarchy, as in the real file
    meta = tmp_path / "meta.mat"
    scipy_io.savemat(meta, {"synsets": synsets})
    gt = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("".join(f"{ids[TRUTH[i]]}\n" for i in sorted(TRUTH)))

    assert main(["data", "prepare", "imagenet-val", "--ground-truth", str(gt),
                 "--data-root", str(root)]) == 2
    assert "--meta" in capsys.readouterr().err  # the ids alone cannot be mapped
    assert main(["data", "prepare", "imagenet-val", "--ground-truth", str(gt), "--meta", str(meta),
                 "--data-root", str(root)]) == 0
    capsys.readouterr()
    from oodbench.registry import PROTOCOLS

    proto = PROTOCOLS.get("imagenet1k-mos4")().build(root, tmp_path / "cache")
    assert proto.id_test.manifest.labels == tuple(WNIDS.index(TRUTH[i]) for i in sorted(TRUTH))


def test_prepare_refuses_a_ground_truth_that_leaves_files_unlabelled(tmp_path, capsys):
    root = flat_root(tmp_path)
    gt = loc_solution(tmp_path / "LOC_val_solution.csv", {i: TRUTH[i] for i in (1, 2, 3)})
    assert main(["data", "prepare", "imagenet-val", "--ground-truth", str(gt),
                 "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "no label for 3 of the 6 files" in err and val_name(4) in err
    assert not (root / ".oodbench/lists").exists()


def test_subset_protocols_read_the_prepared_list_narrowed_to_their_classes(tmp_path, capsys):
    from oodbench.registry import PROTOCOLS

    root = flat_root(tmp_path)
    gt = loc_solution(tmp_path / "LOC_val_solution.csv")
    assert main(["data", "prepare", "imagenet-val", "--ground-truth", str(gt),
                 "--data-root", str(root)]) == 0
    new = PROTOCOLS.get("unseen-id-imagenet-new")()
    # none of the three classes is in 500-999: the ID set is empty, which check reports
    assert any("no images" in p.what for p in new.check(root, tmp_path / "c"))
    spec = PROTOCOLS.get("imagenet1k-mos4")().specs(root)[0]
    from dataclasses import replace

    sub = replace(spec, classes=(WNIDS[1], WNIDS[2]), only_listed=True)
    m = PROTOCOLS.get("imagenet1k-mos4")().raw_manifest(root, sub)
    assert m.labels == (1, 0, 1, 0)  # images 1 (WNIDS[2]), 3, 4, 6 relabelled by list position


def test_a_stray_image_at_the_top_of_a_sorted_val_folder_is_named(standin_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(standin_root, root)
    img(root / "imagenet/val" / val_name(7))
    code, _, err = check(root, capsys)
    assert code == 2
    assert "mixes 3 class folders with 1 loose image file(s)" in err and val_name(7) in err
    # the same for an OOD set: a stray file beside DTD's class folders
    (root / "imagenet/val" / val_name(7)).unlink()
    img(root / "dtd/images/stray.jpg")
    code, _, err = check(root, capsys)
    assert code == 2 and "dtd/images" in err and "stray.jpg" in err


def test_an_unlabelled_shifted_id_set_is_an_error_not_label_minus_one(standin_root, tmp_path,
                                                                      capsys):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(standin_root, root)
    for i in range(3):
        img(root / "imagenet-a" / f"{i}.jpg")  # flat: no WNID folders, so no labels
    code, _, err = check(root, capsys, "covariate-shift-a")
    assert code == 2 and "ImageNet-A" in err and "no labels" in err


def test_per_class_train_tars_are_named_with_the_command_that_unpacks_them(standin_root, tmp_path,
                                                                          capsys):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(standin_root, root)
    shutil.rmtree(root / "imagenet/train")
    (root / "imagenet/train").mkdir()
    for w in WNIDS[:3]:
        (root / "imagenet/train" / f"{w}.tar").write_bytes(b"tar")
    code, _, err = check(root, capsys)
    assert code == 2
    assert "3 .tar file(s)" in err and f"{WNIDS[0]}.tar" in err and 'tar -xf "$f"' in err
    assert "has no images" not in err


def test_a_missing_class_folder_is_reported_with_the_set_name_once(standin_root, capsys):
    code, _, err = check(standin_root, capsys, "unseen-id-imagenet-new")
    assert code == 2
    assert "ImageNet-new: ImageNet-new:" not in err
    assert "ImageNet-new: 500 of 500 class folders are missing" in err


def test_count_warnings_are_shown_when_the_root_is_not_ready(standin_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(standin_root, root)
    shutil.rmtree(root / "SUN")
    code, _, err = check(root, capsys)
    assert code == 2 and "SUN (10,000 images, ood) is missing" in err
    assert "warning: iNaturalist: 5 images, the papers use 10,000" in err


# ---------------------------------------------------------------------------- 2. other layouts

def mcm_root(tmp_path: Path) -> Path:
    """MCM's repository with its datasets/ folder (README 'Data Preparation')."""
    repo = tmp_path / "MCM"
    for c, w in enumerate(WNIDS[:3]):
        for i in range(2):
            img(repo / "datasets/ImageNet/val" / w / val_name(10 * c + i + 1), c)
            img(repo / "datasets/ImageNet/train" / w / f"{w}_{i + 1}.JPEG", c)
    mos_ood(repo / "datasets/ImageNet_OOD_dataset")
    return repo


def test_mcm_layout_is_detected_checked_and_run(tmp_path, capsys):
    root = mcm_root(tmp_path)
    code, out, _ = check(root, capsys)
    assert code == 0 and "layout mcm under datasets/" in out
    assert "detected from datasets/ImageNet_OOD_dataset" in out
    code, out, _ = check(root / "datasets", capsys)  # MCM's --root-dir itself
    assert code == 0 and "layout mcm, detected" in out
    labels = limited_run(root, tmp_path, limit=4)
    assert labels["ImageNet-1k"].tolist() == [0, 0, 1, 2]  # 6 sorted images, 2 per class
    assert labels["SUN"].tolist() == [-1, -1]
    # named explicitly, a layout that is not there is refused with what is missing
    code, _, err = check(root, capsys, "imagenet1k-mos4", "--layout", "oodbench")
    assert code == 2 and "layout oodbench, named" in err and "iNaturalist (10,000 images" in err
    code, _, err = check(root, capsys, "imagenet1k-mos4", "--layout", "nope")
    assert code == 2 and "use one of oodbench, mcm, openood-vlm" in err


def test_the_layout_in_the_environment_serves_the_protocols_that_accept_it(tmp_path, capsys,
                                                                           monkeypatch):
    from oodbench.registry import PROTOCOLS

    root = mcm_root(tmp_path)
    monkeypatch.setenv("OODBENCH_LAYOUT", "oodbench")
    code, _, err = check(root, capsys)
    assert code == 2 and "layout oodbench, named" in err
    monkeypatch.setenv("OODBENCH_LAYOUT", "mcm")
    assert PROTOCOLS.get("imagenet1k-mos4")().resolve_layout(root)[0].name == "mcm"
    # a protocol without that layout ignores the variable instead of failing
    assert PROTOCOLS.get("openood-v1.5-imagenet1k")().resolve_layout(root)[0].name == "oodbench"


def vlm_root(tmp_path: Path) -> Path:
    """OpenOOD-VLM's data/: the traditional-four lists under benchmark_imglist/imagenet/."""
    root = tmp_path / "OpenOOD-VLM/data"
    large, lists = root / "images_largescale", root / "benchmark_imglist/imagenet"
    lists.mkdir(parents=True)
    rows = []
    for i, w in TRUTH.items():
        img(large / "imagenet_1k/val" / val_name(i), i)
        rows.append(f"imagenet_1k/val/{val_name(i)} {WNIDS.index(w)}")
    (lists / "test_imagenet_all.txt").write_text("\n".join(rows) + "\n")
    ood = {"test_inaturalist.txt": [f"inaturalist/{k:032x}.jpg" for k in range(2)],
           "test_sun.txt": [f"SUN/images/sun_{k:05d}.jpg" for k in range(2)],
           "test_places.txt": [f"Places/images/places_{k:05d}.jpg" for k in range(2)],
           "test_dtd.txt": ["dtd/images/banded/banded_0001.jpg"]}
    for f, paths in ood.items():
        for p in paths:
            img(large / p)
        (lists / f).write_text("".join(f"{p} -1\n" for p in paths))
    return root


def test_openood_vlm_layout_is_detected_checked_and_run(tmp_path, capsys):
    root = vlm_root(tmp_path)
    code, out, _ = check(root, capsys)
    assert code == 0
    assert "layout openood-vlm, detected from benchmark_imglist/imagenet/test_sun.txt;" in out
    labels = limited_run(root, tmp_path, limit=4)
    assert labels["ImageNet-1k"].tolist() == [WNIDS.index(TRUTH[i]) for i in (1, 2, 4, 5)]
    assert set(labels) == {"ImageNet-1k", "iNaturalist", "SUN", "Places", "Textures"}

    from oodbench.registry import PROTOCOLS

    hard = PROTOCOLS.get("hard-ood-imagenet10")()
    assert hard.resolve_layout(root)[0].name == "openood-vlm"
    (root / "benchmark_imglist/imagenet/test_sun.txt").unlink()
    code, _, err = check(root, capsys)
    assert code == 2 and "SUN (10,000 images, ood) is missing" in err
    assert "test_sun.txt" in err and "imagenet_traditional_four_ood.yml" in err


# ---------------------------------------------------------------------------- sorted val, OpenOOD

def test_a_wnid_sorted_val_reused_for_openood_is_spotted_with_how_to_flatten(tmp_path, capsys):
    root = tmp_path / "data"
    lists = root / "benchmark_imglist/imagenet"
    lists.mkdir(parents=True)
    rows = []
    for i, w in TRUTH.items():
        img(root / "images_largescale/imagenet_1k/val" / w / val_name(i), i)  # sorted, not flat
        rows.append(f"imagenet_1k/val/{val_name(i)} {WNIDS.index(w)}")
    (lists / "test_imagenet.txt").write_text("\n".join(rows) + "\n")
    code, _, err = check(root, capsys, "openood-v1.5-imagenet1k")
    assert code == 2
    assert "ImageNet-1k: 6 listed files are missing" in err
    assert "sorted into WNID folders" in err
    assert "find . -mindepth 2 -name '*.JPEG' -exec ln -s {} . \\;" in err
    # following the advice makes the list resolve (OpenOOD's other sets are still missing)
    val = root / "images_largescale/imagenet_1k/val"
    for p in val.glob("n*/*.JPEG"):
        (val / p.name).symlink_to(p.relative_to(val))
    code, _, err = check(root, capsys, "openood-v1.5-imagenet1k")
    assert "- ImageNet-1k: " not in err and "SSB-hard" in err


# ------------------------------------------------------------------------ 7. --limit trains less

def test_limit_bounds_the_training_split_to_whole_classes(standin_root, tmp_path):
    from oodbench.protocols.base import SMOKE_SHOTS
    from oodbench.registry import PROTOCOLS

    proto = PROTOCOLS.get("imagenet1k-mos4")().build(standin_root, tmp_path / "cache")
    full = proto.train.manifest
    assert len(full) == 12  # 3 classes x 4
    small = proto.limit_training(3).train.manifest
    assert small.labels == (0, 0, 0)  # one class: every image of a few-shot class is kept
    assert proto.limit_training(None) is proto and proto.limit_training(100) is proto
    assert proto.limit_training(3).id_test == proto.id_test  # test sets: the runner's business

    from oodbench.data.manifest import Manifest
    from oodbench.protocols.base import ImageSet

    labels = tuple(c for c in range(100) for _ in range(20))
    big = Manifest("train", tmp_path, tuple(f"x/{i}.jpg" for i in range(len(labels))), labels)
    limited = replace_train(proto, ImageSet("train", big)).limit_training(5 * SMOKE_SHOTS)
    got = limited.train.manifest.labels
    assert len(got) == 5 * SMOKE_SHOTS and sorted(set(got)) == [0, 20, 40, 60, 80]
    assert all(got.count(c) == SMOKE_SHOTS for c in set(got))


def replace_train(proto, train):
    from dataclasses import replace

    return replace(proto, train=train)


def test_a_limited_run_hands_detectors_the_limited_training_split(standin_root, tmp_path,
                                                                  monkeypatch):
    from oodbench.protocols.base import Protocol

    seen = []
    original = Protocol.limit_training

    def spy(self, n):
        out = original(self, n)
        seen.append((n, len(out.train.manifest)))
        return out

    monkeypatch.setattr(Protocol, "limit_training", spy)
    limited_run(standin_root, tmp_path, limit=4)
    assert seen == [(4, 4)]


def test_make_bench_passes_data_layout_limit_param_and_precision(tmp_path):
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = Path(__file__).parents[1]
    out = subprocess.run(
        ["make", "-n", "-C", str(repo), "bench", f"VENV={tmp_path / 'venv'}", "DETECTOR=krnft",
         "PROTOCOL=unseen-id-cub", "DATA=/data/ood", "LAYOUT=mcm", "LIMIT=16",
         "PARAM=krnft.shots=1 krnft.epochs=1", "PRECISION=fp16", "RESULTS=/tmp/mine"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    line = next(ln for ln in out.splitlines() if " bench " in ln)
    for part in ("--detector krnft", "--protocol unseen-id-cub", "--data-root /data/ood",
                 "--limit 16", "--precision fp16", "--param krnft.shots=1",
                 "--param krnft.epochs=1", "--results-dir /tmp/mine"):
        assert part in line, part
    env = subprocess.run(["make", "-n", "-p", "-C", str(repo), "bench", "LAYOUT=mcm",
                          f"VENV={tmp_path / 'venv'}"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "OODBENCH_LAYOUT := mcm" in env


@pytest.mark.slow  # ~10 s: bench also rebuilds the leaderboards with plots
def test_bench_takes_the_data_root_limit_and_params(standin_root, tmp_path):
    results = tmp_path / "results"
    assert main(["bench", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
                 "tiny-random", "--data-root", str(standin_root), "--limit", "4", "--param",
                 "mcm.temperature=2", "--cache-dir", str(tmp_path / "cache"), "--results-dir",
                 str(results), "--device", "cpu", "--quiet"]) == 0
    rec = json.loads(next(results.glob("runs/imagenet1k-mos4/*/*/seed0_limit4_*.json"))
                     .read_text())
    assert rec["limit"] == 4 and rec["detector"]["params"]["temperature"] == 2


def test_an_id_image_list_with_minus_one_labels_is_refused(tmp_path, capsys):
    root = vlm_root(tmp_path)
    lst = root / "benchmark_imglist/imagenet/test_imagenet_all.txt"
    rows = lst.read_text().splitlines()
    rows[1] = rows[1].rsplit(" ", 1)[0] + " -1"
    lst.write_text("\n".join(rows) + "\n")
    code, _, err = check(root, capsys)
    assert code == 2
    assert "ImageNet-1k is the ID test set, so every image needs a class label, but 1 of 6" in err
    assert val_name(2) in err


def test_prepare_on_a_read_only_root_says_what_to_do(tmp_path, capsys, monkeypatch):
    import errno

    import oodbench.io

    def refuse(path, text):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(oodbench.io, "atomic_write_text", refuse)  # root may write anywhere
    root = flat_root(tmp_path)
    gt = loc_solution(tmp_path / "LOC_val_solution.csv")
    assert main(["data", "prepare", "imagenet-val", "--ground-truth", str(gt),
                 "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "cannot write the image list" in err and "Permission denied" in err
    assert "ln -s" in err and "Traceback" not in err

"""Bad and hostile inputs, tried from the CLI: each gets its defined outcome, never a traceback.

The defined outcome is either correct handling (odd image modes are converted to RGB) or exit
code 2 with one message that names the item and the fix. A failing run changes nothing that an
earlier run wrote. The data root is a copy of the stand-in one, so that tests may damage it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oodbench.backbones.base import apply_state_dict, load_state_dict_file
from oodbench.cli import main
from oodbench.data.images import load_rgb, readable_manifests
from oodbench.data.manifest import scan_image_folder
from oodbench.errors import BackboneError, DataError
from oodbench.protocols.folders import FolderProtocol, SetSpec
from oodbench.registry import PROTOCOLS

RECORD = "runs/imagenet1k-mos4/tiny-random/mcm/seed0.json"


@pytest.fixture
def root(standin_root, tmp_path) -> Path:
    """A private copy of the stand-in data root."""
    return Path(shutil.copytree(standin_root, tmp_path / "data"))


def cli(capsys, *args: str, data: Path | None = None, tmp: Path | None = None,
        protocol: str = "imagenet1k-mos4") -> tuple[int, str]:
    """Run `oodbench run ...` in-process; (exit code, stderr)."""
    argv = ["run", "--detector", "mcm", "--protocol", protocol, "--backbone", "tiny-random",
            "--workers", "0", "--quiet"]
    if data is not None:
        argv += ["--data-root", str(data)]
    if tmp is not None:
        argv += ["--cache-dir", str(tmp / "cache"), "--results-dir", str(tmp / "results")]
    code = main([*argv, *args])
    return code, capsys.readouterr().err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("oodbench: error: ") and "Traceback" not in err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


def jpeg_bytes(path: Path) -> bytes:
    return path.read_bytes()


def damage(root: Path) -> dict[str, Path]:
    """Add a corrupt, a truncated and an empty JPEG to the SUN set (5 good images)."""
    sun = root / "SUN" / "images"
    good = (sun / "SUN_0.jpg").read_bytes()
    files = {"corrupt": sun / "corrupt.jpg", "truncated": sun / "truncated.jpg",
             "empty": sun / "empty.jpg"}
    files["corrupt"].write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    files["truncated"].write_bytes(good[: len(good) // 3])
    files["empty"].write_bytes(b"")
    return files


def snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for f in folders for p in sorted(f.rglob("*"))
            if p.is_file() and "locks" not in p.parts}


# ---------------------------------------------------------------------------------------------
# Unreadable images: listed before any work, or skipped and counted with --skip-unreadable.
# ---------------------------------------------------------------------------------------------


def test_corrupt_truncated_and_empty_images_stop_the_run_listing_each(root, tmp_path, capsys):
    damage(root)
    code, err = cli(capsys, data=root, tmp=tmp_path)
    assert_user_error(code, err, "3 image(s) cannot be read; nothing was scored",
                      "set 'SUN' (3 of 8", "SUN/images/corrupt.jpg: cannot be read",
                      "SUN/images/truncated.jpg: cannot be read", "SUN/images/empty.jpg: file is "
                      "empty (0 bytes)", "--skip-unreadable")
    assert not (tmp_path / "results").exists()
    assert not list((tmp_path / "cache").glob("images/*/*/meta.json"))  # nothing extracted


def test_skip_unreadable_scores_the_rest_and_records_the_count(root, tmp_path, capsys):
    damage(root)
    assert cli(capsys, "--skip-unreadable", data=root, tmp=tmp_path)[0] == 0
    # a run without some images is another measurement: its own record, beside a full run's
    (path,) = (tmp_path / "results" / RECORD).parent.glob("seed0_skip3_*.json")
    rec = json.loads(path.read_text())
    assert rec["skipped_unreadable"] == {"SUN": 3}
    assert rec["protocol"]["sets"]["SUN"]["n"] == 5
    # the scores of the kept images are those of a clean run on the five good ones
    clean = tmp_path / "clean"
    shutil.copytree(root, clean)
    for f in ("corrupt", "truncated", "empty"):
        (clean / "SUN" / "images" / f"{f}.jpg").unlink()
    assert cli(capsys, "--results-dir", str(tmp_path / "r2"), "--cache-dir", str(tmp_path / "c2"),
               data=clean)[0] == 0
    want = json.loads((tmp_path / "r2" / RECORD).read_text())
    assert want["skipped_unreadable"] == {}
    assert rec["metrics"]["SUN"] == want["metrics"]["SUN"]
    # the leaderboard row says it too: a CSV column, and the row's name and a note in markdown
    assert main(["leaderboard", "--results-dir", str(tmp_path / "results"), "--quiet"]) == 0
    board = tmp_path / "results" / "leaderboard"
    with open(board / "imagenet1k-mos4.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["skipped_unreadable"] == "SUN=3"
    md = (board / "imagenet1k-mos4.md").read_text()
    assert "| mcm (3 unreadable skipped) |" in md and "(--skip-unreadable): SUN=3" in md


def test_the_readability_check_is_cached_until_a_file_changes(root, tmp_path):
    from oodbench.features.cache import Cache

    files = damage(root)
    cache = Cache(tmp_path / "cache")
    sun = {"SUN": scan_image_folder(root, "SUN/images", "SUN", ood=True)}
    _, skipped = readable_manifests(sun, skip=True, cache=cache)
    assert skipped == {"SUN": 3}
    assert len([e for e in cache.entries() if e.level == "checks"]) == 1
    shutil.copy(root / "SUN/images/SUN_1.jpg", files["empty"])  # the user repairs one file
    os.utime(files["empty"], ns=(1, 1))  # a new mtime and size: the check must run again
    _, skipped = readable_manifests(sun, skip=True, cache=cache)
    assert skipped == {"SUN": 2}


def test_an_image_damaged_after_the_check_is_named_without_a_traceback(root, tmp_path, capsys):
    """The check's verdict is cached under size and mtime; a file damaged in place with both kept
    is first met by a loader worker, whose error torch wraps in the worker's traceback."""
    assert cli(capsys, data=root, tmp=tmp_path)[0] == 0
    shutil.rmtree(tmp_path / "cache" / "images")
    shutil.rmtree(tmp_path / "cache" / "scores")
    path = root / "SUN" / "images" / "SUN_0.jpg"
    st, blob = path.stat(), path.read_bytes()
    path.write_bytes(blob[:200] + b"\0" * (len(blob) - 200))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, err = cli(capsys, "--workers", "1", data=root, tmp=tmp_path)
    assert_user_error(code, err, f"image {path} cannot be read")
    assert "Original Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreadable_everywhere_with_skip_is_still_an_error(root, tmp_path, capsys):
    for f in (root / "SUN" / "images").iterdir():
        f.write_bytes(b"not an image")
    code, err = cli(capsys, "--skip-unreadable", data=root, tmp=tmp_path)
    assert_user_error(code, err, "set 'SUN': all 5 images are unreadable")


def test_empty_ood_set_is_refused_by_name(root, tmp_path, capsys):
    for f in (root / "Places" / "images").iterdir():
        f.unlink()
    code, err = cli(capsys, data=root, tmp=tmp_path)
    assert_user_error(code, err, "set 'Places' has no images", str(root / "Places" / "images"))


def test_missing_data_root(tmp_path, capsys):
    code, err = cli(capsys, data=tmp_path / "nowhere", tmp=tmp_path)
    assert_user_error(code, err, f"data root {tmp_path / 'nowhere'} does not exist", "docs/data.md")
    code, err = cli(capsys, tmp=tmp_path)  # no --data-root and no OODBENCH_DATA
    assert_user_error(code, err, "needs a data root", "--data-root")


def test_cache_or_results_folder_that_is_a_file(root, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, err = cli(capsys, "--cache-dir", str(blocker), "--results-dir", str(tmp_path / "r"),
                    data=root)
    assert_user_error(code, err, f"cannot create the lock file {blocker}", "--cache-dir")
    code, err = cli(capsys, "--cache-dir", str(tmp_path / "c"), "--results-dir", str(blocker),
                    data=root)
    assert_user_error(code, err, f"could not write {blocker}/runs/", "Not a directory")
    assert blocker.read_text() == "x"


def test_missing_set_names_its_source(root, tmp_path, capsys):
    shutil.rmtree(root / "iNaturalist")
    code, err = cli(capsys, data=root, tmp=tmp_path)
    assert_user_error(code, err, "iNaturalist", "iNaturalist.tar.gz", str(root / "iNaturalist"))


def data_check(capsys, root: Path, *args: str, protocol: str = "imagenet1k-mos4"
               ) -> tuple[int, str]:
    code = main(["data", "check", protocol, "--data-root", str(root), *args])
    return code, capsys.readouterr().err


def test_data_check_lists_unreadable_images_when_deep(root, capsys):
    damage(root)
    code, err = data_check(capsys, root)
    assert code == 0  # folders and counts are fine; images are not decoded without --deep
    code, err = data_check(capsys, root, "--deep")
    assert code == 2 and "Traceback" not in err
    for needle in ("SUN: 3 unreadable or corrupt images", "SUN/images/corrupt.jpg (cannot be read",
                   "SUN/images/truncated.jpg (cannot be read", "SUN/images/empty.jpg (file is "
                   "empty (0 bytes))", "--skip-unreadable"):
        assert needle in err, err


def test_data_check_names_an_empty_set_and_a_missing_root(root, tmp_path, capsys):
    for f in (root / "Places" / "images").iterdir():
        f.unlink()
    code, err = data_check(capsys, root)
    assert code == 2 and "Places has no images" in err and str(root / "Places/images") in err
    code, err = data_check(capsys, tmp_path / "nowhere")
    assert_user_error(code, err, f"data root {tmp_path / 'nowhere'} does not exist")
    assert main(["data", "check", "imagenet1k-mos"]) == 2
    assert "Did you mean 'imagenet1k-mos4'" in capsys.readouterr().err


@pytest.mark.slow
def test_from_a_real_process_no_traceback(root, tmp_path):
    damage(root)
    r = subprocess.run([sys.executable, "-m", "oodbench", "run", "--detector", "mcm",
                        "--protocol", "imagenet1k-mos4", "--backbone", "tiny-random",
                        "--data-root", str(root), "--cache-dir", str(tmp_path / "c")],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "SUN/images/truncated.jpg" in r.stderr


# ---------------------------------------------------------------------------------------------
# Odd but valid images are converted to RGB, with the right pixel values.
# ---------------------------------------------------------------------------------------------


def png16(arr: np.ndarray, colortype: int) -> bytes:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB(A))."""
    import struct
    import zlib

    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    head = struct.pack(">IIBBBBB", w, h, 16, colortype, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def odd_images(folder: Path) -> dict[str, tuple[Path, tuple[int, int, int]]]:
    """One file per odd mode, with the RGB value it must read as."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    p = folder / "cmyk.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(p, quality=100)  # red in CMYK
    out["cmyk"] = (p, (255, 0, 0))
    p = folder / "gray.jpg"
    Image.new("L", (40, 40), 100).save(p, quality=100)
    out["gray"] = (p, (100, 100, 100))
    p = folder / "alpha.png"
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(p)  # fully transparent red: on white
    out["alpha"] = (p, (255, 255, 255))
    p = folder / "half-alpha.png"
    Image.new("RGBA", (40, 40), (0, 0, 255, 128)).save(p)
    out["half-alpha"] = (p, (127, 127, 255))
    p = folder / "gray16.png"
    Image.fromarray(np.full((40, 40), 32896, np.uint16)).save(p)  # 32896 / 65535 * 255 = 128
    out["gray16"] = (p, (128, 128, 128))
    p = folder / "rgb16.png"
    rgb = np.zeros((40, 40, 3), np.uint16)
    rgb[..., 0], rgb[..., 1] = 65535, 32896
    p.write_bytes(png16(rgb, colortype=2))
    out["rgb16"] = (p, (255, 128, 0))
    p = folder / "palette.png"
    Image.new("RGB", (40, 40), (0, 255, 0)).convert("P").save(p)  # a web-palette colour
    out["palette"] = (p, (0, 255, 0))
    return out


def test_odd_modes_read_as_the_right_rgb(tmp_path):
    for name, (path, want) in odd_images(tmp_path).items():
        im = load_rgb(path)
        assert im.mode == "RGB", name
        px = np.asarray(im)[20, 20].astype(int)
        assert np.abs(px - want).max() <= 2, (name, px, want)


def test_odd_modes_are_scored_not_skipped(root, tmp_path, capsys):
    odd_images(root / "SUN" / "images")
    assert cli(capsys, data=root, tmp=tmp_path)[0] == 0
    rec = json.loads((tmp_path / "results" / RECORD).read_text())
    assert rec["protocol"]["sets"]["SUN"]["n"] == 12 and rec["skipped_unreadable"] == {}


# ---------------------------------------------------------------------------------------------
# Image lists: missing files, paths that are absolute or climb out of the root.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imglist_protocol() -> str:
    """A protocol read from image lists under the data root (lists/id.txt, lists/ood.txt)."""
    name = "test-imglist"
    if name not in PROTOCOLS:
        @PROTOCOLS.register(name)
        class ImgList(FolderProtocol):
            """Stand-in protocol read from image lists (tests only)."""

            description = "stand-in image lists"
            sets = (SetSpec("ID", "id", "imagenet/val", None, "the stand-in root",
                            imglist="lists/id.txt"),
                    SetSpec("OOD", "ood", "SUN/images", None, "the stand-in root", group="far",
                            imglist="lists/ood.txt"))
            classnames_fn = staticmethod(lambda: ["tench", "goldfish", "white shark"])

        ImgList.name = name
    return name


def write_lists(root: Path, extra_ood: list[str] = ()) -> None:
    """Image lists in OpenOOD's style: paths relative to the set's folder."""
    (root / "lists").mkdir(exist_ok=True)
    wnids = sorted(d.name for d in (root / "imagenet" / "val").iterdir())
    lines = [f"{w}/{f.name}\t{c}" for c, w in enumerate(wnids)
             for f in sorted((root / "imagenet" / "val" / w).iterdir())]
    (root / "lists" / "id.txt").write_text("\n".join(lines) + "\n")
    ood = [f"{f.name} -1" for f in sorted((root / "SUN" / "images").iterdir())]
    (root / "lists" / "ood.txt").write_text("\n".join(ood + list(extra_ood)) + "\n")


def test_image_list_naming_missing_files(root, tmp_path, capsys, imglist_protocol):
    write_lists(root, ["gone_1.jpg -1", "gone_2.jpg -1"])
    code, err = cli(capsys, data=root, tmp=tmp_path, protocol=imglist_protocol)
    assert_user_error(code, err, "2 image(s) cannot be read", "SUN/images/gone_1.jpg: file does "
                      "not exist", "SUN/images/gone_2.jpg")
    code, err = cli(capsys, "--skip-unreadable", data=root, tmp=tmp_path,
                    protocol=imglist_protocol)
    assert code == 0, err
    rec = json.loads(next((tmp_path / "results").rglob("seed0_skip2_*.json")).read_text())
    assert rec["skipped_unreadable"] == {"OOD": 2}


@pytest.mark.parametrize("line, needle", [
    ("/etc/passwd -1", "path '/etc/passwd' is absolute"),
    ("../../outside.jpg -1", "path '../../outside.jpg' escapes the data root with '..'; refused"),
    ("sub/../../../outside.jpg -1", "escapes the data root"),
    ("C:\\images\\x.jpg -1", "is absolute"),
])
def test_image_list_paths_outside_the_root_are_refused(root, tmp_path, capsys, imglist_protocol,
                                                       line, needle):
    (tmp_path / "outside.jpg").write_bytes((root / "SUN/images/SUN_0.jpg").read_bytes())
    write_lists(root, [line])
    code, err = cli(capsys, data=root, tmp=tmp_path, protocol=imglist_protocol)
    assert_user_error(code, err, needle, "lists/ood.txt, line 6")


def test_data_check_of_image_lists(root, capsys, imglist_protocol):
    write_lists(root, ["gone_1.jpg -1"])
    code, err = data_check(capsys, root, protocol=imglist_protocol)
    assert code == 2 and "OOD: 1 listed files are missing" in err and "gone_1.jpg" in err
    for line, needle in (("/etc/passwd -1", "path '/etc/passwd' is absolute"),
                         ("../x.jpg -1", "path '../x.jpg' escapes the data root")):
        write_lists(root, [line])
        code, err = data_check(capsys, root, protocol=imglist_protocol)
        assert code == 2 and needle in err and "lists/ood.txt, line 6" in err, err


# ---------------------------------------------------------------------------------------------
# Run specs, names and hyperparameters.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, needles", [
    ("detectors: [mcm\nprotocol: toy\n", ["is not valid YAML"]),
    ("detectors:\t[mcm]\n", ["is not valid YAML"]),
    ("- mcm\n- toy\n", ["must be a mapping of fields"]),
    ("detecter: mcm\n", ["unknown field(s) ['detecter']", "valid:"]),
    ("limit: many\n", ["field 'limit' has the wrong type (str)"]),
    ("seeds: [zero]\n", ["seeds must be integers"]),
    ("params: {mcm: 3}\n", ["params.mcm must map FIELD: VALUE"]),
    ("params: {mcm: {temprature: 2}}\n", ["unknown hyperparameter(s) ['temprature']",
                                          "temperature"]),
    ("preprocess: {resize: big}\n", ["preprocessing field 'resize' must be a positive integer"]),
    ("device: gpu\n", ["device 'gpu' unknown"]),
    ("chunk_size: 0\n", ["chunk_size must be positive"]),
])
def test_bad_run_spec_names_the_field(tmp_path, capsys, root, text, needles):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    code, err = cli(capsys, "--spec", str(spec), data=root, tmp=tmp_path)
    assert_user_error(code, err, *needles)
    if "YAML" in needles[0] or "mapping" in needles[0]:
        assert str(spec) in err


@pytest.mark.parametrize("flag, value, needle", [
    ("--detector", "mcmm", "Did you mean 'mcm'"),
    ("--protocol", "imagenet1k-mos", "Did you mean 'imagenet1k-mos4'"),
    ("--backbone", "tiny-randm", "Did you mean 'tiny-random'"),
    ("--backbone", "ViT-B-16:opena", "Did you mean 'openai'?"),
])
def test_unknown_names_suggest_the_close_ones(tmp_path, capsys, root, flag, value, needle):
    code, err = cli(capsys, flag, value, data=root, tmp=tmp_path)
    assert_user_error(code, err, needle)


@pytest.mark.parametrize("value, needles", [
    ("abc", ["temperature='abc'", "expected float"]),
    ("-1", ["hyperparameter temperature", "must be > 0"]),
    ("[1, 2]", ["temperature", "float"]),
    ("true", ["temperature"]),
])
def test_bad_hyperparameter_names_the_field(tmp_path, capsys, root, value, needles):
    code, err = cli(capsys, "--param", f"mcm.temperature={value}", data=root, tmp=tmp_path)
    assert_user_error(code, err, *needles)


def test_failing_runs_change_nothing_written_before(root, tmp_path, capsys, tiny_arch):
    assert cli(capsys, data=root, tmp=tmp_path)[0] == 0
    before = snapshot(tmp_path / "results", tmp_path / "cache")
    spec = tmp_path / "bad.yaml"
    spec.write_text("detectors: [mcm\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("detecter: mcm\n")
    evil = tmp_path / "evil.pt"
    bomb = Payload()
    bomb.marker = str(tmp_path / "pwned")
    torch.save({"w": torch.zeros(1), "x": bomb}, evil)
    failing = [["--param", "mcm.temperature=abc"], ["--param", "mcm.temperature=-1"],
               ["--spec", str(spec)], ["--spec", str(unknown)], ["--backbone", "tiny-randm"],
               ["--detector", "mcmm"], ["--backbone", f"{tiny_arch}:{evil}"],
               ["--data-root", str(tmp_path / "nowhere")]]
    for args in failing:
        code, err = cli(capsys, *args, data=root, tmp=tmp_path)
        assert code == 2 and "Traceback" not in err, (args, err)
    damage(root)
    assert cli(capsys, data=root, tmp=tmp_path)[0] == 2
    for f in (root / "Places" / "images").iterdir():
        f.unlink()
    assert cli(capsys, data=root, tmp=tmp_path)[0] == 2
    shutil.rmtree(root)
    assert cli(capsys, data=root, tmp=tmp_path)[0] == 2
    after = snapshot(tmp_path / "results", tmp_path / "cache")
    assert {k: after.get(k) for k in before} == before  # new entries (checks) may be added
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------
# Hostile checkpoints: never unpickled, mismatches reported key by key.
# ---------------------------------------------------------------------------------------------


class Payload:
    """Unpickling this would create a marker file (it must never run)."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("suffix, saver", [(".pt", "torch"), (".bin", "pickle")])
def test_checkpoint_with_code_is_refused_without_running_it(tmp_path, suffix, saver):
    marker = tmp_path / "pwned"
    bomb = Payload()
    bomb.marker = str(marker)
    path = tmp_path / f"evil{suffix}"
    sd = {"weight": torch.zeros(2), "extra": bomb}
    if saver == "torch":
        torch.save(sd, path)
    else:
        path.write_bytes(pickle.dumps(sd))
    with pytest.raises(BackboneError, match="cannot read weights .* safely") as e:
        load_state_dict_file(path)
    assert "weights_only=True" in str(e.value) and str(path) in str(e.value)
    assert not marker.exists()


def test_safetensors_and_plain_state_dicts_load(tmp_path):
    from safetensors.torch import save_file

    sd = {"a.weight": torch.arange(6.0).reshape(2, 3)}
    save_file(sd, tmp_path / "w.safetensors")
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        got = load_state_dict_file(tmp_path / name)
        assert got.keys() == sd.keys() and torch.equal(got["a.weight"], sd["a.weight"])


def test_checkpoint_key_mismatches_are_listed_one_by_one():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    sd = dict(model.state_dict())
    del sd["1.bias"]
    sd["2.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 5)
    with pytest.raises(BackboneError) as e:
        apply_state_dict(model, sd, "ckpt.pt")
    msg = str(e.value)
    assert "weights ckpt.pt do not match" in msg
    assert "missing key: 1.bias" in msg and "unexpected key: 2.weight" in msg
    assert "shape mismatch: 0.weight: file (5, 5) vs model (2, 3)" in msg


@pytest.fixture
def tiny_arch():
    """The tiny CLIP as an open_clip architecture, so that `--backbone oodbench-tiny:FILE` works."""
    import open_clip

    from oodbench.backbones.tiny import TINY_CONFIG

    open_clip.factory._MODEL_CONFIGS["oodbench-tiny"] = TINY_CONFIG
    return "oodbench-tiny"


def test_hostile_and_broken_checkpoints_from_the_cli(root, tmp_path, capsys, tiny_arch):
    from safetensors.torch import save_file

    from oodbench.backbones.tiny import build_tiny_clip

    marker = tmp_path / "pwned"
    bomb = Payload()
    bomb.marker = str(marker)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": bomb}, evil)
    code, err = cli(capsys, "--backbone", f"{tiny_arch}:{evil}", data=root, tmp=tmp_path)
    assert_user_error(code, err, f"cannot read weights {evil} safely", "weights_only=True")
    assert not marker.exists()

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    code, err = cli(capsys, "--backbone", f"{tiny_arch}:{broken}", data=root, tmp=tmp_path)
    assert_user_error(code, err, f"cannot read weights {broken}", "damaged")

    sd = build_tiny_clip(seed=1).state_dict()
    sd.pop("text_projection")
    sd["head.extra"] = torch.zeros(2)
    mismatched = tmp_path / "mismatched.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, mismatched)
    code, err = cli(capsys, "--backbone", f"{tiny_arch}:{mismatched}", data=root, tmp=tmp_path)
    assert_user_error(code, err, f"weights {mismatched} do not match",
                      "missing key: text_projection", "unexpected key: head.extra")

    gone = tmp_path / "gone.pt"
    code, err = cli(capsys, "--backbone", f"{tiny_arch}:{gone}", data=root, tmp=tmp_path)
    assert_user_error(code, err, f"weights file {gone} does not exist")
    assert not (tmp_path / "results").exists()


def test_yaml_run_spec_cannot_build_python_objects(tmp_path, capsys, root):
    marker = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"detectors: !!python/object/apply:pathlib.Path.touch [{marker}]\n")
    code, err = cli(capsys, "--spec", str(spec), data=root, tmp=tmp_path)
    assert_user_error(code, err, "is not valid YAML")
    assert not marker.exists()


def test_manifest_reader_refuses_a_checksum_mismatch_of_counts(tmp_path):
    from oodbench.data.manifest import parse_manifest_lines

    with pytest.raises(DataError, match="some lines have a checksum and some do not"):
        parse_manifest_lines(["a.jpg\t0\t" + "0" * 64, "b.jpg\t1"], "m", tmp_path)


# ---------------------------------------------------------------------------------------------
# Issue 16, cases 9 and 11: odd file names, image lists and flags.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, needle", [
    (lambda d: os.symlink("loop", d / "loop"), "cannot be followed (a symbolic link loop?)"),
    (lambda d: shutil.copy(d / "SUN_0.jpg", os.fsencode(d) + b"/\xff.jpg"), "'\\udcff.jpg'"),
    (lambda d: shutil.copy(d / "SUN_0.jpg", d / "a\nb.jpg"), "'a\\nb.jpg'"),
])
def test_odd_entries_in_a_set_folder_are_named(root, tmp_path, capsys, make, needle):
    make(root / "SUN" / "images")
    code, err = cli(capsys, data=root, tmp=tmp_path)
    assert_user_error(code, err, "SUN: ", needle)


def test_a_non_utf8_name_in_a_class_folder_is_named(root, tmp_path, capsys):
    d = sorted((root / "imagenet" / "val").iterdir())[0]
    shutil.copy(next(d.iterdir()), os.fsencode(d) + b"/\xfe.JPEG")
    code, err = cli(capsys, data=root, tmp=tmp_path)
    assert_user_error(code, err, "ImageNet-1k: file names in", "not UTF-8", "'\\udcfe.JPEG'")


def test_an_image_list_with_a_byte_order_mark_reads_its_first_path(root, tmp_path, capsys,
                                                                    imglist_protocol):
    write_lists(root)
    ood = root / "lists" / "ood.txt"
    ood.write_bytes(b"\xef\xbb\xbf" + ood.read_bytes())  # as Notepad saves UTF-8
    code, err = cli(capsys, data=root, tmp=tmp_path, protocol=imglist_protocol)
    assert code == 0, err


def test_a_huge_image_list_line_is_not_echoed_whole(root, tmp_path, capsys, imglist_protocol):
    write_lists(root, ["x" * 1_000_000 + ".jpg -1"])
    code, err = cli(capsys, data=root, tmp=tmp_path, protocol=imglist_protocol)
    assert_user_error(code, err, "lists/ood.txt, line 6", "a path of 1,000,004 characters")
    assert len(err) < 1000


@pytest.mark.parametrize("label, needle", [("3", "ID: 1 image(s) have a label outside 0..2"),
                                           ("-1", "have none (label -1)")])
def test_id_labels_outside_the_class_list_are_refused(root, tmp_path, capsys, imglist_protocol,
                                                      label, needle):
    write_lists(root)
    ids = root / "lists" / "id.txt"
    first, *rest = ids.read_text().splitlines()
    ids.write_text("\n".join([first.split("\t")[0] + "\t" + label, *rest]) + "\n")
    code, err = cli(capsys, data=root, tmp=tmp_path, protocol=imglist_protocol)
    assert_user_error(code, err, needle)


def test_negative_workers_are_refused(root, tmp_path, capsys):
    code, err = cli(capsys, "--workers", "-1", data=root, tmp=tmp_path)
    assert_user_error(code, err, "workers must be 0")


def test_a_lock_that_cannot_be_created_says_why(tmp_path, monkeypatch):
    from oodbench.locks import FileLock, LockError

    real = os.open

    def read_only(path, flags, *a):  # a read-only cache folder: no lock file, none creatable
        if str(path).endswith("x.lock"):
            if flags & os.O_CREAT:
                raise PermissionError(13, "Permission denied", path)
            raise FileNotFoundError(2, "No such file or directory", path)
        return real(path, flags, *a)

    (tmp_path / "locks").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(LockError, match=r"x.lock \(Permission denied\)"):
        FileLock(tmp_path / "locks" / "x.lock").acquire()

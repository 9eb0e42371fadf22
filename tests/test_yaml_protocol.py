"""Protocols written as YAML: image lists read as OpenOOD writes them, groups, templates, checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oodbench.errors import ConfigError, DataError
from oodbench.protocols import protocol_class
from oodbench.protocols.yaml_protocol import protocol_file


def make_leaves(tmp: Path) -> tuple[Path, Path]:
    """A data root with OpenOOD-style lists (``path label``, space-separated, relative to
    ``images/``) and a folder set; the YAML file beside the lists, outside the root."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp / "data"

    def save(rel: str, tint: int) -> None:
        p = root / "images" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        arr[..., tint % 3] = 255
        Image.fromarray(arr).save(p)

    lists = tmp / "proto" / "lists"
    lists.mkdir(parents=True)
    id_lines, ferns = [], []
    for c in range(3):
        for i in range(4):
            save(f"leaves/{c}_{i}.png", c)
            id_lines.append(f"leaves/{c}_{i}.png {c}")
    for i in range(5):
        save(f"ferns/f{i}.png", 1)
        ferns.append(f"ferns/f{i}.png 0")  # OpenOOD gives OOD lists labels too: read as -1
    for i in range(4):
        save(f"textures/t{i}.png", 2)
    (lists / "test_leaves.txt").write_text("\n".join(id_lines) + "\n")
    (lists / "test_ferns.txt").write_text("\n".join(ferns) + "\n")
    (tmp / "proto" / "classes.txt").write_text("oak\nmaple\nbirch\n")
    spec = tmp / "proto" / "leaves.yaml"
    spec.write_text(f"""
name: leaves
version: "2"
description: leaf species vs ferns and textures
data_root: {root}
classnames: classes.txt
templates: ["a photo of a {{}} leaf.", "a {{}} leaf."]
id: {{imglist: lists/test_leaves.txt, prefix: images}}
ood:
  - {{name: ferns, group: near, imglist: lists/test_ferns.txt, prefix: images}}
  - {{name: textures, group: far, folder: images/textures, expected: 4}}
""")
    return spec, root


def test_a_yaml_protocol_builds_from_openood_lists_and_a_folder(tmp_path):
    spec, root = make_leaves(tmp_path)
    p = protocol_class(str(spec))().build(None, tmp_path / "cache")
    assert (p.name, p.version, p.classnames) == ("leaves", "2", ["oak", "maple", "birch"])
    assert p.id_test.manifest.paths[0] == "images/leaves/0_0.png"
    assert p.id_test.manifest.labels == tuple(c for c in range(3) for _ in range(4))
    assert [s.name for s in p.ood] == ["ferns", "textures"]
    assert set(p.ood[0].manifest.labels) == {-1}  # OOD lists' labels are not class labels
    assert p.groups() == {"near": ["ferns"], "far": ["textures"]}
    assert p.templates == ["a photo of a {} leaf.", "a {} leaf."]
    assert p.id_test.manifest.root == root


@pytest.mark.parametrize("edit, match", [
    ("ood: []", "at least one OOD set"),
    ("colour: red", "unknown field"),
    ("templates: ['a photo']", "must hold '{}' once"),
    ("name: toy", "registered protocol"),
    ("name: 'a b'", "letters, digits"),
])
def test_a_bad_protocol_file_names_the_field(tmp_path, edit, match):
    spec, _ = make_leaves(tmp_path)
    key = edit.split(":")[0]
    lines = [ln for ln in spec.read_text().splitlines() if not ln.startswith(key + ":")
             and not (key == "ood" and ln.startswith("  - "))]
    spec.write_text("\n".join(lines + [edit]) + "\n")
    with pytest.raises(ConfigError, match=match) as e:
        protocol_file(spec)
    assert str(spec) in str(e.value)


def test_an_id_label_outside_the_class_list_is_refused(tmp_path):
    spec, _ = make_leaves(tmp_path)
    (spec.parent / "classes.txt").write_text("oak\nmaple\n")
    with pytest.raises(DataError, match="outside 0..1"):
        protocol_class(str(spec))().build(None, tmp_path / "cache")


def test_the_protocol_templates_make_the_zero_shot_classifier_a_prompt_ensemble():
    """MCM on a protocol with templates: softmax(cos / T).max against the mean of each class's
    normalised template embeddings, normalised (CLIP's ensemble), written out here; an explicit
    `template` param still wins."""
    from types import SimpleNamespace

    from oodbench.detectors.mcm import MCM

    g = torch.Generator().manual_seed(0)
    table = {}

    def encode(prompts):  # a fixed random unit vector per prompt
        for p in prompts:
            table.setdefault(p, torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0))
        return torch.stack([table[p] for p in prompts])

    templates = ["a photo of a {}.", "a {} leaf."]
    names = ["oak", "maple", "birch"]
    ctx = SimpleNamespace(protocol=SimpleNamespace(templates=templates), classnames=names,
                          encode_text=encode, device=torch.device("cpu"), info={})
    det = MCM()
    det.setup(ctx)
    x = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    w = []
    for c in names:
        m = (encode([templates[0].format(c)])[0] + encode([templates[1].format(c)])[0]) / 2
        w.append(m / m.norm())
    cos = x @ torch.stack(w).T
    expected = torch.softmax(cos / 1.0, dim=1).max(dim=1).values
    torch.testing.assert_close(det.score({"global": x}), expected, rtol=0, atol=1e-6)
    assert ctx.info["templates"] == templates
    own = MCM({"template": "a photo of a {}"})
    own.setup(SimpleNamespace(**{**vars(ctx), "info": {}}))
    single = torch.stack([encode([f"a photo of a {c}"])[0] for c in names])
    torch.testing.assert_close(own.score({"global": x}),
                               torch.softmax(x @ single.T, dim=1).max(dim=1).values,
                               rtol=0, atol=1e-6)


def _cli(*args, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "oodbench", *args], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_data_check_reads_a_protocol_file(tmp_path):
    spec, root = make_leaves(tmp_path)
    r = _cli("data", "check", str(spec))
    assert r.returncode == 0, r.stderr
    assert f"data root {root}" in r.stdout and "is ready" in r.stdout
    (root / "images/ferns/f0.png").unlink()
    r = _cli("data", "check", str(spec))
    assert r.returncode == 2 and "ferns: 1 listed files are missing" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_run_on_a_protocol_file_records_its_sets_and_templates(tmp_path):
    spec, _ = make_leaves(tmp_path)
    r = _cli("run", "--detector", "mcm", "--protocol", str(spec), "--backbone", "tiny-random",
             "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"),
             "--workers", "0")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "r/runs/leaves/tiny-random/mcm/seed0.json").read_text())
    assert rec["protocol"]["version"] == "2"
    assert rec["protocol"]["templates"] == ["a photo of a {} leaf.", "a {} leaf."]
    assert {k: v["group"] for k, v in rec["protocol"]["sets"].items()} == {
        "leaves-id": "", "ferns": "near", "textures": "far"}
    assert set(rec["groups"]) >= {"near", "far", "average"}
    assert rec["info"]["templates"] == ["a photo of a {} leaf.", "a {} leaf."]

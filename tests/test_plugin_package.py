"""A throwaway plugin package (a protocol from YAML, a detector, a backbone, with entry points),
installed by pip into a ``--target`` folder and run through the CLI: the record names the plugin's
distribution and version, and the shipped contract passes on its detector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DIST, VERSION = "oodplug-demo", "0.3.1"

FILES = {
    "pyproject.toml": f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{DIST}"
        version = "{VERSION}"
        dependencies = []

        [project.entry-points."oodbench.detectors"]
        demo-maxcos = "oodplug_demo.detector:MaxCos"

        [project.entry-points."oodbench.protocols"]
        demo-leaves = "oodplug_demo.protocol:Leaves"

        [project.entry-points."oodbench.backbones"]
        demo-tiny = "oodplug_demo.backbone:DemoTiny"

        [tool.setuptools]
        packages = ["oodplug_demo"]

        [tool.setuptools.package-data]
        oodplug_demo = ["*.yaml", "lists/*.txt"]
        """,
    "oodplug_demo/__init__.py": '"""A demo oodbench plugin."""\n',
    "oodplug_demo/scale.py": "SCALE = 2.0  # a helper module: its edits reach the score key\n",
    "oodplug_demo/detector.py": '''
        import torch

        from oodbench.detectors.base import ZeroShotDetector
        from oodplug_demo.scale import SCALE


        class MaxCos(ZeroShotDetector):
            """Largest image-text cosine, scaled."""

            version = "1"

            def score_from_logits(self, s: torch.Tensor) -> torch.Tensor:
                return SCALE * s.max(dim=1).values
        ''',
    "oodplug_demo/backbone.py": '''
        from oodbench.backbones.tiny import TinyRandomBackbone


        class DemoTiny(TinyRandomBackbone):
            """The tiny random CLIP under a plugin's name."""
        ''',
    "oodplug_demo/protocol.py": '''
        from pathlib import Path

        from oodbench.protocols.yaml_protocol import yaml_protocol

        Leaves = yaml_protocol(Path(__file__).parent / "leaves.yaml")
        ''',
    "oodplug_demo/leaves.yaml": """
        name: demo-leaves
        version: "1"
        description: two leaf classes vs ferns (demo plugin)
        classnames: [oak, maple]
        templates: ["a photo of a {} leaf."]
        id: {imglist: lists/id.txt}
        ood:
          - {name: ferns, group: near, imglist: lists/ferns.txt}
        """,
}


def write_package(src: Path, data: Path) -> None:
    """The plugin's source tree, and the images its lists name under ``data``."""
    from PIL import Image

    for rel, text in FILES.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip())
    rng = np.random.default_rng(0)
    lines: dict[str, list[str]] = {"id": [], "ferns": []}
    for name, label, n in (("oak", 0, 4), ("maple", 1, 4), ("ferns", -1, 5)):
        for i in range(n):
            rel = f"{name}/{i}.png"
            (data / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(data / rel)
            lines["ferns" if label < 0 else "id"].append(f"{rel} {max(label, 0)}")
    (src / "oodplug_demo/lists").mkdir()
    for k, v in lines.items():
        (src / f"oodplug_demo/lists/{k}.txt").write_text("\n".join(v) + "\n")


@pytest.mark.slow  # a pip install and three CLI processes
def test_a_plugin_package_runs_through_the_cli_and_is_named_in_the_record(tmp_path):
    src, target, data = tmp_path / "src", tmp_path / "site", tmp_path / "data"
    write_package(src, data)
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(target), str(src)],
        capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(target)])}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "oodbench", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path)

    listed = cli("list", "detectors")
    assert f"plugin {DIST} {VERSION}" in listed.stdout and "demo-maxcos" in listed.stdout
    r = cli("run", "--detector", "demo-maxcos,mcm", "--protocol", "demo-leaves",
            "--backbone", "demo-tiny", "--data-root", str(data), "--cache-dir",
            str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results"), "--workers", "0")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "results/runs/demo-leaves/demo-tiny/demo-maxcos/seed0.json")
                     .read_text())
    plugins = rec["environment"]["plugins"]
    for key, module in (("detector:demo-maxcos", "oodplug_demo.detector"),
                        ("protocol:demo-leaves", "oodplug_demo.protocol"),
                        ("backbone:demo-tiny", "oodplug_demo.backbone")):
        assert plugins[key] == {"distribution": DIST, "version": VERSION, "module": module}
    assert "detector:mcm" not in plugins  # built-ins are oodbench's own
    assert rec["protocol"]["templates"] == ["a photo of a {} leaf."]
    assert rec["protocol"]["sets"]["ferns"]["n"] == 5

    # the shipped contract, run by pytest on the plugin's detector
    t = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-p", "oodbench.testing.plugin", "--pyargs", "oodbench.testing",
                        "--detector", "demo-maxcos", "-k", "not deterministic"],
                       capture_output=True, text=True, env={**env, "OODBENCH_CACHE": str(
                           tmp_path / "contract-cache")}, cwd=tmp_path)
    assert t.returncode == 0, t.stdout[-3000:] + t.stderr[-2000:]
    assert "3 passed" in t.stdout


def test_the_score_key_covers_a_plugin_packages_helper_modules(tmp_path, monkeypatch):
    """An edit of a module the plugin's detector imports changes the score-cache key, which
    hashing the class's own file alone would miss."""
    from oodbench.features.scores import package_digest

    pkg = tmp_path / "oodplug_keydemo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "detector.py").write_text("from oodplug_keydemo.scale import SCALE\n")
    (pkg / "scale.py").write_text("SCALE = 2.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.import_module("oodplug_keydemo.detector")
    before = package_digest("oodplug_keydemo.detector")
    assert package_digest("oodplug_keydemo.detector") == before
    (pkg / "scale.py").write_text("SCALE = 3.0\n")
    assert package_digest("oodplug_keydemo.detector") != before

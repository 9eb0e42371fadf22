"""Run specs and flags that used to hang, pass silently or end in a traceback (issue 16, cases
9-11): each is now exit code 2 with one message naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oodbench.cli import main

ROOT = Path(__file__).resolve().parents[1]

def bomb(indent: str) -> str:
    """A YAML list of nine anchored lists, each nine references to the one before: 9^9 = 387
    million leaves from one kilobyte (a 'billion laughs')."""
    lines = [f"{indent}- &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{indent}- &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("head", ["detectors:\n", "detectors: [mcm]\nseeds:\n",
                                  "detectors: [mcm]\nparams:\n  mcm:\n    temperature:\n",
                                  "detectors: [mcm]\nparams:\n  mcm:\n"])
def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path, head, standin_root):
    # formatting the whole structure into the type error's message hung the CLI
    spec = tmp_path / "bomb.yaml"
    indent = "      " if "temperature" in head else "    " if "mcm:" in head else "  "
    spec.write_text("protocol: imagenet1k-mos4\nbackbone: tiny-random\n" + head + bomb(indent))
    assert len(spec.read_bytes()) < 1500
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "oodbench", "run", "--spec", str(spec),
                           "--data-root", str(standin_root), "--cache-dir", str(tmp_path / "c"),
                           "--results-dir", str(tmp_path / "r")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("oodbench: error: ") and "Traceback" not in done.stderr
    assert len(done.stderr) < 2000


@pytest.mark.parametrize("args,needle", [
    (["--param", "mcm.temperature=.inf"], "mcm.temperature=inf must be a finite number"),
    (["--param", "mcm.temperature=.nan"], "must be a finite number"),
    (["--seeds", "0,0"], "seed 0 is given twice"),
    (["--detector", "mcm,mcm"], "detector mcm is given twice"),
    (["--seeds", "99999999999999999999"], "seeds must be between 0 and 2**63 - 1"),
    (["--device", "meta"], "device 'meta' unknown or unsupported"),
    (["--device", "mps"], "device 'mps' unknown or unsupported"),
])
def test_silently_accepted_or_crashing_flags_are_refused(tmp_path, capsys, args, needle,
                                                         standin_root):
    argv = ["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
            "tiny-random", "--data-root", str(standin_root), "--quiet", "--workers", "0",
            "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), *args]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("oodbench: error: ") and needle in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("template", ["{} {x}", "a photo of a {", "{}{}", "no slot"])
def test_a_template_with_extra_braces_is_refused(tmp_path, capsys, standin_root, template):
    argv = ["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
            "tiny-random", "--data-root", str(standin_root), "--quiet", "--workers", "0",
            "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"),
            "--param", f"mcm.template={template}"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "hyperparameter mcm.template=" in err, err
    assert "must hold exactly one '{}'" in err and "Traceback" not in err


def test_a_crop_other_than_the_models_input_size_is_refused(tmp_path, capsys, standin_root):
    # tiny-random's tower takes 32x32: a 48 crop ended in a shape error deep in the forward pass
    argv = ["run", "--detector", "mcm", "--protocol", "imagenet1k-mos4", "--backbone",
            "tiny-random", "--data-root", str(standin_root), "--quiet", "--workers", "0",
            "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"),
            "--resize", "48", "--crop", "48"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "crop 48 differs from the input size of tiny-random (32x32)" in err
    assert not (tmp_path / "r").exists()

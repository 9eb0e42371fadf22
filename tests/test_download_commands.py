"""Every OpenOOD download command oodbench prints or documents names datasets that OpenOOD's
``scripts/download/download.py`` accepts (the list ships in ``oodbench/data/files``)."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pytest

from oodbench.registry import PROTOCOLS

REPO = Path(__file__).parents[1]
COMMAND = re.compile(r"download\.py((?:\s+--\w+(?:\s+[^\s`'\"();,]+)*)+)")


def upstream_names() -> dict[str, set[str]]:
    """section -> names, from the shipped copy of download.py's argument table."""
    out: dict[str, set[str]] = {}
    section = None
    text = files("oodbench.data").joinpath("files", "openood_download_names.txt").read_text()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = set()
        else:
            out[section].add(line)
    return out


def parse(command_args: str) -> dict[str, list[str]]:
    """'--contents datasets --datasets a b --save_dir X' -> {'contents': [...], ...}."""
    out: dict[str, list[str]] = {}
    key = None
    for tok in command_args.split():
        if tok.startswith("--"):
            key = tok[2:]
            out[key] = []
        elif key is not None:
            out[key].append(tok)
    return out


def printed_texts() -> dict[str, str]:
    """Everything oodbench prints about where data comes from, plus the docs."""
    from oodbench.protocols.folders import _sorted_instead_of_flat

    texts = {}
    for name in PROTOCOLS.names():
        proto = PROTOCOLS.get(name)()
        for spec in getattr(proto, "sets", ()):
            texts[f"{name}:{spec.name}"] = spec.source
        for lay in getattr(type(proto), "layouts", ()):
            texts[f"{name}:layout {lay.name}"] = lay.source
            for path, move in lay.moves.items():
                texts[f"{name}:layout {lay.name}:{path}"] = move.get("source", "")
    texts["sorted-val fix"] = _sorted_hint(_sorted_instead_of_flat)
    for doc in ("README.md", "docs/data.md"):
        texts[doc] = (REPO / doc).read_text()
    return texts


def _sorted_hint(fn) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "val/n01440764").mkdir(parents=True)
        (Path(d) / "val/n01440764/ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
        return fn(Path(d), ["val/ILSVRC2012_val_00000001.JPEG"]) or ""


def commands() -> list[tuple[str, dict[str, list[str]]]]:
    """(first place it appears, parsed arguments) of each distinct download command."""
    seen: dict[str, str] = {}
    for where, text in printed_texts().items():
        for m in COMMAND.finditer(text):
            seen.setdefault(" ".join(m.group(1).split()), where)
    return [(where, parse(args)) for args, where in seen.items()]


def test_the_shipped_list_names_its_source_and_holds_both_tables():
    text = files("oodbench.data").joinpath("files", "openood_download_names.txt").read_text()
    assert "Jingkang50/OpenOOD scripts/download/download.py" in text
    names = upstream_names()
    assert {"imagenet-1k", "cifar-10", "cifar-100"} <= names["benchmarks"]
    assert "imagenet_1k" not in names["benchmarks"] and "imagenet_1k" in names["datasets"]


def test_commands_are_found_where_users_read_them():
    texts = printed_texts()
    for where in ("openood-v1.5-imagenet1k:ImageNet-1k", "unseen-id-cifar10:CIFAR-10",
                  "unseen-id-cifar100:CIFAR-100", "docs/data.md", "sorted-val fix",
                  "imagenet1k-mos4:layout openood-vlm"):
        assert COMMAND.search(texts[where]), where
    assert {tuple(a["datasets"]) for _, a in commands()} >= {
        ("imagenet-1k",), ("cifar-10",), ("cifar-100",)}


@pytest.mark.parametrize("where,args", commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_download_command_names_datasets_download_py_accepts(where, args):
    names = upstream_names()
    assert args.get("datasets"), f"{where}: a download command without --datasets"
    mode = (args.get("dataset_mode") or ["default"])[0]
    allowed = names["datasets"] if mode == "dataset" else names["benchmarks"]
    bad = [d for d in args["datasets"] if d not in allowed]
    kind = "dataset" if mode == "dataset" else "benchmark"
    assert not bad, f"{where}: download.py has no {kind} named {bad} (its: {sorted(allowed)})"
    assert args.get("contents") in (None, ["datasets"], ["datasets", "checkpoints"])


DATASETS = re.compile(r"--datasets((?:\s+[^\s`'\"();,-][^\s`'\"();,]*)+)")


def test_every_datasets_fragment_anywhere_names_benchmarks_download_py_accepts():
    """Also the bare `--datasets cifar-10 cifar-100` that the docs write after a full command."""
    names = upstream_names()
    fragments = [(where, m.group(1).split()) for where, text in printed_texts().items()
                 for m in DATASETS.finditer(text)]
    assert any(d == ["cifar-10", "cifar-100"] for _, d in fragments)
    bad = [(where, d) for where, ds in fragments for d in ds if d not in names["benchmarks"]]
    assert not bad, f"download.py has no benchmark named: {bad}"


def test_the_checker_would_catch_the_old_names():
    names = upstream_names()
    old = "`download.py --contents datasets --datasets imagenet_1k --save_dir DATA_ROOT`; for " \
          "CIFAR, `--datasets cifar10 cifar100`"
    parsed = parse(COMMAND.search(old).group(1))
    assert [d for d in parsed["datasets"] if d not in names["benchmarks"]] == ["imagenet_1k"]
    frags = [m.group(1).split() for m in DATASETS.finditer(old)]
    assert frags == [["imagenet_1k"], ["cifar10", "cifar100"]]
    assert not {"cifar10", "cifar100"} & names["benchmarks"]

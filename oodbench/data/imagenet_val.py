"""ImageNet-1k val as ``ILSVRC2012_img_val.tar`` unpacks it: 50,000 flat files, no class folders.

A flat val folder carries no labels, and an ID set without labels has no ID accuracy and a wrong
class prior, so oodbench refuses it until the user points ``oodbench data prepare imagenet-val``
at the official ground truth. That writes an **image list** (``path<TAB>label``, label = index of
the WNID in sorted-WNID order, as ImageFolder) into ``<data root>/.oodbench/lists/`` (oodbench's own
folder in the root, beside ``data index``'s checksum tables); the images are never moved, and the
protocols read the val folder through that list from then on.

Ground-truth files understood:

- Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token of the
  prediction string is the image's WNID);
- the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per image, in file
  order) together with the devkit's ``data/meta.mat``, which maps ILSVRC2012_IDs to WNIDs (read
  with scipy, when installed);
- a plain ``filename wnid`` (or ``wnid`` per line, in file order) list, such as TensorFlow's
  ``imagenet_2012_validation_synset_labels.txt``.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from oodbench.data.classnames import imagenet1k_wnids
from oodbench.data.manifest import Manifest, read_manifest
from oodbench.errors import DataError

VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)
WNID = re.compile(r"^n\d{8}$")
LISTS_DIR = ".oodbench/lists"
LIST_HEADER = "# oodbench image list of a flat ILSVRC-2012 val folder"
N_VAL = 50_000


def prepared_list_path(root: Path, folder: str) -> Path:
    """Where the image list of the flat val folder ``root/folder`` is written and read."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in folder.strip("/"))
    return Path(root) / LISTS_DIR / f"{name}.txt"


def flat_val_files(folder: Path) -> list[str]:
    """Names of the ``ILSVRC2012_val_*.JPEG`` files directly in ``folder`` (sorted)."""
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_file() and VAL_NAME.match(e.name))
    except OSError:
        return []


def prepare_command(root: Path | str, ground_truth: str = "LOC_val_solution.csv") -> str:
    """The command that labels a flat val folder (printed in error messages)."""
    return (f"oodbench data prepare imagenet-val --ground-truth /path/to/{ground_truth} "
            f"--data-root {root}")


def flat_val_message(root: Path, folder: str, n: int) -> str:
    """What to do about a flat ILSVRC val folder that has no prepared image list yet."""
    return (f"{Path(root) / folder} holds {n:,} ILSVRC2012_val_*.JPEG files flat, as "
            "ILSVRC2012_img_val.tar unpacks, with no class folders, so its images have no labels "
            "(an ID set must have them). Label them from the official ground truth without moving "
            f"any file: {prepare_command(root)} (Kaggle's LOC_val_solution.csv, or the devkit's "
            "ILSVRC2012_validation_ground_truth.txt with --meta data/meta.mat); or sort the "
            "files into one folder per WNID (e.g. with valprep.sh)")


def read_ground_truth(path: Path, meta: Path | None = None) -> dict[int, str]:
    """Val image number (1..50,000) -> WNID, from any of the understood ground-truth files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ground-truth file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"ground-truth file {path} cannot be read as text ({e})") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"ground-truth file {path} is empty")
    if lines[0].replace(" ", "").lower().startswith("imageid,predictionstring"):
        return _loc_solution(path, lines)
    first = lines[0].split()
    if len(first) == 1 and first[0].isdigit():
        return _devkit(path, lines, meta)
    return _wnid_list(path, lines)


def _loc_solution(path: Path, lines: list[str]) -> dict[int, str]:
    out: dict[int, str] = {}
    for lineno, row in enumerate(csv.reader(lines[1:]), 2):
        if len(row) < 2 or not row[1].split():
            raise DataError(f"{path}, line {lineno}: expected 'ImageId,PredictionString', got "
                            f"{','.join(row)!r}")
        out[_number(row[0], path, lineno)] = _wnid(row[1].split()[0], path, lineno)
    return out


def _devkit(path: Path, lines: list[str], meta: Path | None) -> dict[int, str]:
    if meta is None:
        raise DataError(
            f"{path} holds ILSVRC2012_IDs (the devkit's ground truth), which name classes by the "
            "devkit's own numbering; pass the devkit's data/meta.mat too (--meta "
            "ILSVRC2012_devkit_t12/data/meta.mat), or use Kaggle's LOC_val_solution.csv instead")
    ids = _meta_ids(Path(meta))
    out = {}
    for i, ln in enumerate(lines, 1):
        if not ln.isdigit() or int(ln) not in ids:
            raise DataError(f"{path}, line {i}: {ln!r} is not an ILSVRC2012_ID listed in {meta}")
        out[i] = ids[int(ln)]
    return out


def _meta_ids(meta: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the 1000 leaf classes in the devkit's meta.mat."""
    if not meta.is_file():
        raise DataError(f"devkit meta file {meta} does not exist")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("reading the devkit's meta.mat needs scipy (pip install scipy); or use "
                        "Kaggle's LOC_val_solution.csv, which needs nothing") from None
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        rows = [(int(s["ILSVRC2012_ID"]), str(s["WNID"])) for s in synsets]
    except Exception as e:  # scipy raises many types for a foreign file
        raise DataError(f"{meta} is not the devkit's meta.mat ({type(e).__name__}: {e})") from None
    known = set(imagenet1k_wnids())
    ids = {i: w for i, w in rows if w in known}
    if len(ids) != 1000:
        raise DataError(f"{meta} maps {len(ids)} ILSVRC2012_IDs to ImageNet-1k WNIDs, not 1000; "
                        "is it ILSVRC2012_devkit_t12/data/meta.mat?")
    return ids


def _wnid_list(path: Path, lines: list[str]) -> dict[int, str]:
    out = {}
    for i, ln in enumerate(lines, 1):
        parts = ln.replace(",", " ").split()
        if len(parts) == 1:
            out[i] = _wnid(parts[0], path, i)
        elif len(parts) == 2:
            out[_number(parts[0], path, i)] = _wnid(parts[1], path, i)
        else:
            raise DataError(f"{path}, line {i}: not a ground-truth line ({ln[:80]!r}); expected "
                            "LOC_val_solution.csv, the devkit's ground truth or 'filename wnid'")
    return out


def _number(image_id: str, path: Path, lineno: int) -> int:
    stem = Path(image_id.strip()).name.split(".")[0]
    m = re.match(r"^ILSVRC2012_val_(\d{8})$", stem, re.IGNORECASE)
    if not m:
        raise DataError(f"{path}, line {lineno}: {image_id!r} is not an ILSVRC2012_val image id")
    return int(m.group(1))


def _wnid(text: str, path: Path, lineno: int) -> str:
    if not WNID.match(text):
        raise DataError(f"{path}, line {lineno}: {text!r} is not a WordNet ID like n01440764")
    return text


def val_manifest(root: Path, folder: str, truth: dict[int, str], name: str) -> Manifest:
    """The labelled manifest of the flat val folder ``root/folder``; every file must be labelled."""
    files = flat_val_files(Path(root) / folder)
    if not files:
        raise DataError(f"{Path(root) / folder} holds no ILSVRC2012_val_*.JPEG files; point "
                        "--data-root (and --layout) at the root that holds the flat val folder")
    index = {w: i for i, w in enumerate(imagenet1k_wnids())}
    unknown = sorted({w for w in truth.values() if w not in index})
    if unknown:
        raise DataError(f"the ground truth names {len(unknown)} WNIDs that are not ImageNet-1k "
                        f"classes, e.g. {unknown[:3]}; is it the ILSVRC-2012 val ground truth?")
    unlabelled = [f for f in files if int(VAL_NAME.match(f).group(1)) not in truth]
    if unlabelled:
        raise DataError(f"the ground truth has no label for {len(unlabelled)} of the "
                        f"{len(files):,} files in {Path(root) / folder}, e.g. {unlabelled[:3]}; "
                        "is it the ILSVRC-2012 val ground truth?")
    labels = tuple(index[truth[int(VAL_NAME.match(f).group(1))]] for f in files)
    return Manifest(name, Path(root), tuple(f"{folder}/{f}" for f in files), labels,
                    source=f"{Path(root) / folder} labelled by oodbench data prepare")


def write_val_list(root: Path, folder: str, truth: dict[int, str]) -> tuple[Path, Manifest]:
    """Write the image list of a flat val folder atomically; refuses to replace a foreign file."""
    from oodbench.io import atomic_write_text

    m = val_manifest(root, folder, truth, "ImageNet-1k-val")
    out = prepared_list_path(root, folder)
    if out.exists() and not out.read_text(encoding="utf-8", errors="replace").startswith(
            LIST_HEADER):
        raise DataError(f"{out} exists and was not written by oodbench; move it away first")
    lines = [f"{LIST_HEADER} {folder}: path<TAB>label (sorted-WNID index), root-relative"]
    lines += [f"{p}\t{y}" for p, y in zip(m.paths, m.labels, strict=True)]
    try:
        atomic_write_text(out, "\n".join(lines) + "\n")
    except OSError as e:
        raise DataError(
            f"cannot write the image list {out} ({e.strerror or e}). The data root must be "
            "writable for oodbench's own .oodbench/ folder; for a read-only root, make a writable "
            f"one that links to it (mkdir ~/ood && ln -s {Path(root).resolve()}/* ~/ood/) and "
            "prepare that") from None
    return out, m


def read_val_list(root: Path, folder: str, name: str) -> Manifest | None:
    """The prepared image list of ``root/folder`` (None when there is none)."""
    path = prepared_list_path(root, folder)
    if not path.is_file():
        return None
    m = read_manifest(path, root, name=name)
    outside = [p for p in m.paths if not p.startswith(folder.rstrip("/") + "/")]
    if outside:
        raise DataError(f"{path} lists files outside {folder} (e.g. {outside[0]}); rerun "
                        "`oodbench data prepare imagenet-val`")
    return m


def filter_wnids(m: Manifest, classes: Iterable[str]) -> Manifest:
    """Entries of an ImageNet-1k-labelled manifest whose class is in ``classes``, relabelled by
    the position of their WNID in ``classes`` (ImageNet-100, -10/-20, base-to-new subsets)."""
    wnids = imagenet1k_wnids()
    pos = {w: i for i, w in enumerate(classes)}
    keep = [i for i, y in enumerate(m.labels) if 0 <= y < len(wnids) and wnids[y] in pos]
    sub = m.subset(keep)
    return replace(sub, labels=tuple(pos[wnids[y]] for y in sub.labels))

"""Class lists of the protocols, read from the data files shipped in ``oodbench/data/files``.

Each file gives one class per line in label order (``#`` lines are provenance comments); ``.tsv``
files pair a WordNet ID (the image folder name) with the name used in prompts. Where a paper used
particular names (MCM's hand-written ImageNet-10/20 names, KR-NFT's fine-grained lists) the file
says so, and the protocol uses those names to stay comparable.
"""

from __future__ import annotations

from functools import cache

from oodbench.data.classnames import imagenet1k_classnames, imagenet1k_wnids, imagenet_subset_wnids


@cache
def _lines(name: str) -> tuple[str, ...]:
    from importlib.resources import files

    text = files("oodbench.data").joinpath("files", name).read_text(encoding="utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


def names(name: str) -> list[str]:
    """Class names of a one-name-per-line file, underscores shown as spaces."""
    return [ln.replace("_", " ") for ln in _lines(name)]


def wnid_table(name: str) -> tuple[list[str], list[str]]:
    """(WNIDs, names) of a ``wnid<TAB>name`` file, in label order."""
    rows = [ln.split("\t", 1) for ln in _lines(name)]
    return [r[0] for r in rows], [r[1] for r in rows]


def imagenet_names_of(wnids: list[str]) -> list[str]:
    """The CLIP-cleaned ImageNet-1k names of some WNIDs, in the given order."""
    index = {w: i for i, w in enumerate(imagenet1k_wnids())}
    all_names = imagenet1k_classnames()
    return [all_names[index[w]] for w in wnids]


def imagenet_ar_wnids(which: str) -> list[str]:
    """The 200 WNIDs of ImageNet-A ('a') or ImageNet-R ('r'), sorted (= their label order)."""
    return imagenet_subset_wnids(which)


def half(classes: list[str]) -> int:
    """Number of classes in the ID half of a half-class split (the first ``len // 2``)."""
    return len(classes) // 2

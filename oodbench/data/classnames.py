"""Class-name lists as data.

ImageNet-1k uses the 1000 "cleaned" names of the OpenAI CLIP notebook, in sorted-WNID order, as
every CLIP OOD paper does (duplicates such as 'missile' and 'sunglasses' kept on purpose); open_clip
ships the same list.
"""

from __future__ import annotations


def imagenet1k_classnames() -> list[str]:
    """The 1000 CLIP-cleaned ImageNet-1k class names, in sorted-WNID (ImageFolder) order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = list(IMAGENET_CLASSNAMES)
    assert len(names) == 1000
    return names


def _data_file(name: str) -> list[str]:
    from importlib.resources import files

    text = files("oodbench.data").joinpath("files", name).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def imagenet1k_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet IDs in sorted order (= class index order)."""
    return _data_file("imagenet1k_wnids.txt")


def imagenet_subset_wnids(name: str) -> list[str]:
    """WNIDs of the 200-class ImageNet-A ('a') or ImageNet-R ('r') subsets, sorted."""
    return _data_file(f"imagenet_{name}_wnids.txt")

"""ImageNet-1k protocols. ``imagenet1k-mos4``: ImageNet-1k val vs iNaturalist / SUN / Places / Textures.

The OOD subsets are those of MOS (Huang & Li, CVPR 2021), used by MCM, NegLabel, CLIPN, CMA, LAPT,
KR-NFT and Local-Prompt. Class order is sorted WNID (ImageFolder) with the CLIP-cleaned names.
"""

from __future__ import annotations

from pathlib import Path

from oodbench.data.classnames import imagenet1k_classnames, imagenet1k_wnids
from oodbench.protocols.folders import FolderProtocol, SetSpec
from oodbench.registry import PROTOCOLS

MOS_URL = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset"
IMAGENET_SOURCE = (
    "ILSVRC-2012 validation images from image-net.org (registration required), sorted into one "
    "folder per WNID (e.g. with the valprep.sh script) so that imagenet/val/n01440764/*.JPEG exists"
)
IMAGENET_TRAIN_SOURCE = (
    "ILSVRC-2012 training images from image-net.org, as imagenet/train/<wnid>/*.JPEG "
    "(only needed by trainable detectors)"
)


def mos_source(name: str) -> str:
    """Where a MOS OOD subset comes from and where it goes."""
    return f"download {MOS_URL}/{name}.tar.gz and extract it in the data root ({name}/images/*.jpg)"


TEXTURES_SOURCE = (
    "DTD from https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz); extract in the data "
    "root so that dtd/images/<47 class folders>/*.jpg exists"
)

MOS4_OOD = (
    SetSpec("iNaturalist", "ood", "iNaturalist/images", 10_000, mos_source("iNaturalist"), "far"),
    SetSpec("SUN", "ood", "SUN/images", 10_000, mos_source("SUN"), "far"),
    SetSpec("Places", "ood", "Places/images", 10_000, mos_source("Places"), "far"),
    SetSpec("Textures", "ood", "dtd/images", 5_640, TEXTURES_SOURCE, "far"),
)


@PROTOCOLS.register("imagenet1k-mos4")
class ImageNet1kMOS4(FolderProtocol):
    """ImageNet-1k val (50k) vs iNaturalist, SUN, Places, Textures (the MOS four)."""

    name = "imagenet1k-mos4"
    version = "1"
    description = "ImageNet-1k val (50k) vs iNaturalist / SUN / Places / Textures (MOS four)"
    sets = (
        SetSpec("ImageNet-1k", "id", "imagenet/val", 50_000, IMAGENET_SOURCE),
        *MOS4_OOD,
        SetSpec("ImageNet-1k-train", "train", "imagenet/train", None, IMAGENET_TRAIN_SOURCE,
                optional=True),
    )
    classnames_fn = staticmethod(imagenet1k_classnames)

    def class_folders(self, root: Path, spec: SetSpec) -> list[str] | None:
        # label = index of the WNID in the full sorted list, even when only some folders exist
        return imagenet1k_wnids() if spec.role in ("id", "train", "val") else None

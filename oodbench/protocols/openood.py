"""OpenOOD v1.5 ImageNet-1k: near (SSB-hard, NINCO) and far (iNaturalist, Textures, OpenImage-O).

Read from OpenOOD's own ``benchmark_imglist/imagenet/*.txt`` lists under the data root, with the
images under ``images_largescale/`` (``images_classic/`` for Textures), exactly as OpenOOD's
download script lays them out. ID test is the 45k list, ID val the 5k list. The OOD validation
split is OpenImage-O's val list, disjoint from every test set (OpenOOD-VLM's configs use NINCO,
a test set, for model selection; oodbench does not). The full-spectrum variant counts ImageNet-V2,
-C and -R as ID (they must not be flagged).
"""

from __future__ import annotations

from oodbench.data.classnames import imagenet1k_classnames
from oodbench.protocols.folders import FolderProtocol, SetSpec
from oodbench.registry import PROTOCOLS

OPENOOD_SOURCE = (
    "OpenOOD v1.5: run scripts/download/download.py from https://github.com/Jingkang50/OpenOOD "
    "(--contents datasets --datasets imagenet_1k --save_dir DATA_ROOT, which fetches "
    "benchmark_imglist/ and the OOD images); put the ILSVRC-2012 val images (from image-net.org) "
    "flat in images_largescale/imagenet_1k/val/"
)
LARGE, CLASSIC, LISTS = "images_largescale", "images_classic", "benchmark_imglist/imagenet"


def _list(name: str, role: str, file: str, n: int | None, group: str = "",
          images: str = LARGE) -> SetSpec:
    return SetSpec(name, role, images, n, OPENOOD_SOURCE, group, imglist=f"{LISTS}/{file}")


OPENOOD_SETS = (
    _list("ImageNet-1k", "id", "test_imagenet.txt", 45_000),
    _list("ImageNet-1k-val", "val", "val_imagenet.txt", 5_000),
    _list("OpenImage-O-val", "ood-val", "val_openimage_o.txt", None),
    _list("SSB-hard", "ood", "test_ssb_hard.txt", 49_000, "near"),
    _list("NINCO", "ood", "test_ninco.txt", 5_879, "near"),
    _list("iNaturalist", "ood", "test_inaturalist.txt", 10_000, "far"),
    _list("Textures", "ood", "test_textures.txt", 5_160, "far", images=CLASSIC),
    _list("OpenImage-O", "ood", "test_openimage_o.txt", 15_869, "far"),
)
CSID_SETS = (
    _list("ImageNet-V2", "shifted-id", "test_imagenet_v2.txt", 10_000),
    _list("ImageNet-C", "shifted-id", "test_imagenet_c.txt", None),
    _list("ImageNet-R", "shifted-id", "test_imagenet_r.txt", 30_000),
)


@PROTOCOLS.register("openood-v1.5-imagenet1k")
class OpenOODImageNet1k(FolderProtocol):
    """OpenOOD v1.5 ImageNet-1k: 45k ID test vs near (SSB-hard, NINCO) and far OOD."""

    name = "openood-v1.5-imagenet1k"
    version = "1"
    description = ("OpenOOD v1.5 ImageNet-1k (45k test) vs near SSB-hard/NINCO and far "
                   "iNaturalist/Textures/OpenImage-O")
    sets = OPENOOD_SETS
    classnames_fn = staticmethod(imagenet1k_classnames)


@PROTOCOLS.register("openood-v1.5-imagenet1k-fs")
class OpenOODImageNet1kFS(FolderProtocol):
    """OpenOOD v1.5 full-spectrum: ImageNet-V2/-C/-R count as ID beside the 45k ID test set."""

    name = "openood-v1.5-imagenet1k-fs"
    version = "1"
    description = "OpenOOD v1.5 ImageNet-1k full-spectrum: ImageNet-V2/-C/-R count as ID"
    sets = OPENOOD_SETS + CSID_SETS
    classnames_fn = staticmethod(imagenet1k_classnames)

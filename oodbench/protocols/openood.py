"""OpenOOD v1.5 ImageNet-1k: near (SSB-hard, NINCO) and far (iNaturalist, Textures, OpenImage-O).

Read from OpenOOD's own ``benchmark_imglist/imagenet/*.txt`` lists under the data root, with the
images under ``images_largescale/`` (``images_classic/`` for Textures), exactly as OpenOOD's
download script lays them out. ID test is the 45k list, ID val the 5k list. The OOD validation
split is OpenImage-O's val list, disjoint from every test set (OpenOOD-VLM's configs use NINCO,
a test set, for model selection; oodbench does not). The full-spectrum variant counts ImageNet-V2,
-C, -R and -ES as ID (they must not be flagged), as OpenOOD's ``imagenet_fsood.yml`` and its
evaluation API's ``csid`` sets do.
"""

from __future__ import annotations

from oodbench.data.classnames import imagenet1k_classnames
from oodbench.protocols.folders import FolderProtocol, SetSpec
from oodbench.registry import PROTOCOLS


def download_command(*benchmarks: str) -> str:
    """OpenOOD's dataset download command for some of its benchmarks (names as its download.py's
    ``benchmarks_dict``: ``imagenet-1k``, ``cifar-10``, ``cifar-100``; shipped in
    ``oodbench/data/files/openood_download_names.txt`` and checked by the tests)."""
    return ("python scripts/download/download.py --contents datasets --datasets "
            f"{' '.join(benchmarks)} --save_dir DATA_ROOT")


OPENOOD_SOURCE = (
    "OpenOOD v1.5: in a clone of https://github.com/Jingkang50/OpenOOD run "
    f"`{download_command('imagenet-1k')}`; it fetches benchmark_imglist/ and every image set "
    "of the benchmark, the ILSVRC-2012 val images included (images_largescale/imagenet_1k/val/, "
    "flat)"
)
IMAGENET_ES_SOURCE = (
    "ImageNet-ES (OpenOOD v1.5 full-spectrum): download.py does not list it; OpenOOD's evaluation "
    "API fetches it with the rest of the ImageNet-1k benchmark: in a clone of "
    "https://github.com/Jingkang50/OpenOOD run `python -c \"from openood.evaluation_api.datasets "
    "import data_setup; data_setup('DATA_ROOT', 'imagenet')\"`, which writes "
    "images_largescale/imagenet_es/; it fetches benchmark_imglist/ only when that folder is "
    "absent, so move an older one that lacks imagenet/test_imagenet_es.txt away first"
)
LARGE, CLASSIC, LISTS = "images_largescale", "images_classic", "benchmark_imglist/imagenet"


def _list(name: str, role: str, file: str, n: int | None, group: str = "",
          images: str = LARGE, source: str = OPENOOD_SOURCE) -> SetSpec:
    return SetSpec(name, role, images, n, source, group, imglist=f"{LISTS}/{file}")


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
    _list("ImageNet-ES", "shifted-id", "test_imagenet_es.txt", None, source=IMAGENET_ES_SOURCE),
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
    """OpenOOD v1.5 full-spectrum: ImageNet-V2/-C/-R/-ES count as ID beside the 45k ID test set."""

    name = "openood-v1.5-imagenet1k-fs"
    version = "2"  # 2: ImageNet-ES joined the shifted-ID sets, as in OpenOOD's imagenet_fsood.yml
    description = "OpenOOD v1.5 ImageNet-1k full-spectrum: ImageNet-V2/-C/-R/-ES count as ID"
    sets = OPENOOD_SETS + CSID_SETS
    classnames_fn = staticmethod(imagenet1k_classnames)
    notes = ("ImageNet-ES joined OpenOOD's full-spectrum shifted-ID sets in July 2024 (OpenOOD "
             "commit 66a007c); numbers published before then (e.g. LAPT's Table A3) exclude it.")

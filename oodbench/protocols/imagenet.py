"""ImageNet protocols: the MOS four with ImageNet-1k or -100 as ID, covariate shift, hard OOD.

``imagenet1k-mos4``: ImageNet-1k val vs iNaturalist / SUN / Places / Textures, the OOD subsets of
MOS (Huang & Li, CVPR 2021) used by MCM, NegLabel, CLIPN, CMA, LAPT, KR-NFT and Local-Prompt.
Class order is sorted WNID (ImageFolder) with the CLIP-cleaned names. ``imagenet100-mos4``: MCM's
ImageNet-100. ``covariate-shift*``: ImageNet-V2 / -Sketch / -A / -R count as ID (never as OOD).
``hard-ood-*``: MCM's ImageNet-10 vs ImageNet-20, both ways.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from oodbench.data.classnames import imagenet1k_classnames, imagenet1k_wnids
from oodbench.protocols.classlists import imagenet_ar_wnids, imagenet_names_of, wnid_table
from oodbench.protocols.folders import FolderProtocol, Layout, SetSpec
from oodbench.protocols.openood import download_command
from oodbench.registry import PROTOCOLS

MOS_URL = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset"
IMAGENET_SOURCE = (
    "ILSVRC-2012 validation images from image-net.org (registration required), sorted into one "
    "folder per WNID (e.g. with the valprep.sh script) so that imagenet/val/n01440764/*.JPEG "
    "exists, or left flat as ILSVRC2012_img_val.tar unpacks and labelled in place by `oodbench "
    "data prepare imagenet-val --ground-truth LOC_val_solution.csv`"
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


# ---------------------------------------------------------------------------- other layouts

MCM_SOURCE = (
    "MCM's layout (https://github.com/deeplearning-wisc/MCM, README 'Data Preparation'): "
    "datasets/ImageNet/{train,val}/<wnid>/ and datasets/ImageNet_OOD_dataset/{iNaturalist,SUN,"
    "Places}/images/ (the MOS tars) and datasets/ImageNet_OOD_dataset/dtd/images/ (DTD)"
)
MCM_LAYOUT = Layout(
    "mcm",
    "MCM's --root-dir: ImageNet/{train,val} and ImageNet_OOD_dataset/{iNaturalist,SUN,Places,dtd}",
    MCM_SOURCE,
    markers=("ImageNet_OOD_dataset", "ImageNet/val"),
    prefixes=("", "datasets/"),
    moves={
        "imagenet/val": {"path": "ImageNet/val"},
        "imagenet/train": {"path": "ImageNet/train"},
        **{f"{s}/images": {"path": f"ImageNet_OOD_dataset/{s}/images"}
           for s in ("iNaturalist", "SUN", "Places")},
        "dtd/images": {"path": "ImageNet_OOD_dataset/dtd/images"},
    },
)
VLM_LISTS = "benchmark_imglist/imagenet"
VLM_SOURCE = (
    "OpenOOD-VLM's / KR-NFT's layout (configs/datasets/imagenet/imagenet_traditional_four_ood.yml "
    "of https://github.com/YBZh/OpenOOD-VLM): images under images_largescale/ read through "
    f"{VLM_LISTS}/test_imagenet_all.txt (ID), test_inaturalist.txt, test_sun.txt, "
    "test_places.txt, test_dtd.txt (its imglist_generator.py writes the last three from "
    "images_largescale/{SUN,Places}/images and dtd/images); in a clone of OpenOOD "
    f"`{download_command('imagenet-1k')}` fetches benchmark_imglist/ and the ImageNet and "
    "iNaturalist images, the MOS tars and DTD go to images_largescale/{SUN,Places,dtd}/"
)


def _vlm(file: str) -> dict:
    return {"path": "images_largescale", "imglist": f"{VLM_LISTS}/{file}", "source": VLM_SOURCE}


OPENOOD_VLM_LAYOUT = Layout(
    "openood-vlm",
    "OpenOOD-VLM / KR-NFT: the MOS four as image lists under images_largescale/",
    VLM_SOURCE,
    markers=(f"{VLM_LISTS}/test_sun.txt", f"{VLM_LISTS}/test_imagenet_all.txt"),
    moves={
        "imagenet/val": _vlm("test_imagenet_all.txt"),
        "imagenet/train": _vlm("train_imagenet.txt"),
        "iNaturalist/images": _vlm("test_inaturalist.txt"),
        "SUN/images": _vlm("test_sun.txt"),
        "Places/images": _vlm("test_places.txt"),
        "dtd/images": _vlm("test_dtd.txt"),
    },
)
IMAGENET_LAYOUTS = (MCM_LAYOUT, OPENOOD_VLM_LAYOUT)


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
    layouts = IMAGENET_LAYOUTS
    classnames_fn = staticmethod(imagenet1k_classnames)

    def class_folders(self, root: Path, spec: SetSpec) -> list[str] | None:
        # label = index of the WNID in the full sorted list, even when only some folders exist
        return imagenet1k_wnids() if spec.role in ("id", "train", "val") else None


def _imagenet100() -> tuple[list[str], list[str]]:
    return wnid_table("imagenet100_classes.tsv")


@PROTOCOLS.register("imagenet100-mos4")
class ImageNet100MOS4(FolderProtocol):
    """ImageNet-100 (MCM's 100-class subset of ImageNet-1k val) vs the MOS four."""

    name = "imagenet100-mos4"
    version = "1"
    description = "ImageNet-100 (MCM's subset, 5k val images) vs iNaturalist/SUN/Places/Textures"
    sets = (
        SetSpec("ImageNet-100", "id", "imagenet/val", 5_000, IMAGENET_SOURCE,
                classes=tuple(_imagenet100()[0]), only_listed=True),
        *MOS4_OOD,
        SetSpec("ImageNet-100-train", "train", "imagenet/train", None, IMAGENET_TRAIN_SOURCE,
                optional=True, classes=tuple(_imagenet100()[0]), only_listed=True),
    )
    layouts = IMAGENET_LAYOUTS
    classnames_fn = staticmethod(lambda: _imagenet100()[1])
    notes = ("Class names are MCM's (Keras-style imagenet_class_index.json names) in sorted-WNID "
             "label order; MCM's own code lists them in class_list.txt order, which changes ID "
             "accuracy but not MCM's score.")


# ---------------------------------------------------------------------------- covariate shift

IMAGENET_V2 = SetSpec(
    "ImageNet-V2", "shifted-id", "imagenetv2-matched-frequency-format-val", 10_000,
    "ImageNetV2 matched-frequency from https://github.com/modestyachts/ImageNetV2 (the "
    "imagenetv2-matched-frequency.tar.gz release on Hugging Face: vaishaal/ImageNetV2); extract in "
    "the data root (class folders 0..999)",
    classes=tuple(str(i) for i in range(1000)))
IMAGENET_SKETCH = SetSpec(
    "ImageNet-Sketch", "shifted-id", "sketch", 50_889,
    "ImageNet-Sketch from https://github.com/HaohanWang/ImageNet-Sketch (ImageNet-Sketch.zip); "
    "extract so that sketch/<wnid>/*.JPEG exists in the data root",
    classes=None)
IMAGENET_A = SetSpec(
    "ImageNet-A", "shifted-id", "imagenet-a", 7_500,
    "ImageNet-A from https://github.com/hendrycks/natural-adv-examples "
    "(https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar); extract in the data root")
IMAGENET_R = SetSpec(
    "ImageNet-R", "shifted-id", "imagenet-r", 30_000,
    "ImageNet-R from https://github.com/hendrycks/imagenet-r "
    "(https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar); extract in the data root")
SHIFTED = {"v2": IMAGENET_V2, "sketch": IMAGENET_SKETCH, "a": IMAGENET_A, "r": IMAGENET_R}


class CovariateShift(FolderProtocol):
    """ImageNet variants count as ID (never OOD): ID accuracy and OOD detection vs the MOS four."""

    layouts = IMAGENET_LAYOUTS
    classnames_fn = staticmethod(imagenet1k_classnames)

    def class_folders(self, root: Path, spec: SetSpec) -> list[str] | None:
        return imagenet1k_wnids() if spec.role in ("id", "shifted-id", "train", "val") else None


@PROTOCOLS.register("covariate-shift")
class CovariateShiftAll(CovariateShift):
    """ImageNet-1k val as ID with ImageNet-V2 / -Sketch / -A / -R as shifted ID, vs the MOS four."""

    name = "covariate-shift"
    version = "1"
    description = ("ImageNet-1k val + ImageNet-V2/-Sketch/-A/-R as shifted ID (1000 names) vs "
                   "the MOS four; per-variant accuracy and FPR95/AUROC")
    sets = (SetSpec("ImageNet-1k", "id", "imagenet/val", 50_000, IMAGENET_SOURCE),
            *SHIFTED.values(), *MOS4_OOD)


def _variant_protocol(key: str, spec: SetSpec, n_classes: int) -> type[FolderProtocol]:
    """``covariate-shift-<key>`` (all 1000 names) or ``-<key>-200`` (the 200 names of A / R)."""
    as_id = replace(spec, role="id")
    if n_classes == 200:
        wnids = imagenet_ar_wnids(key)
        as_id = replace(as_id, classes=tuple(wnids))
        names_fn = staticmethod(lambda: imagenet_names_of(wnids))
        suffix, labels = "-200", "the 200 names of its classes"
    else:
        names_fn = staticmethod(imagenet1k_classnames)
        suffix, labels = "", "all 1000 ImageNet names (KR-NFT)"

    class Variant(CovariateShift):
        name = f"covariate-shift-{key}{suffix}"
        version = "1"
        description = f"{spec.name} as ID ({labels}) vs the MOS four"
        sets = (as_id, *MOS4_OOD)
        classnames_fn = names_fn

    Variant.__name__ = Variant.__qualname__ = f"CovariateShift_{key}{suffix.replace('-', '_')}"
    Variant.__doc__ = Variant.description
    return PROTOCOLS.register(Variant.name)(Variant)


COVARIATE_VARIANTS = {
    **{f"covariate-shift-{k}": _variant_protocol(k, s, 1000) for k, s in SHIFTED.items()},
    **{f"covariate-shift-{k}-200": _variant_protocol(k, SHIFTED[k], 200) for k in ("a", "r")},
}
globals().update({c.__name__: c for c in COVARIATE_VARIANTS.values()})  # lazy targets


# ---------------------------------------------------------------------------- hard OOD

def _in10() -> tuple[list[str], list[str]]:
    return wnid_table("imagenet10_classes.tsv")


def _in20() -> tuple[list[str], list[str]]:
    return wnid_table("imagenet20_classes.tsv")


@PROTOCOLS.register("hard-ood-imagenet10")
class HardOODImageNet10(FolderProtocol):
    """Hard OOD (MCM): ImageNet-10 val as ID vs ImageNet-20 val as OOD, MCM's class names."""

    name = "hard-ood-imagenet10"
    version = "1"
    description = "hard OOD: ImageNet-10 (ID, MCM's names) vs ImageNet-20 (OOD), val images"
    sets = (
        SetSpec("ImageNet-10", "id", "imagenet/val", 500, IMAGENET_SOURCE,
                classes=tuple(_in10()[0]), only_listed=True),
        SetSpec("ImageNet-20", "ood", "imagenet/val", 1_000, IMAGENET_SOURCE, "near",
                classes=tuple(_in20()[0]), only_listed=True),
    )
    layouts = IMAGENET_LAYOUTS
    classnames_fn = staticmethod(lambda: _in10()[1])


@PROTOCOLS.register("hard-ood-imagenet20")
class HardOODImageNet20(FolderProtocol):
    """Hard OOD (MCM): ImageNet-20 val as ID vs ImageNet-10 as OOD (train images, as MCM reads)."""

    name = "hard-ood-imagenet20"
    version = "1"
    description = "hard OOD: ImageNet-20 (ID, MCM's names) vs ImageNet-10 (OOD, MCM's train images)"
    sets = (
        SetSpec("ImageNet-20", "id", "imagenet/val", 1_000, IMAGENET_SOURCE,
                classes=tuple(_in20()[0]), only_listed=True),
        SetSpec("ImageNet-10", "ood", "imagenet/train", 13_000, IMAGENET_TRAIN_SOURCE, "near",
                classes=tuple(_in10()[0]), only_listed=True),
    )
    layouts = IMAGENET_LAYOUTS
    classnames_fn = staticmethod(lambda: _in20()[1])
    notes = "MCM reads ImageNet-10 as OOD from its train split (ImageNet10/train); so does this."

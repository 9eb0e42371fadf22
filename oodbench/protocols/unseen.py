"""Unseen-ID generalisation (KR-NFT): train on ImageNet-1k few-shot, test with a new ID label set.

A detector trains (or mines) on ImageNet-1k (``train`` = ImageNet-1k train, ``train_classnames`` =
the 1000 ImageNet names), then is tested with another label set swapped in, without retraining:

- ``unseen-id-cifar10`` / ``-cifar100``: CIFAR test images as ID vs OpenOOD's near (CIFAR-100 or
  CIFAR-10, TinyImageNet) and far (MNIST, SVHN, Textures, Places365) sets. KR-NFT reports far only.
- ``unseen-id-{cub,cars,food,pet}``: fine-grained half-class splits (MCM / KR-NFT): the first half
  of the classes is ID, the second half OOD, both from the dataset's test split.
- ``unseen-id-imagenet-new``: the CoCoOp base-to-new split: train on ImageNet classes 0-499 (base),
  test on the val images of classes 500-999 (new) vs the MOS four.
"""

from __future__ import annotations

from oodbench.data.classnames import imagenet1k_classnames, imagenet1k_wnids
from oodbench.protocols.classlists import half, names
from oodbench.protocols.folders import FolderProtocol, SetSpec
from oodbench.protocols.imagenet import (
    IMAGENET_LAYOUTS,
    IMAGENET_SOURCE,
    IMAGENET_TRAIN_SOURCE,
    MOS4_OOD,
)
from oodbench.protocols.openood import download_command
from oodbench.registry import PROTOCOLS

IMAGENET_TRAIN = SetSpec("ImageNet-1k-train", "train", "imagenet/train", None,
                         IMAGENET_TRAIN_SOURCE, optional=True)
OPENOOD_CLASSIC = (
    "OpenOOD v1.5: in a clone of https://github.com/Jingkang50/OpenOOD run `{command}`, which "
    "fetches benchmark_imglist/{which}/ and the images under images_classic/"
)


class UnseenID(FolderProtocol):
    """Base: few-shot training on ImageNet-1k with its 1000 names; a new test label set."""

    train_classnames_fn = staticmethod(imagenet1k_classnames)

    def class_folders(self, root, spec):
        return imagenet1k_wnids() if spec.role == "train" else None


def _cifar_sets(which: str, near: tuple[str, str]) -> tuple[SetSpec, ...]:
    src = OPENOOD_CLASSIC.format(
        which=which, command=download_command(which.replace("cifar", "cifar-")))

    def lst(name, role, file, n, group=""):
        return SetSpec(name, role, "images_classic", n, src, group,
                       imglist=f"benchmark_imglist/{which}/{file}")

    return (
        lst(which.upper().replace("CIFAR", "CIFAR-"), "id", f"test_{which}.txt", 9_000),
        lst(near[0], "ood", f"test_{near[1]}.txt", None, "near"),
        lst("TinyImageNet", "ood", "test_tin.txt", None, "near"),
        lst("MNIST", "ood", "test_mnist.txt", None, "far"),
        lst("SVHN", "ood", "test_svhn.txt", None, "far"),
        lst("Textures", "ood", "test_texture.txt", None, "far"),
        lst("Places365", "ood", "test_places365.txt", None, "far"),
        IMAGENET_TRAIN,
    )


@PROTOCOLS.register("unseen-id-cifar10")
class UnseenCIFAR10(UnseenID):
    """Unseen ID: CIFAR-10 test as ID (after ImageNet-1k training) vs OpenOOD near/far sets."""

    name = "unseen-id-cifar10"
    version = "1"
    description = "unseen ID (KR-NFT): train on ImageNet-1k, test CIFAR-10 vs OpenOOD near/far"
    sets = _cifar_sets("cifar10", ("CIFAR-100", "cifar100"))
    classnames_fn = staticmethod(lambda: names("cifar10_classes.txt"))
    notes = ("KR-NFT evaluates the far sets only and used a 10k ID list (test_cifar10_full.txt, "
             "not released); OpenOOD v1.5's test list has 9k. Compare the far column.")


@PROTOCOLS.register("unseen-id-cifar100")
class UnseenCIFAR100(UnseenID):
    """Unseen ID: CIFAR-100 test as ID (after ImageNet-1k training) vs OpenOOD near/far sets."""

    name = "unseen-id-cifar100"
    version = "1"
    description = "unseen ID (KR-NFT): train on ImageNet-1k, test CIFAR-100 vs OpenOOD near/far"
    sets = _cifar_sets("cifar100", ("CIFAR-10", "cifar10"))
    classnames_fn = staticmethod(lambda: names("cifar100_classes.txt"))
    notes = UnseenCIFAR10.notes


FINE_GRAINED = {
    # key: (set name, class file, image-list source text)
    "cub": ("CUB-200", "cub200_classes.txt",
            "CUB-200-2011 from https://www.vision.caltech.edu/datasets/cub_200_2011/ (extract as "
            "CUB_200_2011/); the test list finegrained/cub/test.txt is made from its "
            "train_test_split.txt as docs/data.md shows"),
    "cars": ("Stanford-Cars", "cars196_classes.txt",
             "Stanford Cars (https://ai.stanford.edu/~jkrause/cars/car_dataset.html; mirrors on "
             "Kaggle / torchvision); write finegrained/cars/test.txt from its test annotations as "
             "docs/data.md shows"),
    "food": ("Food-101", "food101_classes.txt",
             "Food-101 from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ "
             "(extract as food-101/); finegrained/food/test.txt is made from meta/test.txt as "
             "docs/data.md shows"),
    "pet": ("Oxford-Pet", "pet37_classes.txt",
            "Oxford-IIIT Pet from https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz and "
            "annotations.tar.gz); finegrained/pet/test.txt is made from annotations/test.txt as "
            "docs/data.md shows"),
}


def _fine_grained_protocol(key: str) -> type[FolderProtocol]:
    set_name, class_file, source = FINE_GRAINED[key]
    classes = names(class_file)
    k = half(classes)
    lst = f"finegrained/{key}/test.txt"

    class FineGrained(UnseenID):
        name = f"unseen-id-{key}"
        version = "1"
        description = (f"unseen ID (KR-NFT / MCM fine-grained): {set_name} first {k} classes as "
                       f"ID, the other {len(classes) - k} as OOD")
        sets = (
            SetSpec(f"{set_name}-ID", "id", "", None, source, imglist=lst, label_range=(0, k)),
            SetSpec(f"{set_name}-OOD", "ood", "", None, source, "near", imglist=lst,
                    label_range=(k, len(classes))),
            IMAGENET_TRAIN,
        )
        classnames_fn = staticmethod(lambda: classes[:k])

    FineGrained.__name__ = FineGrained.__qualname__ = f"UnseenFineGrained_{key}"
    FineGrained.__doc__ = FineGrained.description
    return PROTOCOLS.register(FineGrained.name)(FineGrained)


FINE_GRAINED_PROTOCOLS = {k: _fine_grained_protocol(k) for k in FINE_GRAINED}
globals().update({c.__name__: c for c in FINE_GRAINED_PROTOCOLS.values()})  # lazy targets


@PROTOCOLS.register("unseen-id-imagenet-new")
class UnseenImageNetNew(UnseenID):
    """ImageNet base-to-new: train on classes 0-499, test the val images of classes 500-999."""

    name = "unseen-id-imagenet-new"
    version = "1"
    description = ("unseen ID: ImageNet base-to-new, train on classes 0-499, test classes "
                   "500-999 vs the MOS four")
    sets = (
        SetSpec("ImageNet-new", "id", "imagenet/val", 25_000, IMAGENET_SOURCE,
                classes=tuple(imagenet1k_wnids()[500:]), only_listed=True),
        *MOS4_OOD,
        SetSpec("ImageNet-base-train", "train", "imagenet/train", None, IMAGENET_TRAIN_SOURCE,
                optional=True, classes=tuple(imagenet1k_wnids()[:500]), only_listed=True),
    )
    layouts = IMAGENET_LAYOUTS
    classnames_fn = staticmethod(lambda: imagenet1k_classnames()[500:])
    train_classnames_fn = staticmethod(lambda: imagenet1k_classnames()[:500])

    def class_folders(self, root, spec):
        return None

"""Protocols: ID set, OOD groups, val split, class names, version; registered lazily by name.

:func:`protocol_class` resolves what ``--protocol`` names: a registered protocol (built in, or a
plugin's through the ``oodbench.protocols`` entry-point group) or a YAML protocol file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oodbench.registry import PROTOCOLS

if TYPE_CHECKING:
    from oodbench.protocols.base import ProtocolDef


def protocol_class(name: str) -> type[ProtocolDef]:
    """The protocol class ``name`` denotes: a ``.yaml``/``.yml`` file, else a registered name
    (unknown names raise with suggestions)."""
    from oodbench.protocols.yaml_protocol import is_protocol_file, protocol_file

    if is_protocol_file(name):
        return protocol_file(name)
    return PROTOCOLS.get(name)


def check_protocol_name(name: str) -> None:
    """Fail early on an unknown protocol name or a bad protocol file, importing nothing heavy."""
    from oodbench.protocols.yaml_protocol import is_protocol_file, protocol_file

    if is_protocol_file(name):
        protocol_file(name)
    else:
        PROTOCOLS.describe(name)

_BUILTIN = {
    "imagenet1k-mos4": (
        "oodbench.protocols.imagenet:ImageNet1kMOS4",
        "ImageNet-1k val (50k) vs iNaturalist / SUN / Places / Textures (MOS four)",
    ),
    "toy": (
        "oodbench.protocols.toy:Toy",
        "toy world: ID shapes vs near (held-out shapes) and far (no object) OOD; CPU minutes",
    ),
    "toy-unseen": (
        "oodbench.protocols.toy:ToyUnseen",
        "toy world: train on one ID label set, test with another swapped in",
    ),
    "toy-shift": (
        "oodbench.protocols.toy:ToyShift",
        "toy world: ID shapes in shifted styles (sketch, blur, noise, invert) count as ID",
    ),
    "toy-val": (
        "oodbench.protocols.toy:ToyVal",
        "toy world validation: ID val images vs OOD kinds of no test set (presets)",
    ),
    **{
        name: (f"oodbench.protocols.{target}", text)
        for name, (target, text) in {
            "imagenet100-mos4": (
                "imagenet:ImageNet100MOS4",
                "ImageNet-100 (MCM's subset) vs iNaturalist / SUN / Places / Textures",
            ),
            "openood-v1.5-imagenet1k": (
                "openood:OpenOODImageNet1k",
                "OpenOOD v1.5 ImageNet-1k: near SSB-hard/NINCO, far "
                "iNaturalist/Textures/OpenImage-O",
            ),
            "openood-v1.5-imagenet1k-fs": (
                "openood:OpenOODImageNet1kFS",
                "OpenOOD v1.5 full-spectrum: ImageNet-V2/-C/-R count as ID",
            ),
            "covariate-shift": (
                "imagenet:CovariateShiftAll",
                "ImageNet-1k + V2/Sketch/A/R as shifted ID vs the MOS four",
            ),
            **{
                f"covariate-shift-{k}": (
                    f"imagenet:CovariateShift_{k}",
                    f"ImageNet-{k.upper() if len(k) == 1 else k.capitalize()} as "
                    "ID (1000 names) vs the MOS four",
                )
                for k in ("v2", "sketch", "a", "r")
            },
            **{
                f"covariate-shift-{k}-200": (
                    f"imagenet:CovariateShift_{k}_200",
                    f"ImageNet-{k.upper()} as ID (its 200 names) vs the MOS four",
                )
                for k in ("a", "r")
            },
            "hard-ood-imagenet10": (
                "imagenet:HardOODImageNet10",
                "hard OOD: ImageNet-10 (ID) vs ImageNet-20 (OOD), MCM's lists",
            ),
            "hard-ood-imagenet20": (
                "imagenet:HardOODImageNet20",
                "hard OOD: ImageNet-20 (ID) vs ImageNet-10 (OOD), MCM's lists",
            ),
            "unseen-id-cifar10": (
                "unseen:UnseenCIFAR10",
                "unseen ID: train on ImageNet-1k, test CIFAR-10 vs near/far OOD",
            ),
            "unseen-id-cifar100": (
                "unseen:UnseenCIFAR100",
                "unseen ID: train on ImageNet-1k, test CIFAR-100 vs near/far OOD",
            ),
            **{
                f"unseen-id-{k}": (
                    f"unseen:UnseenFineGrained_{k}",
                    f"unseen ID: {d}, first half of the classes ID, second half OOD",
                )
                for k, d in (
                    ("cub", "CUB-200"),
                    ("cars", "Stanford Cars"),
                    ("food", "Food-101"),
                    ("pet", "Oxford-Pet"),
                )
            },
            "unseen-id-imagenet-new": (
                "unseen:UnseenImageNetNew",
                "unseen ID: ImageNet base-to-new, train 0-499, test 500-999",
            ),
        }.items()
    },
}

for _name, (_target, _description) in _BUILTIN.items():
    PROTOCOLS.register_lazy(_name, _target, _description)

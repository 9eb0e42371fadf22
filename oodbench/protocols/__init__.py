"""Protocols: ID set, OOD groups, val split, class names, version. Registered lazily by name here."""

from oodbench.registry import PROTOCOLS

_BUILTIN = {
    "imagenet1k-mos4": ("oodbench.protocols.imagenet:ImageNet1kMOS4",
                        "ImageNet-1k val (50k) vs iNaturalist / SUN / Places / Textures (MOS four)"),
    "toy": ("oodbench.protocols.toy:Toy",
            "toy world: ID shapes vs near (held-out shapes) and far (no object) OOD; CPU minutes"),
    "toy-unseen": ("oodbench.protocols.toy:ToyUnseen",
                   "toy world: train on one ID label set, test with another swapped in"),
    "toy-shift": ("oodbench.protocols.toy:ToyShift",
                  "toy world: ID shapes in shifted styles (sketch, blur, noise, invert) count as ID"),
}

for _name, (_target, _description) in _BUILTIN.items():
    PROTOCOLS.register_lazy(_name, _target, _description)

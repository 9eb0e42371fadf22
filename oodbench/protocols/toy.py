"""The toy protocols: miniatures of the real ones, generated on first use (no data root needed).

``toy`` stands in for ImageNet-1k vs near/far OOD, ``toy-unseen`` for unseen-ID generalisation
(train on one label set, test with another), ``toy-shift`` for covariate shift (shifted styles of
the ID classes count as ID). ``toy-val`` is the validation protocol that toy presets are chosen
on (``benchmarks/toy/select_presets.py``): the ``id_val`` images against OOD kinds no test set
holds. The images are rendered once into ``<cache>/toy-world`` as PNG files
and then read through the same manifest and loader path as real datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from oodbench.data.manifest import Manifest
from oodbench.protocols.base import ImageSet, Protocol, ProtocolDef
from oodbench.registry import PROTOCOLS


def world_root(cache_dir: Path) -> Path:
    """Where the toy images live (inside the cache, since they are derived data)."""
    return Path(cache_dir) / "toy-world"


class ToyProtocol(ProtocolDef):
    """Base of the toy protocols: one entry of ``oodbench.toy.world.PROTOCOLS`` each."""

    needs_data_root = False
    layout: ClassVar[str] = ""

    def build(self, data_root: Path | None, cache_dir: Path) -> Protocol:
        from oodbench.toy import world

        root = world_root(cache_dir)
        listing = world.materialize(root)
        layout = world.PROTOCOLS[self.layout]

        def image_set(split: str, name: str | None = None, group: str = "") -> ImageSet:
            rows = listing[split]
            m = Manifest(
                name or split,
                root,
                tuple(p for p, _ in rows),
                tuple(int(y) for _, y in rows),
                source=f"toy world v{world.WORLD_VERSION}",
            )
            return ImageSet(name or split, m, group)

        classes = list(layout["classes"])
        # every toy protocol trains on the toy ID classes; toy-unseen then swaps the label set
        train, val = "id_train", "id_val"
        train_classes = list(world.ID_CLASSES)
        return Protocol(
            name=self.name,
            version=f"{self.version}.w{world.WORLD_VERSION}",
            description=self.description,
            classnames=classes,
            id_test=image_set(layout["id"], "ID"),
            ood=[image_set(s, _ood_name(s), _ood_name(s)) for s in layout["ood"]],
            val=image_set(val),
            train=image_set(train),
            train_classnames=train_classes,
            extra_id=[
                image_set(s, s.replace("shift_", "shift-")) for s in layout.get("shifted", ())
            ],
        )


def _ood_name(split: str) -> str:
    """The OOD group name of a split: near or far."""
    return {"unseen_near": "near", "val_near": "near", "val_far": "far"}.get(split, split)


@PROTOCOLS.register("toy")
class Toy(ToyProtocol):
    """Toy world: ID shapes vs near (held-out shapes) and far (no object) OOD; CPU minutes."""

    name = "toy"
    version = "1"
    description = "toy world: ID shapes vs near (held-out shapes) and far (no object) OOD"
    layout = "toy"


@PROTOCOLS.register("toy-unseen")
class ToyUnseen(ToyProtocol):
    """Toy unseen-ID generalisation: train on the toy ID shapes, test with other shapes as ID."""

    name = "toy-unseen"
    version = "1"
    description = "toy world: train on one ID label set, test with another swapped in"
    layout = "toy-unseen"


@PROTOCOLS.register("toy-shift")
class ToyShift(ToyProtocol):
    """Toy covariate shift: ID shapes drawn as sketch / blur / noise / inverted count as ID."""

    name = "toy-shift"
    version = "1"
    description = "toy world: ID shapes in shifted styles (sketch, blur, noise, invert) count as ID"
    layout = "toy-shift"


@PROTOCOLS.register("toy-val")
class ToyVal(ToyProtocol):
    """Toy validation: the ID val images vs near / far OOD kinds that no toy test set holds."""

    name = "toy-val"
    version = "1"
    description = "toy world validation: ID val images vs OOD kinds of no test set (presets)"
    layout = "toy-val"

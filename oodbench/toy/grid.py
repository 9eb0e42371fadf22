"""Labelled PNG grid of toy-world samples: python -m oodbench.toy.grid docs/toy_samples.png"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from oodbench.toy import generator as gen
from oodbench.toy import world

LABEL_W = 150
PAD = 2


def sample_rows(seed: int = 0, per_row: int = 10) -> list[tuple[str, list[np.ndarray]]]:
    """(label, images) rows: ID, near OOD, far OOD, unseen ID, unseen near, validation OOD, each
    shift style."""
    rng = np.random.default_rng(seed)

    def objects(classes: tuple[str, ...], style: str | None = None) -> list[np.ndarray]:
        """One image per class, cycling through the classes."""
        return [gen.render_object(classes[i % len(classes)], rng, style)[0] for i in range(per_row)]

    kinds = world.FAR_OOD_KINDS
    val_ood = [*world.VAL_NEAR_OOD_CLASSES, *world.VAL_FAR_OOD_KINDS]

    def val(i: int) -> np.ndarray:
        """Validation OOD image i: a look-alike shape or a texture of no test set."""
        k = val_ood[i % len(val_ood)]
        return gen.render_no_object(k, rng)[0] if k in gen.NO_OBJECT_KINDS else gen.render_object(
            k, rng)[0]

    rows = [
        ("ID", objects(world.ID_CLASSES)),
        ("near OOD", objects(world.NEAR_OOD_CLASSES)),
        ("far OOD", [gen.render_no_object(kinds[i % len(kinds)], rng)[0] for i in range(per_row)]),
        ("unseen ID", objects(world.UNSEEN_ID_CLASSES)),
        ("unseen near OOD", objects(world.UNSEEN_NEAR_OOD_CLASSES)),
        ("val OOD", [val(i) for i in range(per_row)]),
    ]
    rows += [(f"shift: {s}", objects(world.ID_CLASSES, s)) for s in gen.SHIFT_STYLES]
    return rows


def make_grid(seed: int = 0, per_row: int = 10, scale: int = 1) -> Image.Image:
    """Grid image with one labelled row per sample group."""
    rows = sample_rows(seed, per_row)
    cell = gen.SIZE * scale + PAD
    canvas = Image.new("RGB", (LABEL_W + per_row * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        draw.text((4, r * cell + cell // 2 - 6), label, fill="black")
        for c, img in enumerate(images):
            tile = Image.fromarray(img).resize((gen.SIZE * scale,) * 2, Image.NEAREST)
            canvas.paste(tile, (LABEL_W + c * cell, r * cell))
    return canvas


def main(argv: list[str] | None = None) -> None:
    """Write the sample grid to the path given on the command line."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/toy_samples.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    make_grid().save(out)
    print(out)


if __name__ == "__main__":
    main()

"""Deterministic procedural generator of the toy world: object and no-object images, captions.

Every function takes an explicit ``numpy.random.Generator``; the same seed gives the same bytes.
Captions always use the article "a" (toy grammar: "a photo of a arrow"), matching the harness prompt
template "a photo of a {}".
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 64
_SS = 2  # supersampling factor for anti-aliased masks

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (50, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {**COLOURS, "grey": (128, 128, 128)}
SIZES = ("small", "large")
FILLS = ("solid", "striped", "dotted", "outlined")
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
SHIFT_STYLES = ("sketch", "blur", "noise", "invert")
NO_OBJECT_KINDS = (
    "stripes",
    "checkers",
    "dots",
    "waves",
    "noise",
    "clutter",
    "blank",
    "landscape",
    "city",
    "zigzag",
    "rings",
)
# Small textured patches that may sit beside the labelled object (an ID image's "second object"
# of a far-OOD-like kind, as ImageNet photos carry background things), with their caption words.
PATCH_KINDS: dict[str, str] = {
    "stripes": "striped",
    "checkers": "checkered",
    "dots": "dotted",
    "waves": "wavy",
}
CLUTTER_P = 0.4  # share of object images with a few small fragments strewn on the background
PATCH_P = 0.35  # share of object images with a small textured patch in a corner
NOISE_SIGMA = 18.0  # the "noise" shift style (45 in v2: 39% accuracy, FPR95 97%)
# Opacity of the "sketch" and "invert" styles over the photo; at 1 (a bare line drawing, a full
# negative) MCM's avg FPR95 with them as ID was 58.8 and 51.8, above issue 18's band of 15-50.
SKETCH_OPACITY = 0.5
INVERT_OPACITY = 0.7
# Noun phrases per no-object kind; the first is canonical, the others are pretraining synonyms.
NO_OBJECT_PHRASES: dict[str, tuple[str, ...]] = {
    "stripes": ("striped texture", "pattern of stripes", "lined texture"),
    "checkers": ("checkered texture", "checkerboard pattern", "grid of tiles"),
    "dots": ("dotted texture", "polka dot pattern", "spotted texture"),
    "waves": ("wavy texture", "pattern of waves", "rippled texture"),
    "noise": ("random noise", "noisy static", "grainy texture"),
    "clutter": ("cluttered scene of fragments", "pile of scattered fragments", "messy debris"),
    "blank": ("blank background", "empty scene", "plain wall"),
    "landscape": ("landscape", "hilly countryside", "view of hills"),
    "city": ("city skyline", "row of buildings", "town scene"),
    "zigzag": ("zigzag texture", "chevron pattern", "zigzag pattern"),
    "rings": ("ringed texture", "target pattern", "pattern of rings"),
}
# Words a caption may negate (", no stripes"): what the image does not show.
NEGATABLE_FILLS: dict[str, str] = {"striped": "stripes", "dotted": "dots", "outlined": "outline"}
SCENE_KINDS = ("landscape", "city")
COLOURLESS_KINDS = ("noise", "clutter", *SCENE_KINDS)  # captions name no colours for these
SHIFT_PREFIX = {
    "sketch": "a sketch of a",
    "blur": "a blurry photo of a",
    "noise": "a noisy photo of a",
    "invert": "an inverted photo of a",
}

Poly = list[tuple[float, float]]


def _circle(cx: float, cy: float, rx: float, ry: float | None = None, n: int = 40) -> Poly:
    """Polygon approximating an ellipse, so that every primitive can be rotated."""
    ry = rx if ry is None else ry
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t), strict=True))


def _regular(n: int, r: float = 1.0, phase: float = -np.pi / 2) -> Poly:
    """Regular n-gon of circumradius r with a vertex at the top."""
    t = phase + 2 * np.pi * np.arange(n) / n
    return list(zip(r * np.cos(t), r * np.sin(t), strict=True))


def _star(n: int, outer: float, inner: float) -> Poly:
    """Star polygon with n points."""
    t = -np.pi / 2 + np.pi * np.arange(2 * n) / n
    r = np.where(np.arange(2 * n) % 2 == 0, outer, inner)
    return list(zip(r * np.cos(t), r * np.sin(t), strict=True))


def _rect(x0: float, y0: float, x1: float, y1: float) -> Poly:
    """Axis-aligned rectangle polygon."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _heart() -> Poly:
    """Classic parametric heart curve scaled to the unit box."""
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return list(zip(x / 17, (y + 3) / 17, strict=True))


def _half_disc(rx: float, ry: float, cy: float) -> Poly:
    """Upper half of an ellipse centred at (0, cy)."""
    t = np.linspace(np.pi, 2 * np.pi, 24)
    return list(zip(rx * np.cos(t), cy + ry * np.sin(t), strict=True))


def _leaf() -> Poly:
    """Pointed leaf (vesica) lying along the diagonal."""
    t = np.linspace(-1, 1, 24)
    top = [(x, -0.45 * (1 - x * x)) for x in t]
    bot = [(x, 0.45 * (1 - x * x)) for x in t[::-1]]
    rot = [((x - y) * 0.707, (x + y) * 0.707) for x, y in top + bot]
    return rot


# Each shape: list of (polygon, add?) in unit coordinates (y down, roughly inside [-1, 1]^2).
_GEOMETRY: dict[str, list[tuple[Poly, bool]]] = {
    # ID classes
    "circle": [(_circle(0, 0, 0.95), True)],
    "square": [(_rect(-0.8, -0.8, 0.8, 0.8), True)],
    "triangle": [([(0, -1), (0.95, 0.75), (-0.95, 0.75)], True)],
    "star": [(_star(5, 1.0, 0.42), True)],
    "heart": [(_heart(), True)],
    "cross": [(_rect(-0.28, -0.95, 0.28, 0.95), True), (_rect(-0.95, -0.28, 0.95, 0.28), True)],
    "hexagon": [(_regular(6, 0.95, 0.0), True)],
    "arrow": [(_rect(-1, -0.22, 0.15, 0.22), True), ([(0.1, -0.7), (1, 0), (0.1, 0.7)], True)],
    "moon": [(_circle(0, 0, 0.95), True), (_circle(0.45, -0.2, 0.75), False)],
    "house": [(_rect(-0.7, -0.05, 0.7, 0.9), True), ([(-0.95, 0.0), (0, -0.9), (0.95, 0.0)], True)],
    # near-OOD classes (each visually close to an ID class)
    "ellipse": [(_circle(0, 0, 1.0, 0.55), True)],
    "rectangle": [(_rect(-1.0, -0.5, 1.0, 0.5), True)],
    "pentagon": [(_regular(5, 0.95), True)],
    "sparkle": [(_star(4, 1.0, 0.3), True)],
    "diamond": [([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], True)],
    # unseen-ID classes
    "tree": [([(0, -1), (0.75, 0.35), (-0.75, 0.35)], True), (_rect(-0.15, 0.3, 0.15, 1.0), True)],
    "fish": [(_circle(-0.2, 0, 0.65, 0.42), True), ([(0.3, 0), (1, -0.5), (1, 0.5)], True)],
    "key": [
        (_circle(-0.62, 0, 0.36), True),
        (_circle(-0.62, 0, 0.15), False),
        (_rect(-0.3, -0.1, 1.0, 0.1), True),
        (_rect(0.6, 0.05, 0.72, 0.38), True),
        (_rect(0.84, 0.05, 0.96, 0.3), True),
    ],
    "lightning": [
        (
            [
                (0.15, -1),
                (-0.55, 0.15),
                (-0.05, 0.15),
                (-0.3, 1),
                (0.55, -0.25),
                (0.05, -0.25),
                (0.45, -1),
            ],
            True,
        )
    ],
    "cloud": [
        (_circle(-0.5, 0.15, 0.4), True),
        (_circle(0.05, -0.15, 0.5), True),
        (_circle(0.55, 0.15, 0.38), True),
        (_rect(-0.5, 0.1, 0.55, 0.53), True),
    ],
    "mushroom": [(_half_disc(1.0, 0.85, 0.05), True), (_rect(-0.25, 0.0, 0.25, 0.9), True)],
    "bell": [
        (_circle(0, -0.35, 0.5), True),
        ([(-0.5, -0.35), (0.5, -0.35), (0.85, 0.6), (-0.85, 0.6)], True),
        (_circle(0, 0.75, 0.18), True),
    ],
    # unseen near-OOD classes (each visually close to an unseen-ID class)
    "flower": [
        (_circle(0.55 * math.cos(a), 0.55 * math.sin(a), 0.36), True)
        for a in np.linspace(0, 2 * np.pi, 5, endpoint=False)
    ]
    + [(_circle(0, 0, 0.3), True)],
    "leaf": [(_leaf(), True), (_rect(0.55, 0.62, 0.9, 0.7), True)],
    "bone": [
        (_rect(-0.7, -0.15, 0.7, 0.15), True),
        (_circle(-0.75, -0.2, 0.24), True),
        (_circle(-0.75, 0.2, 0.24), True),
        (_circle(0.75, -0.2, 0.24), True),
        (_circle(0.75, 0.2, 0.24), True),
    ],
    "hourglass": [([(-0.7, -1), (0.7, -1), (0, 0)], True), ([(0, 0), (0.7, 1), (-0.7, 1)], True)],
    "drop": [(_circle(0, 0.35, 0.6), True), ([(0, -1), (0.55, 0.12), (-0.55, 0.12)], True)],
    # closer look-alikes of unseen-ID classes (pine~tree, umbrella~mushroom)
    "pine": [
        ([(0, -1), (0.5, -0.35), (-0.5, -0.35)], True),
        ([(0, -0.6), (0.7, 0.4), (-0.7, 0.4)], True),
        (_rect(-0.12, 0.35, 0.12, 1.0), True),
    ],
    "umbrella": [(_half_disc(1.0, 0.7, -0.1), True), (_rect(-0.07, -0.1, 0.07, 0.9), True),
                 (_rect(-0.07, 0.75, 0.3, 0.9), True)],
    # validation near OOD (look-alikes of ID classes that no test set holds)
    "octagon": [(_regular(8, 0.95, np.pi / 8), True)],
    "trapezoid": [([(-0.5, -0.7), (0.5, -0.7), (0.95, 0.7), (-0.95, 0.7)], True)],
}
SHAPES: tuple[str, ...] = tuple(_GEOMETRY)


def _jitter_colour(
    rgb: tuple[int, int, int], rng: np.random.Generator, amount: int = 18
) -> np.ndarray:
    """Colour with a small random per-channel offset so classes are not single pixels values."""
    return np.clip(np.array(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def shape_mask(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased alpha mask (SIZE x SIZE float32 in [0, 1]) of a shape placed in the image."""
    s = SIZE * _SS
    img = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(img)
    ca, sa = math.cos(angle), math.sin(angle)
    for poly, add in _GEOMETRY[shape]:
        pts = [
            ((cx + r * (ca * x - sa * y)) * _SS, (cy + r * (sa * x + ca * y)) * _SS)
            for x, y in poly
        ]
        draw.polygon(pts, fill=255 if add else 0)
    a = np.asarray(img, np.float32).reshape(SIZE, _SS, SIZE, _SS).mean(axis=(1, 3))
    return a / 255.0


def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    """Grey-level erosion with a (2k+1)^2 square window."""
    p = np.pad(mask, k, constant_values=0)
    win = np.lib.stride_tricks.sliding_window_view(p, (2 * k + 1, 2 * k + 1))
    return win.min(axis=(2, 3))


def _grid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinate grids with a random sub-pixel offset."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return x + rng.uniform(0, 8), y + rng.uniform(0, 8)


def _fill_pattern(fill: str, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply a fill pattern (solid, striped, dotted, outlined) to an alpha mask."""
    if fill == "solid":
        return mask
    if fill == "outlined":
        return mask * (1.0 - _erode(mask, 2))
    x, y = _grid(rng)
    if fill == "striped":
        th = rng.uniform(0, np.pi)
        u = x * math.cos(th) + y * math.sin(th)
        period = rng.uniform(5, 7)
        return mask * ((u % period) < period * 0.5)
    period = rng.uniform(4.5, 6)
    d = np.hypot((x % period) - period / 2, (y % period) - period / 2)
    return mask * np.clip(period * 0.42 - d + 0.5, 0, 1)


def _background(name: str, gradient: bool, rng: np.random.Generator) -> np.ndarray:
    """Plain or linear-gradient background image (float32 HxWx3)."""
    c0 = _jitter_colour(BACKGROUND_COLOURS[name], rng)
    img = np.broadcast_to(c0, (SIZE, SIZE, 3)).astype(np.float32)
    if not gradient:
        return img.copy()
    lum = c0.mean()
    c1 = c0 * 0.45 if lum > 110 else c0 + (255 - c0) * 0.55
    x, y = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1)
    th = rng.uniform(0, 2 * np.pi)
    t = x * math.cos(th) + y * math.sin(th)
    t = (t - t.min()) / (t.max() - t.min())
    return img * (1 - t[..., None]) + c1 * t[..., None]


def _contrasting_background(colour: str, rng: np.random.Generator) -> str:
    """Background colour name clearly distinguishable from the object colour."""
    obj = np.array(COLOURS[colour], np.float32)
    names = [n for n, c in BACKGROUND_COLOURS.items() if np.abs(np.array(c) - obj).sum() > 150]
    return names[rng.integers(len(names))]


def _placement(size: str, rng: np.random.Generator) -> tuple[str, float, float, float]:
    """Position word, centre and radius for an object of the given size class."""
    if size == "large":
        r = rng.uniform(19, 26)
        return "center", 32 + rng.uniform(-3, 3), 32 + rng.uniform(-3, 3), r
    r = rng.uniform(11, 15)
    pos = POSITIONS[rng.integers(len(POSITIONS))]
    lo, hi = r + 1, 27.0
    cx = {"left": rng.uniform(lo, hi), "right": SIZE - rng.uniform(lo, hi)}
    if pos == "center":
        return pos, 32 + rng.uniform(-4, 4), 32 + rng.uniform(-4, 4), r
    vert, horiz = pos.split()
    cy = rng.uniform(lo, hi) if vert == "top" else SIZE - rng.uniform(lo, hi)
    return pos, cx[horiz], cy, r


def sample_object_attributes(
    shape: str, rng: np.random.Generator, clutter_p: float = CLUTTER_P, patch_p: float = PATCH_P
) -> dict:
    """Random attributes (colour, size, fill, position, background, pose, background clutter,
    a textured patch in a corner) of one object image."""
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    size = SIZES[rng.integers(2)]
    pos, cx, cy, r = _placement(size, rng)
    clutter = bool(rng.random() < clutter_p)
    patch = list(PATCH_KINDS)[rng.integers(len(PATCH_KINDS))] if rng.random() < patch_p else None
    return {
        "clutter": clutter,
        "patch": patch,
        "shape": shape,
        "colour": colour,
        "size": size,
        "fill": FILLS[rng.integers(len(FILLS))],
        "position": pos,
        "background": _contrasting_background(colour, rng),
        "gradient": bool(rng.random() < 0.35),
        "cx": cx,
        "cy": cy,
        "r": r,
        "angle": float(rng.uniform(-0.35, 0.35)),
    }


def _strew_fragments(img: np.ndarray, n: int, size: tuple[float, float],
                     rng: np.random.Generator) -> np.ndarray:
    """``img`` (float32 HxWx3) with n small random polygon or line fragments drawn on it."""
    canvas = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    cols = list(COLOURS.values())
    for _ in range(n):
        cx, cy = rng.uniform(0, SIZE, 2)
        k = int(rng.integers(3, 6))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(size[0], size[1], k)
        pts = [
            (float(cx + a * math.cos(t)), float(cy + a * math.sin(t)))
            for a, t in zip(rad, ang, strict=True)
        ]
        col = tuple(int(c) for c in _jitter_colour(cols[rng.integers(len(cols))], rng))
        if rng.random() < 0.3:
            draw.line(pts[:2], fill=col, width=int(rng.integers(1, 3)))
        else:
            draw.polygon(pts, fill=col)
    return np.asarray(canvas, np.float32)


def _add_patch(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``img`` with a small two-colour texture patch (disc or square) near a random corner."""
    half = rng.uniform(6, 9)
    cx = rng.uniform(half + 1, half + 8)
    cy = rng.uniform(half + 1, half + 8)
    if rng.random() < 0.5:
        cx = SIZE - cx
    if rng.random() < 0.5:
        cy = SIZE - cy
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    if rng.random() < 0.5:
        m = np.clip(half - np.hypot(x - cx, y - cy) + 0.5, 0, 1)
    else:
        m = np.clip(half - np.maximum(abs(x - cx), abs(y - cy)) + 0.5, 0, 1)
    c0, c1 = (_jitter_colour(COLOURS[c], rng) for c in _two_colours(rng))
    tex = _texture(kind, c0, c1, rng)
    return img * (1 - m[..., None]) + tex * m[..., None]


def draw_object(attrs: dict, rng: np.random.Generator) -> np.ndarray:
    """Render the image (HxWx3 uint8) described by object attributes: background, clutter,
    patch, then the object on top."""
    bg = _background(attrs["background"], attrs["gradient"], rng)
    if attrs.get("clutter"):
        bg = _strew_fragments(bg, int(rng.integers(3, 8)), (1.5, 4.0), rng)
    if attrs.get("patch"):
        bg = _add_patch(bg, attrs["patch"], rng)
    mask = shape_mask(attrs["shape"], attrs["cx"], attrs["cy"], attrs["r"], attrs["angle"])
    alpha = _fill_pattern(attrs["fill"], mask, rng)[..., None]
    fg = _jitter_colour(COLOURS[attrs["colour"]], rng)
    return np.clip(bg * (1 - alpha) + fg * alpha + 0.5, 0, 255).astype(np.uint8)


def object_caption(
    attrs: dict,
    keep: dict[str, bool] | None = None,
    prefix: str = "a photo of a",
    negate: str | None = None,
) -> str:
    """Caption of an object image; ``keep`` selects which optional attributes are mentioned
    (``clutter`` and ``patch`` say "with clutter" / "with a small striped patch" when present),
    ``negate`` appends what the image does not show (", no stripes")."""
    every = ("size", "colour", "fill", "position", "background", "clutter", "patch")
    k = keep if keep is not None else dict.fromkeys(every, True)
    words = [prefix]
    if k.get("size"):
        words.append(attrs["size"])
    if k.get("colour"):
        words.append(attrs["colour"])
    if k.get("fill") and attrs["fill"] != "solid":
        words.append(attrs["fill"])
    words.append(attrs["shape"])
    if k.get("position"):
        words.append("in the " + attrs["position"])
    if k.get("background"):
        grad = " gradient" if attrs["gradient"] else ""
        words.append(f"on a {attrs['background']}{grad} background")
    if k.get("clutter") and attrs.get("clutter"):
        words.append("with clutter")
    if k.get("patch") and attrs.get("patch"):
        words.append(f"with a small {PATCH_KINDS[attrs['patch']]} patch")
    text = " ".join(words)
    return f"{text}, no {negate}" if negate else text


def true_negations(attrs: dict) -> list[str]:
    """What a caption may truthfully say an object image lacks ("clutter", "patch", fills)."""
    out = [] if attrs.get("clutter") else ["clutter"]
    out += [] if attrs.get("patch") else ["patch"]
    return out + [w for f, w in NEGATABLE_FILLS.items() if attrs["fill"] != f]


def apply_style(img: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Covariate-shift style (sketch, blur, noise, invert) applied to an object image."""
    if style == "invert":  # the negative, blended over the photo (a full negative is too far)
        neg = 255 - img.astype(np.float32)
        return (INVERT_OPACITY * neg + (1 - INVERT_OPACITY) * img).astype(np.uint8)
    if style == "blur":
        return np.asarray(
            Image.fromarray(img).filter(ImageFilter.GaussianBlur(rng.uniform(1.2, 1.8)))
        )
    if style == "noise":
        noisy = img.astype(np.float32) + rng.normal(0, NOISE_SIGMA, img.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    if style == "sketch":
        g = img.astype(np.float32)
        gx = np.zeros_like(g)
        gy = np.zeros_like(g)
        gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
        gy[1:-1, :] = g[2:, :] - g[:-2, :]
        edge = np.clip((np.hypot(gx, gy).max(axis=2) - 30) * 3, 0, 255)
        paper = 245 - rng.uniform(0, 20)
        out = np.repeat(np.clip(paper - edge, 0, 255)[..., None], 3, axis=2)
        # pencil lines over a faded photo: a bare line drawing is too far (MCM avg FPR95 58.8)
        mixed = SKETCH_OPACITY * out + (1 - SKETCH_OPACITY) * img.astype(np.float32)
        return mixed.clip(0, 255).astype(np.uint8)
    raise ValueError(f"unknown style {style!r}; expected one of {SHIFT_STYLES}")


def render_object(
    shape: str, rng: np.random.Generator, style: str | None = None
) -> tuple[np.ndarray, str]:
    """Image (64x64x3 uint8) of one random object of the given shape and its full caption."""
    if shape not in _GEOMETRY:
        raise ValueError(f"unknown shape {shape!r}")
    attrs = sample_object_attributes(shape, rng)
    img = draw_object(attrs, rng)
    if style is None:
        return img, object_caption(attrs)
    return apply_style(img, style, rng), object_caption(attrs, prefix=SHIFT_PREFIX[style])


def _two_colours(rng: np.random.Generator) -> tuple[str, str]:
    """Two distinct colour names for textures."""
    i, j = rng.choice(len(COLOURS), size=2, replace=False)
    names = list(COLOURS)
    return names[i], names[j]


def _texture(kind: str, c0: np.ndarray, c1: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two-colour texture image (float32 HxWx3) of a no-object kind."""
    x, y = _grid(rng)
    th = rng.uniform(0, np.pi)
    u = x * math.cos(th) + y * math.sin(th)
    v = -x * math.sin(th) + y * math.cos(th)
    if kind == "stripes":
        p = rng.uniform(4, 12)
        t = ((u % p) < p / 2).astype(np.float32)
    elif kind == "checkers":
        p = rng.uniform(4, 12)
        t = ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)
    elif kind == "dots":
        p = rng.uniform(5, 10)
        d = np.hypot((u % p) - p / 2, (v % p) - p / 2)
        t = np.clip(p * 0.3 - d + 0.5, 0, 1)
    elif kind == "zigzag":
        p = rng.uniform(6, 12)
        tri = np.abs((v / p) % 2 - 1) * p * rng.uniform(0.5, 1.0)
        t = (((u + tri) % p) < p / 2).astype(np.float32)
    elif kind == "rings":
        p = rng.uniform(4, 9)
        c = rng.uniform(0, SIZE, 2)
        t = ((np.hypot(x - c[0], y - c[1]) % p) < p / 2).astype(np.float32)
    elif kind == "waves":
        p = rng.uniform(6, 14)
        t = 0.5 + 0.5 * np.sin(
            2 * np.pi * u / p + rng.uniform(1, 3) * np.sin(2 * np.pi * v / rng.uniform(15, 40))
        )
    else:
        raise ValueError(kind)
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


def _noise_image(rng: np.random.Generator) -> np.ndarray:
    """Random colour noise at a random block scale (float32 HxWx3)."""
    block = int(rng.choice([1, 2, 4]))
    small = rng.uniform(0, 255, (SIZE // block, SIZE // block, 3)).astype(np.float32)
    if rng.random() < 0.5:
        small = np.repeat(small.mean(axis=2, keepdims=True), 3, axis=2)
    return np.repeat(np.repeat(small, block, axis=0), block, axis=1)


def _clutter_image(rng: np.random.Generator) -> np.ndarray:
    """Background strewn with many small random polygon fragments (float32 HxWx3)."""
    bg = list(BACKGROUND_COLOURS)[rng.integers(len(BACKGROUND_COLOURS))]
    img = _background(bg, bool(rng.random() < 0.35), rng)
    return _strew_fragments(img, int(rng.integers(10, 22)), (2.0, 7.0), rng)


_SKY = ((120, 170, 235), (250, 170, 110), (70, 80, 130), (200, 210, 225))
_GROUND = ((70, 140, 60), (150, 120, 70), (225, 205, 150), (90, 110, 90), (240, 240, 245))


def _scene_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A scene without a labelled object (float32 HxWx3): hilly landscape or city skyline."""
    sky = _jitter_colour(_SKY[rng.integers(len(_SKY))], rng, 25)
    top = np.clip(sky * rng.uniform(0.6, 0.9), 0, 255)
    yy = np.mgrid[0:SIZE, 0:SIZE][0].astype(np.float32) / (SIZE - 1)
    img = top * (1 - yy[..., None]) + sky * yy[..., None]
    x = np.arange(SIZE, dtype=np.float32)
    if kind == "landscape":
        if rng.random() < 0.5:  # a sun
            c, rad = rng.uniform(8, 56, 2), rng.uniform(4, 7)
            d = np.hypot(x[None, :] - c[0], np.arange(SIZE)[:, None] - c[1] / 2)
            m = np.clip(rad - d, 0, 1)
            img = img * (1 - m[..., None]) + np.array([250, 230, 120]) * m[..., None]
        for layer in range(int(rng.integers(1, 4))):
            h = rng.uniform(28, 48) + layer * 4
            wave = h + rng.uniform(3, 8) * np.sin(2 * np.pi * x / rng.uniform(25, 70)
                                                   + rng.uniform(0, 6.3))
            m = np.clip(np.arange(SIZE)[:, None] - wave[None, :] + 0.5, 0, 1)
            col = _jitter_colour(_GROUND[rng.integers(len(_GROUND))], rng, 25) * (0.8 + 0.1 * layer)
            img = img * (1 - m[..., None]) + np.clip(col, 0, 255) * m[..., None]
        return img
    ground = rng.uniform(50, 60)
    img[int(ground):] = _jitter_colour((90, 90, 95), rng, 20)
    xpos = -rng.uniform(0, 6)
    while xpos < SIZE:
        w, h = rng.uniform(5, 12), rng.uniform(12, 42)
        x0, x1, y0 = int(xpos), int(xpos + w), int(max(2, ground - h))
        col = _jitter_colour((rng.uniform(40, 160),) * 3, rng, 25)
        img[y0 : int(ground), max(0, x0) : max(0, x1)] = col
        win = _jitter_colour((240, 220, 120), rng, 15)
        for wy in range(y0 + 2, int(ground) - 2, 4):
            for wx in range(max(0, x0 + 1), min(SIZE, x1 - 1), 3):
                if rng.random() < 0.6:
                    img[wy, wx] = win
        xpos += w + rng.uniform(0, 3)
    return img


def sample_no_object_attributes(kind: str, rng: np.random.Generator) -> dict:
    """Draw the random colours of a no-object image."""
    c0, c1 = _two_colours(rng)
    return {"kind": kind, "colour": c0, "colour2": c1}


def draw_no_object(attrs: dict, rng: np.random.Generator) -> np.ndarray:
    """Render a no-object image (HxWx3 uint8) from its attributes."""
    kind = attrs["kind"]
    if kind == "noise":
        img = _noise_image(rng)
    elif kind == "clutter":
        img = _clutter_image(rng)
    elif kind == "blank":
        img = _background(attrs["colour"], bool(rng.random() < 0.5), rng)
    elif kind in SCENE_KINDS:
        img = _scene_image(kind, rng)
    else:
        c0 = _jitter_colour(COLOURS[attrs["colour"]], rng)
        c1 = _jitter_colour(COLOURS[attrs["colour2"]], rng)
        img = _texture(kind, c0, c1, rng)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def no_object_caption(
    attrs: dict, phrase: int = 0, colours: bool = True, prefix: str = "a photo of a"
) -> str:
    """Caption of a no-object image; colours are only mentioned for kinds that have them."""
    kind = attrs["kind"]
    noun = NO_OBJECT_PHRASES[kind][phrase]
    if not colours or kind in COLOURLESS_KINDS:
        return f"{prefix} {noun}"
    if kind == "blank":
        return f"{prefix} {attrs['colour']} {noun}"
    return f"{prefix} {attrs['colour']} and {attrs['colour2']} {noun}"


def render_no_object(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Image (64x64x3 uint8) without any object (texture, noise, clutter, blank) and its caption."""
    if kind not in NO_OBJECT_KINDS:
        raise ValueError(f"unknown no-object kind {kind!r}; expected one of {NO_OBJECT_KINDS}")
    attrs = sample_no_object_attributes(kind, rng)
    return draw_no_object(attrs, rng), no_object_caption(attrs)

"""Procedural aerial scenes: a seeded, offline stand-in for remote-sensing datasets.

Each class has its own spatial structure (field stripes, tree canopy, roof grids, road and
runway markings, shorelines, ...), and several classes are deliberately confusable (dense vs.
sparse residential, road vs. runway vs. intersection, water vs. river vs. beach, farmland vs.
meadow, beach vs. desert, parking vs. industrial), so that pretraining, fine-tuning and data
augmentation make a measurable difference with small CNNs at 32-64 pixels.

How one image is made (:func:`render`):

1. A scene is drawn with :mod:`PIL.ImageDraw` and :mod:`numpy` on a square canvas
   ``sqrt(2)`` times larger than the view, at twice the target resolution (up to 128
   pixels; larger images are drawn at their own resolution). Geometry is
   expressed in *units*: one unit is one pixel of a 64-pixel image at scale 1, and each image
   draws a random scale, so a scene holds the same objects at every output size.
2. The canvas is rotated by a random angle (aerial scenes have no "up") and the centre is
   cropped, so no corner is ever empty; it is then downsampled for anti-aliasing.
3. Photometric nuisances follow: albedo variation, a per-image palette shift, saturation and
   contrast jitter, an illumination gradient, haze, blur and Gaussian sensor noise.

All randomness comes from the ``numpy.random.Generator`` passed in, so an image is
bit-identical for the same generator state and size. :func:`generate` seeds image ``i`` of
class ``k`` with ``numpy.random.default_rng([seed, k, i])``: adding classes (new ones are
appended to :data:`CLASSES`) or images never changes existing ones.

Example:
    >>> from trainables.data import synthetic
    >>> root = synthetic.generate("data/synthetic", per_class=60, size=64)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from trainables.data.presets import close_matches

__all__ = ["CLASSES", "FORMATS", "GENERATOR_VERSION", "MIN_SIZE", "generate", "render"]

GENERATOR_VERSION = 1
"""Bumped whenever rendering changes, so cached trees made by older code are regenerated."""

MIN_SIZE = 16
"""Smallest image side length in pixels."""

FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF"}
"""Supported file extensions and their PIL format names (``jpeg``/``tiff`` are aliases)."""

_FORMAT_ALIASES = {"jpeg": "jpg", "tiff": "tif"}
_MARKER = ".complete"
_SUPERSAMPLE_UP_TO = 128

Color = tuple[int, int, int]

GRASS: tuple[Color, ...] = ((92, 122, 58), (110, 132, 70), (78, 104, 52), (128, 134, 82))
DRY: tuple[Color, ...] = ((150, 140, 96), (168, 152, 112), (135, 120, 85))
SAND: tuple[Color, ...] = ((212, 192, 150), (200, 176, 132), (222, 206, 168), (196, 160, 112))
WATER: tuple[Color, ...] = ((28, 58, 88), (36, 80, 98), (40, 72, 64), (58, 84, 82), (24, 46, 62))
ASPHALT: tuple[Color, ...] = ((82, 82, 86), (96, 96, 100), (70, 72, 76))
CONCRETE: tuple[Color, ...] = ((172, 170, 162), (188, 184, 176), (150, 150, 146))
ROOF: tuple[Color, ...] = (
    (166, 84, 64),
    (142, 142, 148),
    (206, 206, 200),
    (96, 72, 60),
    (76, 96, 122),
    (182, 122, 92),
)
TREE: tuple[Color, ...] = ((40, 72, 36), (52, 82, 42), (36, 62, 40), (62, 88, 46))
CROPS: tuple[Color, ...] = (
    (104, 140, 62),
    (140, 156, 76),
    (182, 166, 96),
    (150, 120, 82),
    (88, 120, 56),
    (202, 186, 122),
    (122, 100, 72),
)
CARS: tuple[Color, ...] = (
    (232, 232, 232),
    (30, 30, 36),
    (160, 162, 166),
    (150, 32, 30),
    (40, 62, 132),
    (200, 200, 206),
)
INDUSTRIAL_ROOF: tuple[Color, ...] = (
    (196, 198, 200),
    (150, 152, 156),
    (92, 118, 150),
    (160, 110, 84),
    (110, 112, 116),
)
WHITE: Color = (236, 236, 230)
YELLOW: Color = (220, 190, 70)


def _shade(color: Sequence[float], factor: float) -> Color:
    """``color`` (non-negative) scaled by ``factor`` >= 0 and clipped to 255."""
    r, g, b = color
    return (min(255, int(r * factor)), min(255, int(g * factor)), min(255, int(b * factor)))


def _clip8(v: float) -> int:
    """``v`` as an integer clipped to 0-255."""
    return 0 if v < 0 else 255 if v > 255 else int(v)


def _tuples(colors: np.ndarray) -> list[Color]:
    """Rows of a float colour array as integer RGB tuples (clipped to 0-255)."""
    return [tuple(c) for c in np.clip(colors, 0, 255).astype(int).tolist()]


def _rect(cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    """Corners of a ``w`` x ``h`` rectangle centred on (``cx``, ``cy``), rotated by ``angle``."""
    ca, sa = math.cos(angle), math.sin(angle)
    out = []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
        out.append((cx + dx * ca - dy * sa, cy + dx * sa + dy * ca))
    return out


@lru_cache(maxsize=16)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` of an ``n`` x ``n`` image, as float32 arrays."""
    ax = np.arange(n, dtype=np.float32) + 0.5
    x, y = np.meshgrid(ax, ax)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _value_noise(rng: np.random.Generator, n: int, cells: float) -> np.ndarray:
    """Smooth noise in about [0, 1] on an ``n`` x ``n`` grid with ``cells`` features across."""
    k = int(min(max(2, round(cells)), n)) + 1
    small = rng.random((k, k), dtype=np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((n, n), Image.Resampling.BICUBIC))


class _Scene:
    """Drawing state of one canvas: its size, scale, sun direction and random source.

    The view that :func:`render` will crop is known in advance (``view`` pixels wide, centred,
    rotated by ``angle``), so renderers can skip the many small objects that would fall
    outside it (:meth:`visible`).

    Attributes:
        rng: Source of all randomness of the scene.
        n: Canvas side length in pixels.
        u: Pixels per unit (one unit is one pixel of a 64-pixel image at scale 1).
        view: Side length in pixels of the square that will be cropped from the canvas centre.
        angle: Rotation (radians) of that square.
        img: The canvas.
        draw: Drawer bound to ``img``.
        shadow: Offset of object shadows in pixels (one sun per scene).
    """

    def __init__(self, rng: np.random.Generator, n: int, u: float, view: int, angle: float):
        self.rng, self.n, self.u, self.view, self.angle = rng, n, u, view, angle
        self.img = Image.new("RGB", (n, n))
        self.draw = ImageDraw.Draw(self.img)
        sun = rng.uniform(0.0, 2 * math.pi)
        length = rng.uniform(0.3, 1.3) * u
        self.shadow = (length * math.cos(sun), length * math.sin(sun))

    @property
    def c(self) -> float:
        """Canvas centre coordinate (both axes)."""
        return self.n / 2

    @property
    def units(self) -> float:
        """Canvas side length in units."""
        return self.n / self.u

    def visible(self, x: np.ndarray | float, y: np.ndarray | float, margin: float) -> np.ndarray:
        """Whether points lie within ``margin`` pixels of the view that will be cropped."""
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        dx, dy = np.asarray(x) - self.c, np.asarray(y) - self.c
        half = self.view / 2 + margin
        return (np.abs(dx * ca + dy * sa) <= half) & (np.abs(dy * ca - dx * sa) <= half)

    def color(self, palette: Sequence[Color], spread: float = 12.0) -> Color:
        """A random palette entry with Gaussian jitter of ``spread`` per channel."""
        r, g, b = palette[int(self.rng.integers(len(palette)))]
        jr, jg, jb = self.rng.normal(0.0, spread, 3).tolist()
        return (_clip8(r + jr), _clip8(g + jg), _clip8(b + jb))

    def colors(self, palette: Sequence[Color], k: int, spread: float = 12.0) -> np.ndarray:
        """``k`` random palette entries with jitter, as a ``k`` x 3 float array."""
        base = np.asarray(palette, np.float64)[self.rng.integers(len(palette), size=k)]
        return np.clip(base + self.rng.normal(0.0, spread, (k, 3)), 0, 255)

    def noise(self, feature: float) -> np.ndarray:
        """Value noise whose blobs are about ``feature`` units wide."""
        return _value_noise(self.rng, self.n, self.units / max(feature, 1e-3))

    def set_array(self, arr: np.ndarray) -> None:
        """Replace the canvas with ``arr`` (clipped to 0-255)."""
        self.img.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB"))

    def noise_mask(self, feature: float) -> Image.Image:
        """Value noise as an 8-bit ``L`` image whose blobs are about ``feature`` units wide."""
        k = int(min(max(2, round(self.units / max(feature, 1e-3))), self.n)) + 1
        small = self.rng.integers(0, 256, (k, k), dtype=np.uint8)
        return Image.fromarray(small, "L").resize((self.n, self.n), Image.Resampling.BICUBIC)

    def texture(self, c1: Color, c2: Color, feature: float, grain: float = 0.25) -> None:
        """Fill the canvas with patches blending ``c1`` into ``c2`` plus fine grain."""
        mask = self.noise_mask(feature)
        if grain > 0:
            mask = Image.blend(mask, self.noise_mask(1.2), grain)
        self.img.paste(c1, (0, 0, self.n, self.n))
        self.img.paste(c2, (0, 0, self.n, self.n), mask)

    def modulate(self, feature: float, amount: float) -> None:
        """Darken the canvas by up to ``amount`` (relative) following smooth noise."""
        mask = self.noise_mask(feature).point(lambda v: int(255 - amount * v))
        self.img.paste(ImageChops.multiply(self.img, Image.merge("RGB", (mask, mask, mask))))

    def strip(self, p0: Sequence[float], p1: Sequence[float], width: float, fill: Color) -> None:
        """A straight band of ``width`` pixels from ``p0`` to ``p1``."""
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        length = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / length * width / 2, dx / length * width / 2
        self.draw.polygon(
            [
                (p0[0] + nx, p0[1] + ny),
                (p1[0] + nx, p1[1] + ny),
                (p1[0] - nx, p1[1] - ny),
                (p0[0] - nx, p0[1] - ny),
            ],
            fill=fill,
        )

    def dashes(
        self,
        p0: Sequence[float],
        p1: Sequence[float],
        width: float,
        dash: float,
        gap: float,
        fill: Color,
    ) -> None:
        """A dashed line (dash and gap lengths in pixels) from ``p0`` to ``p1``."""
        length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
        if length == 0:
            return
        tx, ty = (p1[0] - p0[0]) / length, (p1[1] - p0[1]) / length
        s = -self.rng.uniform(0, dash + gap)
        while s < length:
            a, b = max(s, 0.0), min(s + dash, length)
            if b > a:
                self.strip(
                    (p0[0] + tx * a, p0[1] + ty * a), (p0[0] + tx * b, p0[1] + ty * b), width, fill
                )
            s += dash + gap

    def trees(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        radii: np.ndarray,
        palette: Sequence[Color] = TREE,
    ) -> None:
        """Round tree crowns with shadows and a highlight on the sunny side."""
        sx, sy = self.shadow
        base = np.asarray(palette, np.float32)[self.rng.integers(len(palette), size=len(xs))]
        base = base * self.rng.uniform(0.8, 1.2, (len(xs), 1))
        keep = self.visible(xs, ys, 2 * float(np.max(radii, initial=0)) + abs(sx) + abs(sy))
        hx, hy = -0.35 * math.copysign(1, sx), -0.35 * math.copysign(1, sy)
        d = self.draw
        for x, y, r, col, light in zip(
            xs[keep].tolist(),
            ys[keep].tolist(),
            radii[keep].tolist(),
            _tuples(base[keep]),
            _tuples(base[keep] * 1.18),
            strict=True,
        ):
            d.ellipse((x - r + sx, y - r + sy, x + r + sx, y + r + sy), fill=(22, 30, 20))
            d.ellipse((x - r, y - r, x + r, y + r), fill=col)
            h = r * 0.45
            cx, cy = x + hx * r, y + hy * r
            d.ellipse((cx - h, cy - h, cx + h, cy + h), fill=light)

    def scatter_trees(self, count: int, r_min: float, r_max: float) -> None:
        """``count`` trees at uniform positions with radii in [``r_min``, ``r_max``] units."""
        rng = self.rng
        self.trees(
            rng.uniform(0, self.n, count),
            rng.uniform(0, self.n, count),
            rng.uniform(r_min, r_max, count) * self.u,
        )

    def building(self, box: Sequence[float], fill: Color, *, gable: bool = True) -> None:
        """One axis-aligned roof ``(x0, y0, x1, y1)`` with a shadow, gabled or flat."""
        if gable:
            self.houses(np.asarray([box], np.float64), np.asarray([fill], np.float64))
            return
        x0, y0, x1, y1 = box
        sx, sy = self.shadow
        self.draw.rectangle((x0 + sx, y0 + sy, x1 + sx, y1 + sy), fill=(38, 38, 40))
        self.draw.rectangle((x0, y0, x1, y1), fill=fill)

    def houses(self, boxes: np.ndarray, roofs: np.ndarray) -> None:
        """Gabled roofs with shadows; ``boxes`` is ``k`` x 4 ``(x0, y0, x1, y1)`` pixels."""
        if len(boxes) == 0:
            return
        sx, sy = self.shadow
        keep = self.visible(
            (boxes[:, 0] + boxes[:, 2]) / 2,
            (boxes[:, 1] + boxes[:, 3]) / 2,
            float(np.max(boxes[:, 2:] - boxes[:, :2])) + abs(sx) + abs(sy),
        )
        boxes, roofs = boxes[keep], roofs[keep]
        d = self.draw
        for (x0, y0, x1, y1), light, dark in zip(
            boxes.tolist(), _tuples(roofs * 1.12), _tuples(roofs * 0.84), strict=True
        ):
            d.rectangle((x0 + sx, y0 + sy, x1 + sx, y1 + sy), fill=(38, 38, 40))
            if x1 - x0 >= y1 - y0:
                ym = (y0 + y1) / 2
                d.rectangle((x0, y0, x1, ym), fill=light)
                d.rectangle((x0, ym, x1, y1), fill=dark)
            else:
                xm = (x0 + x1) / 2
                d.rectangle((x0, y0, xm, y1), fill=light)
                d.rectangle((xm, y0, x1, y1), fill=dark)

    def road(
        self,
        p0: Sequence[float],
        p1: Sequence[float],
        width: float,
        *,
        surface: Color | None = None,
        centre: Color | None = WHITE,
        edges: bool = True,
    ) -> None:
        """An asphalt road (``width`` in units) with edge lines and a dashed centre line."""
        u = self.u
        surface = surface or self.color(ASPHALT, 8)
        self.strip(p0, p1, width * u + 1.2 * u, _shade(surface, 1.25))
        self.strip(p0, p1, width * u, surface)
        if edges and width > 3:
            dx, dy = p1[0] - p0[0], p1[1] - p0[1]
            length = math.hypot(dx, dy) or 1.0
            off = (width / 2 - 0.5) * u
            nx, ny = -dy / length * off, dx / length * off
            for sgn in (1, -1):
                self.strip(
                    (p0[0] + sgn * nx, p0[1] + sgn * ny),
                    (p1[0] + sgn * nx, p1[1] + sgn * ny),
                    0.35 * u,
                    _shade(WHITE, 0.9),
                )
        if centre is not None:
            self.dashes(p0, p1, 0.4 * u, 2.5 * u, 3.0 * u, centre)

    def cars_along(
        self, p0: Sequence[float], p1: Sequence[float], offsets: Sequence[float], density: float
    ) -> None:
        """Cars on lanes parallel to ``p0``-``p1`` at lateral ``offsets`` (units)."""
        rng, u = self.rng, self.u
        length = math.hypot(p1[0] - p0[0], p1[1] - p0[1]) or 1.0
        tx, ty = (p1[0] - p0[0]) / length, (p1[1] - p0[1]) / length
        angle = math.atan2(ty, tx)
        for off in offsets:
            k = rng.poisson(density * length / (10 * u))
            for s in rng.uniform(0, length, k).tolist():
                cx = p0[0] + tx * s - ty * off * u
                cy = p0[1] + ty * s + tx * off * u
                self.draw.polygon(_rect(cx, cy, 4.2 * u, 1.9 * u, angle), fill=self.color(CARS, 10))


def _farmland(s: _Scene) -> None:
    """Parallel fields of varied crops, with plough rows and dirt tracks."""
    rng, u, n, d = s.rng, s.u, s.n, s.draw
    x = -rng.uniform(0, 12) * u
    row_prob = rng.uniform(0.3, 0.9)
    while x < n:
        w = rng.uniform(5, 17) * u
        cuts = np.sort(rng.uniform(0, n, int(rng.integers(0, 3)))).tolist()
        for y0, y1 in zip([0.0, *cuts], [*cuts, float(n)], strict=True):
            col = s.color(CROPS, 14)
            d.rectangle((x, y0, x + w, y1), fill=col)
            if rng.random() < row_prob:
                spacing = rng.uniform(0.9, 1.8) * u
                dark = _shade(col, rng.uniform(0.78, 0.9))
                for xx in np.arange(x + spacing / 2, x + w, spacing).tolist():
                    s.strip((xx, y0), (xx, y1), 0.4 * u, dark)
        if rng.random() < 0.3:
            s.strip((x, 0), (x, n), rng.uniform(0.6, 1.4) * u, s.color(DRY, 10))
        x += w
    if rng.random() < 0.4:
        y = rng.uniform(0, n)
        s.strip((0, y), (n, y), rng.uniform(1.0, 2.5) * u, s.color(DRY, 10))
    if rng.random() < 0.3:
        s.scatter_trees(int(rng.integers(1, 8)), 1.2, 2.5)
    s.modulate(rng.uniform(8, 25), rng.uniform(0.1, 0.3))


def _meadow(s: _Scene) -> None:
    """Grass with patches of dry vegetation, a few trees and sometimes a path."""
    rng, u, n = s.rng, s.u, s.n
    g = s.color(GRASS, 12)
    other = s.color(DRY if rng.random() < 0.5 else GRASS, 14)
    s.texture(g, other, rng.uniform(6, 20), grain=rng.uniform(0.15, 0.45))
    if rng.random() < 0.35:
        pts = [(0.0, rng.uniform(0, n))]
        heading = rng.uniform(-0.4, 0.4)
        while pts[-1][0] < n:
            heading += rng.normal(0, 0.25)
            x, y = pts[-1]
            pts.append((x + 4 * u * math.cos(heading), y + 4 * u * math.sin(heading)))
        s.draw.line(pts, fill=s.color(DRY, 10), width=max(1, round(rng.uniform(0.6, 1.4) * u)))
    s.scatter_trees(int(rng.integers(0, 14)), 1.0, 3.0)


def _forest(s: _Scene) -> None:
    """Dense canopy: overlapping round crowns over dark gaps, sometimes a clearing or track."""
    rng, u, n = s.rng, s.u, s.n
    dark = s.color(((20, 36, 22), (26, 40, 24), (34, 44, 28)), 6)
    crown = s.color(TREE + ((74, 96, 50), (90, 92, 48)), 12)
    t = s.noise(rng.uniform(2.2, 4.0))
    t = np.clip((t - 0.25) / 0.6, 0, 1) ** 0.8
    patches = s.noise(rng.uniform(10, 25))[..., None]
    a, b = np.asarray(dark, np.float32), np.asarray(crown, np.float32)
    tint = 1 + rng.uniform(-0.15, 0.15, 3).astype(np.float32) * (patches - 0.5) * 2
    s.set_array((a + (b - a) * t[..., None]) * tint)
    if rng.random() < 0.3:
        cx, cy, r = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(5, 14) * u
        s.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=s.color(GRASS, 10))
    if rng.random() < 0.25:
        y = rng.uniform(0.2, 0.8) * n
        s.strip((0, y), (n, y + rng.uniform(-0.3, 0.3) * n), 1.5 * u, s.color(DRY, 10))
    k = int(rng.integers(40, 120))
    s.scatter_trees(k, 1.5, 3.8)


def _ripples(s: _Scene, arr: np.ndarray, strength: float) -> np.ndarray:
    """Add wind ripples (warped sinusoidal waves) to a water canvas array."""
    rng, u = s.rng, s.u
    x, y = _grid(s.n)
    theta = rng.uniform(0, math.pi)
    wavelength = rng.uniform(2.5, 6.0) * u
    warp = s.noise(rng.uniform(8, 20)) * rng.uniform(2, 8) * u
    phase = (x * math.cos(theta) + y * math.sin(theta) + warp) * (2 * math.pi / wavelength)
    return arr + (strength * np.sin(phase))[..., None]


def _water(s: _Scene) -> None:
    """Open water: smooth, low texture with ripples, glint, an occasional boat or shore."""
    rng, u, n = s.rng, s.u, s.n
    col = np.asarray(s.color(WATER, 8), np.float32)
    arr = col * (1 + rng.uniform(0.04, 0.15) * (s.noise(rng.uniform(15, 40)) - 0.5))[..., None]
    arr = _ripples(s, arr, rng.uniform(1.5, 6.0))
    if rng.random() < 0.3:
        x, y = _grid(n)
        gx, gy = rng.uniform(0, n, 2)
        r2 = (rng.uniform(10, 30) * u) ** 2
        arr = arr + (rng.uniform(20, 60) * np.exp(-((x - gx) ** 2 + (y - gy) ** 2) / r2))[..., None]
    s.set_array(arr)
    if rng.random() < 0.25:
        a = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(0.36, 0.48) * n
        cx, cy = s.c + dist * math.cos(a), s.c + dist * math.sin(a)
        far_x, far_y = cx + math.cos(a) * n, cy + math.sin(a) * n
        s.draw.ellipse((far_x - n, far_y - n, far_x + n, far_y + n), fill=s.color(GRASS + SAND, 12))
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.25 else 0):
        bx, by, a = rng.uniform(0.25, 0.75) * n, rng.uniform(0.25, 0.75) * n, rng.uniform(0, 6.3)
        s.strip(
            (bx, by),
            (bx - math.cos(a) * 12 * u, by - math.sin(a) * 12 * u),
            1.6 * u,
            _shade(tuple(col.tolist()), 1.35),
        )
        s.draw.polygon(_rect(bx, by, 3.5 * u, 1.4 * u, a), fill=WHITE)


def _meander(s: _Scene, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample points ``(x, y)`` of a meandering centre line crossing the canvas along x."""
    rng, u, n = s.rng, s.u, s.n
    x = np.arange(-4 * u, n + 4 * u, 2 * u)
    y = np.full_like(x, s.c + offset)
    for amp, wave in ((rng.uniform(3, 14), rng.uniform(40, 90)), (rng.uniform(0, 5), 25.0)):
        y += amp * u * np.sin(2 * math.pi * x / (wave * u) + rng.uniform(0, 2 * math.pi))
    return x, y


def _river(s: _Scene) -> None:
    """A meandering water band with sandy banks through vegetation or fields."""
    rng, u, n = s.rng, s.u, s.n
    if rng.random() < 0.35:
        _farmland(s)
    else:
        _meadow(s)
    x, y = _meander(s, rng.uniform(-0.12, 0.12) * n)
    width = rng.uniform(6, 22) * u
    wobble = 1 + 0.15 * np.sin(2 * math.pi * x / (rng.uniform(20, 50) * u))
    bank = rng.uniform(0.6, 2.5) * u
    for half, fill in ((width / 2 + bank, s.color(SAND + DRY, 10)), (width / 2, None)):
        top = list(zip(x.tolist(), (y - half * wobble).tolist(), strict=True))
        bottom = list(zip(x.tolist(), (y + half * wobble).tolist(), strict=True))
        s.draw.polygon(top + bottom[::-1], fill=fill or s.color(WATER, 8))
    if rng.random() < 0.6:
        k = int(rng.integers(10, 40))
        side = rng.choice([-1.0, 1.0], k)
        idx = rng.integers(0, len(x), k)
        dist = width / 2 + bank + rng.uniform(1.5, 4, k) * u
        s.trees(x[idx], y[idx] + side * dist, rng.uniform(1.2, 2.6, k) * u)
    if rng.random() < 0.15:
        bx = rng.uniform(0.3, 0.7) * n
        s.road((bx, 0), (bx, n), rng.uniform(3, 5), centre=None)


def _beach(s: _Scene) -> None:
    """A sea/sand boundary with surf, wet sand, umbrellas and a vegetated hinterland."""
    rng, u, n, d = s.rng, s.u, s.n, s.draw
    sand = s.color(SAND, 10)
    s.texture(sand, _shade(sand, rng.uniform(0.85, 1.05)), rng.uniform(4, 12), grain=0.4)
    x = np.arange(-4 * u, n + 4 * u, 2 * u)
    y0 = s.c + rng.uniform(-0.22, 0.22) * n
    shore = y0 + rng.uniform(1, 5) * u * np.sin(
        2 * math.pi * x / (rng.uniform(15, 60) * u) + rng.uniform(0, 6.3)
    )
    xs = x.tolist()

    def band(lo: np.ndarray, hi: np.ndarray, fill: Color) -> None:
        d.polygon(
            list(zip(xs, lo.tolist(), strict=True)) + list(zip(xs, hi.tolist(), strict=True))[::-1],
            fill=fill,
        )

    if rng.random() < 0.5:
        back = shore + rng.uniform(16, 36) * u
        band(back, np.full_like(x, n + 4 * u), s.color(GRASS + TREE, 12))
        if rng.random() < 0.6:
            k = int(rng.integers(10, 40))
            s.trees(
                rng.uniform(0, n, k), back.mean() + rng.uniform(0, 10, k) * u, np.full(k, 2 * u)
            )
    band(shore, shore + rng.uniform(2, 6) * u, _shade(sand, 0.78))
    deep, shallow = s.color(WATER, 8), s.color(((60, 130, 140), (70, 140, 130), (90, 150, 150)), 10)
    band(np.full_like(x, -4 * u), shore, deep)
    band(shore - rng.uniform(4, 14) * u, shore, shallow)
    foam = _shade(WHITE, rng.uniform(0.9, 1.0))
    d.line(list(zip(xs, shore.tolist(), strict=True)), fill=foam, width=max(1, round(1.0 * u)))
    if rng.random() < 0.6:
        off = shore - rng.uniform(3, 8) * u
        d.line(list(zip(xs, off.tolist(), strict=True)), fill=foam, width=max(1, round(0.6 * u)))
    if rng.random() < 0.4:
        k = int(rng.integers(5, 30))
        ux = rng.uniform(0, n, k)
        uy = y0 + rng.uniform(4, 14, k) * u
        for cx, cy in zip(ux.tolist(), uy.tolist(), strict=True):
            r = 1.1 * u
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=s.color(CARS[3:] + (YELLOW,), 20))


def _desert(s: _Scene) -> None:
    """Sand dunes: asymmetric crests (gentle windward slope, dark slip face), rocks, tracks."""
    rng, u, n = s.rng, s.u, s.n
    sand = np.asarray(s.color(SAND + ((206, 150, 96), (226, 196, 140)), 12), np.float32)
    x, y = _grid(n)
    wavelength = rng.uniform(6, 20) * u
    warp = (s.noise(rng.uniform(15, 40)) - 0.5) * rng.uniform(4, 18) * u
    f = np.mod((x + warp) / wavelength + 0.3 * y / (rng.uniform(30, 90) * u), 1.0)
    k = rng.uniform(0.65, 0.88)
    ramp = np.where(f < k, f / k, (1 - f) / (1 - k))
    light = 1 + rng.uniform(0.08, 0.3) * (ramp - 0.5) - 0.1 * (f > k)
    light *= 1 + 0.1 * (s.noise(1.5) - 0.5)
    s.set_array(sand * light[..., None])
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 5))):
            cx, cy, r = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(2, 7) * u
            s.draw.ellipse(
                (cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r),
                fill=_shade(sand, rng.uniform(0.5, 0.7)),
            )
    if rng.random() < 0.2:
        yy = rng.uniform(0, n)
        s.strip((0, yy), (n, yy + rng.uniform(-0.5, 0.5) * n), 0.8 * u, _shade(sand, 0.85))


def _dense_residential(s: _Scene) -> None:
    """Blocks of tightly packed houses in a street grid."""
    rng, u, n = s.rng, s.u, s.n
    s.set_array(np.broadcast_to(np.asarray(s.color(ASPHALT, 10), np.float32), (n, n, 3)))
    street = rng.uniform(1.8, 3.5) * u
    bw, bh = rng.uniform(10, 18) * u, rng.uniform(14, 30) * u
    main_roof = np.asarray(s.color(ROOF, 10), np.float64)
    uniform_roofs = rng.random() < 0.5
    garden = s.color(GRASS, 10)
    boxes = []
    for y in np.arange(-rng.uniform(0, bh), n, bh).tolist():
        for x in np.arange(-rng.uniform(0, bw), n, bw).tolist():
            if not s.visible(x + bw / 2, y + bh / 2, (bw + bh) / 2):
                continue
            bx0, by0 = x + street / 2, y + street / 2
            bx1, by1 = x + bw - street / 2, y + bh - street / 2
            s.draw.rectangle((bx0, by0, bx1, by1), fill=garden)
            mid = (bx0 + bx1) / 2
            gap = rng.uniform(0.3, 0.9) * u
            heights = rng.uniform(3.2, 5.5, (2, int((by1 - by0) / (3.2 * u)) + 1)) * u
            for (c0, c1), hs in zip(((bx0, mid), (mid, bx1)), heights, strict=True):
                tops = by0 + np.concatenate(([0.0], np.cumsum(hs)))
                for t0, t1 in zip(tops[:-1].tolist(), tops[1:].tolist(), strict=True):
                    if t0 > by1 - 2 * u:
                        break
                    boxes.append((c0 + gap, t0 + gap, c1 - gap, min(t1, by1) - gap))
    k = len(boxes)
    roofs = main_roof * rng.uniform(0.85, 1.15, (k, 1)) if uniform_roofs else s.colors(ROOF, k, 12)
    s.houses(np.asarray(boxes, np.float64).reshape(-1, 4), roofs)
    if rng.random() < 0.4:
        s.scatter_trees(int(rng.integers(3, 20)), 0.8, 1.8)


def _sparse_residential(s: _Scene) -> None:
    """Scattered houses on grass along a few streets, with trees, drives and pools."""
    rng, u, n = s.rng, s.u, s.n
    s.texture(s.color(GRASS, 10), s.color(GRASS + DRY, 12), rng.uniform(6, 20), grain=0.3)
    streets = int(rng.integers(1, 4))
    angles = [0.0] + [
        rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.1) for _ in range(streets - 1)
    ]
    for a in angles:
        off = rng.uniform(-0.3, 0.3) * n
        px, py = s.c - math.sin(a) * off, s.c + math.cos(a) * off
        p0 = (px - math.cos(a) * n, py - math.sin(a) * n)
        p1 = (px + math.cos(a) * n, py + math.sin(a) * n)
        width = rng.uniform(1.8, 3.0)
        s.road(p0, p1, width, centre=None, edges=False)
        spacing = rng.uniform(8, 16) * u
        for t in np.arange(-n, n, spacing).tolist():
            for side in (-1, 1):
                if rng.random() > 0.7:
                    continue
                w, h = rng.uniform(4, 7.5) * u, rng.uniform(3.5, 6) * u
                setback = (width / 2 + rng.uniform(2.5, 6)) * u + h / 2
                cx = px + math.cos(a) * t - math.sin(a) * side * setback
                cy = py + math.sin(a) * t + math.cos(a) * side * setback
                if not (-8 * u < cx < n + 8 * u and -8 * u < cy < n + 8 * u):
                    continue
                sx, sy = s.shadow
                s.draw.polygon(_rect(cx + sx, cy + sy, w, h, a), fill=(38, 40, 36))
                roof = s.color(ROOF, 12)
                s.draw.polygon(_rect(cx, cy, w, h, a), fill=roof)
                s.draw.polygon(
                    _rect(cx - math.sin(a) * h / 4, cy + math.cos(a) * h / 4, w, h / 2, a),
                    fill=_shade(roof, 0.82),
                )
                if rng.random() < 0.15:
                    qx = cx + math.sin(a) * side * (h / 2 + 2 * u)
                    qy = cy - math.cos(a) * side * (h / 2 + 2 * u)
                    s.draw.polygon(_rect(qx, qy, 2.2 * u, 1.4 * u, a), fill=(70, 170, 200))
    s.scatter_trees(int(rng.integers(10, 50)), 1.0, 2.6)


def _industrial(s: _Scene) -> None:
    """Large rectangular roofs with corrugation, storage tanks and trucks on concrete lots."""
    rng, u, n, d = s.rng, s.u, s.n, s.draw
    s.texture(s.color(CONCRETE, 10), s.color(ASPHALT, 10), rng.uniform(10, 30), grain=0.2)
    lots = [(-2 * u, -2 * u, n + 2 * u, n + 2 * u)]
    done = []
    max_lot = rng.uniform(20, 38) * u
    while lots:
        x0, y0, x1, y1 = lots.pop()
        w, h = x1 - x0, y1 - y0
        if max(w, h) < max_lot or min(w, h) < 14 * u:
            done.append((x0, y0, x1, y1))
            continue
        road = rng.uniform(2, 4) * u
        if w >= h:
            cut = x0 + rng.uniform(0.35, 0.65) * w
            lots += [(x0, y0, cut - road / 2, y1), (cut + road / 2, y0, x1, y1)]
        else:
            cut = y0 + rng.uniform(0.35, 0.65) * h
            lots += [(x0, y0, x1, cut - road / 2), (x0, cut + road / 2, x1, y1)]
    for x0, y0, x1, y1 in done:
        roll = rng.random()
        m = rng.uniform(0.8, 2.0) * u
        bx0, by0, bx1, by1 = x0 + m, y0 + m, x1 - m, y1 - m
        if roll < 0.7:
            roof = s.color(INDUSTRIAL_ROOF, 10)
            s.building((bx0, by0, bx1, by1), roof, gable=False)
            spacing = rng.uniform(1.0, 2.5) * u
            line = _shade(roof, rng.uniform(0.8, 0.92))
            if rng.random() < 0.7:
                for xx in np.arange(bx0 + spacing, bx1, spacing).tolist():
                    s.strip((xx, by0), (xx, by1), 0.3 * u, line)
            if rng.random() < 0.4:
                d.rectangle(
                    ((bx0 + bx1) / 2 - u, by0 + u, (bx0 + bx1) / 2 + u, by1 - u),
                    fill=_shade(roof, 1.25),
                )
        elif roll < 0.85:
            r = rng.uniform(2, 5) * u
            tank = s.color(((210, 210, 206), (180, 182, 180)), 8)
            for cx in np.arange(bx0 + r, bx1 - r + 1e-6, 2.4 * r).tolist():
                for cy in np.arange(by0 + r, by1 - r + 1e-6, 2.4 * r).tolist():
                    sx, sy = s.shadow
                    d.ellipse(
                        (cx - r + sx, cy - r + sy, cx + r + sx, cy + r + sy), fill=(40, 40, 40)
                    )
                    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tank)
                    d.ellipse(
                        (cx - 0.6 * r, cy - 0.6 * r, cx + 0.6 * r, cy + 0.6 * r),
                        fill=_shade(tank, 0.88),
                    )
        else:
            for cy in np.arange(by0 + u, by1 - 2 * u, 2.6 * u).tolist():
                if rng.random() < 0.6:
                    length = rng.uniform(5, 8) * u
                    cx = rng.uniform(bx0, max(bx0, bx1 - length))
                    d.rectangle((cx, cy, cx + length, cy + 1.8 * u), fill=s.color(CARS, 10))


def _parking(s: _Scene) -> None:
    """Rows of stalls with cars (random occupancy) separated by aisles and planted islands."""
    rng, u, n, d = s.rng, s.u, s.n, s.draw
    asphalt = s.color(ASPHALT, 10)
    s.texture(asphalt, _shade(asphalt, 0.9), rng.uniform(8, 20), grain=0.2)
    stall_w = rng.uniform(2.4, 3.0) * u
    depth = rng.uniform(4.5, 5.5) * u
    aisle = rng.uniform(5, 7) * u
    occupancy = rng.uniform(0.3, 0.95)
    line = _shade(WHITE, 0.9)
    line_w = max(1, round(0.25 * u))
    island = rng.random() < 0.4
    glass = (30, 34, 40)
    for y in np.arange(-rng.uniform(0, 2 * depth + aisle), n, 2 * depth + aisle).tolist():
        d.line([(0, y + depth), (n, y + depth)], fill=line, width=line_w)
        for row in range(2):
            y0 = y + row * depth
            xs = np.arange(-rng.uniform(0, stall_w), n, stall_w)
            occupied = rng.random(len(xs)) < occupancy
            cols = s.colors(CARS, len(xs), 10)
            keep = s.visible(xs, np.full_like(xs, y0 + depth / 2), depth)
            cy0, cy1 = y0 + 0.1 * depth, y0 + 0.9 * depth
            wy = cy0 + 0.2 * depth if row else cy1 - 0.36 * depth
            for x, used, col in zip(
                xs[keep].tolist(), occupied[keep].tolist(), _tuples(cols[keep]), strict=True
            ):
                d.line([(x, y0), (x, y0 + depth)], fill=line, width=line_w)
                if used:
                    cx0, cx1 = x + 0.15 * stall_w, x + 0.85 * stall_w
                    d.rectangle((cx0, cy0, cx1, cy1), fill=col)
                    d.rectangle((cx0 + 0.1 * u, wy, cx1 - 0.1 * u, wy + 0.16 * depth), fill=glass)
        if island:
            d.rectangle((0, y + 2 * depth, n, y + 2 * depth + 1.2 * u), fill=s.color(GRASS, 10))
    if rng.random() < 0.3:
        x0 = rng.uniform(0.75, 0.9) * n
        s.building((x0, -u, n + u, n + u), s.color(INDUSTRIAL_ROOF, 10), gable=False)


def _road(s: _Scene) -> None:
    """One straight road (sometimes a divided highway) through vegetation, with cars."""
    rng, u, n = s.rng, s.u, s.n
    (_farmland if rng.random() < 0.3 else _meadow)(s)
    off = rng.uniform(-0.15, 0.15) * n
    divided = rng.random() < 0.35
    width = rng.uniform(4, 7) if not divided else rng.uniform(5, 7.5)
    carriageways = [0.0] if not divided else [-(width / 2 + 1.5), width / 2 + 1.5]
    median = rng.uniform(1.5, 5)
    for k, lane in enumerate(carriageways):
        shift = lane * u if not divided else lane * u + (median / 2 if k else -median / 2) * u
        y = s.c + off + shift
        s.road((-u, y), (n + u, y), width)
        s.cars_along((-u, y), (n + u, y), [-width / 4, width / 4], rng.uniform(0.2, 1.5))
    if rng.random() < 0.3:
        x = rng.uniform(0.2, 0.8) * n
        side = rng.choice([-1, 1])
        s.road(
            (x, s.c + off),
            (x + rng.normal(0, 0.2) * n, s.c + off + side * n),
            2.5,
            centre=None,
            edges=False,
        )
    if rng.random() < 0.5:
        k = int(rng.integers(8, 30))
        side = rng.choice([-1.0, 1.0], k)
        s.trees(
            rng.uniform(0, n, k),
            s.c
            + off
            + side * (width + rng.uniform(2, 6, k) + (median + width if divided else 0)) * u,
            rng.uniform(1.2, 2.2, k) * u,
        )


def _intersection(s: _Scene) -> None:
    """Two roads crossing near the centre, with crosswalks, stop lines and corner buildings."""
    rng, u, n = s.rng, s.u, s.n
    urban = rng.random() < 0.5
    if urban:
        s.texture(s.color(CONCRETE, 10), s.color(GRASS, 10), rng.uniform(8, 20), grain=0.2)
    else:
        _meadow(s)
    cx, cy = s.c + rng.uniform(-0.1, 0.1) * n, s.c + rng.uniform(-0.1, 0.1) * n
    w1, w2 = rng.uniform(4, 8), rng.uniform(4, 8)
    a1 = 0.0
    a2 = math.pi / 2 + rng.uniform(-0.5, 0.5)
    if urban:
        for qx in (-1, 1):
            for qy in (-1, 1):
                if rng.random() < 0.8:
                    gap = rng.uniform(2, 5) * u
                    ext = rng.uniform(10, 30) * u
                    x0 = cx + qx * (w2 * u / 2 + gap)
                    y0 = cy + qy * (w1 * u / 2 + gap)
                    box = (
                        min(x0, x0 + qx * ext),
                        min(y0, y0 + qy * ext),
                        max(x0, x0 + qx * ext),
                        max(y0, y0 + qy * ext),
                    )
                    s.building(box, s.color(ROOF + INDUSTRIAL_ROOF, 10), gable=rng.random() < 0.4)
    surface = s.color(ASPHALT, 8)
    ends = []
    for a, w in ((a1, w1), (a2, w2)):
        dx, dy = math.cos(a) * n, math.sin(a) * n
        ends.append(((cx - dx, cy - dy), (cx + dx, cy + dy), a, w))
        s.road((cx - dx, cy - dy), (cx + dx, cy + dy), w, surface=surface, centre=None)
    r = max(w1, w2) * u * 0.6
    s.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=surface)
    for (_p0, _p1, a, w), other in zip(ends, (w2, w1), strict=True):
        tx, ty = math.cos(a), math.sin(a)
        for sgn in (-1, 1):
            start = (other / 2 + 1.2) * u
            px, py = cx + sgn * tx * start, cy + sgn * ty * start
            for k in np.arange(-w / 2 + 0.6, w / 2 - 0.3, 1.1).tolist():
                qx, qy = px - ty * k * u, py + tx * k * u
                s.strip(
                    (qx, qy), (qx + sgn * tx * 2.2 * u, qy + sgn * ty * 2.2 * u), 0.55 * u, WHITE
                )
            far = start + 3.2 * u
            p = (cx + sgn * tx * far, cy + sgn * ty * far)
            s.dashes(p, (cx + sgn * tx * n, cy + sgn * ty * n), 0.4 * u, 2.5 * u, 3 * u, WHITE)
            s.cars_along(
                p, (cx + sgn * tx * n, cy + sgn * ty * n), [-w / 4, w / 4], rng.uniform(0.2, 1.2)
            )


def _runway(s: _Scene) -> None:
    """A long, wide strip with edge lines, centre dashes, threshold bars and a taxiway."""
    rng, u, n, d = s.rng, s.u, s.n, s.draw
    s.texture(s.color(GRASS + DRY, 10), s.color(GRASS, 12), rng.uniform(10, 30), grain=0.3)
    y = s.c + rng.uniform(-0.12, 0.12) * n
    w = rng.uniform(11, 20) * u
    surface = s.color(CONCRETE + ASPHALT, 10)
    start = -u
    threshold = rng.random() < 0.5
    if threshold:
        start = s.c + rng.uniform(-0.3, 0.2) * n
    if rng.random() < 0.6:
        ty = y + rng.choice([-1, 1]) * (w / 2 + rng.uniform(8, 20) * u)
        tw = rng.uniform(4, 6)
        s.road((-u, ty), (n + u, ty), tw, centre=YELLOW, edges=False)
        for x in np.arange(rng.uniform(0, 30) * u, n, rng.uniform(30, 50) * u).tolist():
            s.strip((x, y), (x, ty), tw * u, s.color(ASPHALT, 6))
            s.dashes((x, y), (x, ty), 0.35 * u, 2 * u, 1 * u, YELLOW)
    d.rectangle(
        (start - 4 * u, y - w / 2 - 0.8 * u, n + u, y + w / 2 + 0.8 * u), fill=_shade(surface, 0.8)
    )
    d.rectangle((start, y - w / 2, n + u, y + w / 2), fill=surface)
    for sgn in (-1, 1):
        yy = y + sgn * (w / 2 - 0.7 * u)
        s.strip((start, yy), (n + u, yy), 0.4 * u, WHITE)
    if threshold:
        bars = int(rng.integers(4, 9))
        x0 = start + 1.5 * u
        for k in np.linspace(-w / 2 + 1.6 * u, w / 2 - 1.6 * u, bars).tolist():
            d.rectangle((x0, y + k - 0.35 * u, x0 + 7 * u, y + k + 0.35 * u), fill=WHITE)
        for dx in (14, 24):
            for sgn in (-1, 1):
                yy = y + sgn * w / 4
                d.rectangle(
                    (x0 + dx * u, yy - 0.8 * u, x0 + (dx + 5) * u, yy + 0.8 * u), fill=WHITE
                )
        for _ in range(int(rng.integers(3, 10))):
            tx, tyy = x0 + rng.uniform(8, 30) * u, y + rng.normal(0, w / 8)
            d.ellipse(
                (tx, tyy - 0.6 * u, tx + rng.uniform(5, 12) * u, tyy + 0.6 * u),
                fill=_shade(surface, 0.6),
            )
    s.dashes((start + 32 * u if threshold else -u, y), (n + u, y), 0.5 * u, 4 * u, 3 * u, WHITE)


def _baseball_field(s: _Scene) -> None:
    """A ball field: mowed outfield fan, dirt infield, grass diamond, bases and foul lines."""
    rng, u, n, d = s.rng, s.u, s.n, s.draw
    around = rng.random()
    if around < 0.4:
        _meadow(s)
    elif around < 0.7:
        s.texture(s.color(ASPHALT + CONCRETE, 10), s.color(CONCRETE, 10), 15, grain=0.2)
    else:
        _forest(s)
    hx, hy = s.c + rng.uniform(-0.25, 0.05) * n, s.c + rng.uniform(-0.25, 0.05) * n
    r_out = rng.uniform(30, 48) * u
    r_in = rng.uniform(11, 15) * u
    grass = s.color(((80, 140, 60), (96, 150, 70), (70, 128, 56)), 10)
    dirt = s.color(((176, 120, 84), (160, 108, 76), (190, 140, 100)), 10)
    d.pieslice(
        (hx - r_out - 1.5 * u, hy - r_out - 1.5 * u, hx + r_out + 1.5 * u, hy + r_out + 1.5 * u),
        -5,
        95,
        fill=dirt,
    )
    d.pieslice((hx - r_out, hy - r_out, hx + r_out, hy + r_out), -5, 95, fill=grass)
    stripe = rng.uniform(2.5, 5) * u
    for k, r in enumerate(np.arange(r_out, r_in, -stripe).tolist()):
        d.pieslice(
            (hx - r, hy - r, hx + r, hy + r), 0, 90, fill=_shade(grass, 1.08 if k % 2 else 0.94)
        )
    d.pieslice((hx - r_in, hy - r_in, hx + r_in, hy + r_in), 0, 90, fill=dirt)
    side = r_in * 0.62
    diamond = [
        (hx + 1.2 * u, hy + 1.2 * u),
        (hx + side, hy + 1.2 * u),
        (hx + side, hy + side),
        (hx + 1.2 * u, hy + side),
    ]
    d.polygon(diamond, fill=grass)
    for bx, by in ((hx + side, hy), (hx + side, hy + side), (hx, hy + side), (hx, hy)):
        d.rectangle((bx - 0.5 * u, by - 0.5 * u, bx + 0.5 * u, by + 0.5 * u), fill=WHITE)
    m = side / 2
    d.ellipse((hx + m - 1.2 * u, hy + m - 1.2 * u, hx + m + 1.2 * u, hy + m + 1.2 * u), fill=dirt)
    d.ellipse((hx - 2 * u, hy - 2 * u, hx + 2 * u, hy + 2 * u), fill=dirt)
    s.strip((hx, hy), (hx + r_out, hy), 0.35 * u, WHITE)
    s.strip((hx, hy), (hx, hy + r_out), 0.35 * u, WHITE)


def _circular_farmland(s: _Scene) -> None:
    """Centre-pivot irrigation: a lattice of crop circles on dry land, with wheel tracks."""
    rng, u, n, d = s.rng, s.u, s.n, s.draw
    s.texture(s.color(DRY + SAND, 10), s.color(DRY, 10), rng.uniform(10, 30), grain=0.3)
    r = rng.uniform(14, 34) * u
    pitch = 2 * r + rng.uniform(0.5, 5) * u
    ox, oy = rng.uniform(0, pitch, 2)
    for cx in np.arange(ox - pitch, n + pitch, pitch).tolist():
        for cy in np.arange(oy - pitch, n + pitch, pitch).tolist():
            if rng.random() < 0.1:
                continue
            crop = s.color(CROPS, 14)
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=crop)
            if rng.random() < 0.3:
                a = rng.uniform(0, 360)
                d.pieslice(
                    (cx - r, cy - r, cx + r, cy + r),
                    a,
                    a + rng.uniform(60, 200),
                    fill=s.color(CROPS, 14),
                )
            track = _shade(crop, 0.82)
            for rr in np.arange(rng.uniform(2, 4) * u, r, rng.uniform(3, 6) * u).tolist():
                d.ellipse(
                    (cx - rr, cy - rr, cx + rr, cy + rr),
                    outline=track,
                    width=max(1, round(0.3 * u)),
                )
            if rng.random() < 0.5:
                a = rng.uniform(0, 2 * math.pi)
                s.strip(
                    (cx, cy), (cx + r * math.cos(a), cy + r * math.sin(a)), 0.4 * u, (210, 210, 205)
                )


_RENDERERS: dict[str, Callable[[_Scene], None]] = {
    "farmland": _farmland,
    "meadow": _meadow,
    "forest": _forest,
    "water": _water,
    "river": _river,
    "beach": _beach,
    "desert": _desert,
    "dense_residential": _dense_residential,
    "sparse_residential": _sparse_residential,
    "industrial": _industrial,
    "parking": _parking,
    "road": _road,
    "intersection": _intersection,
    "runway": _runway,
    "baseball_field": _baseball_field,
    "circular_farmland": _circular_farmland,
}

CLASSES: tuple[str, ...] = tuple(_RENDERERS)
"""All class names. New classes are appended, so class indices (and seeds) stay stable."""


def _check_class(name: str) -> int:
    """Index of ``name`` in :data:`CLASSES`.

    Raises:
        ValueError: unknown class name (with close matches and the allowed names).
    """
    if name not in _RENDERERS:
        raise ValueError(
            f"class name must be one of the synthetic classes, but got {name!r}"
            f"{close_matches(str(name), CLASSES)} Allowed: {', '.join(CLASSES)}."
        )
    return CLASSES.index(name)


def _check_size(size: int) -> None:
    """Raise ``ValueError`` unless ``size`` is an integer of at least :data:`MIN_SIZE`."""
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, but got size={size!r}")


def _photometric(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Albedo noise, palette shift, contrast, illumination gradient, haze and sensor noise."""
    h = arr.shape[0]
    x = arr.astype(np.float32)
    gray = x.mean(axis=2, keepdims=True)
    x = gray + np.float32(rng.uniform(0.55, 1.3)) * (x - gray)
    mean = x.mean()
    x = mean + np.float32(rng.uniform(0.7, 1.25)) * (x - mean)
    gain = rng.normal(1.0, 0.08, 3) * rng.uniform(0.75, 1.25)
    x = x * gain.astype(np.float32) + rng.normal(0.0, 8.0, 3).astype(np.float32)
    gx, gy = _grid(h)
    theta = rng.uniform(0, 2 * math.pi)
    ca, sa = math.cos(theta), math.sin(theta)
    ramp = (gx * ca + gy * sa) * (1 / h) - 0.5 * (ca + sa)
    light = 1 + rng.uniform(0.0, 0.45) * ramp
    light *= 1 + rng.uniform(0.0, 0.25) * (_value_noise(rng, h, rng.uniform(2, 6)) - 0.5)
    x *= light[..., None]
    if rng.random() < 0.5:
        haze = rng.uniform(0, 0.3)
        veil = (rng.uniform(170, 230) + rng.normal(0, 8, 3)) * haze
        x = x * np.float32(1 - haze) + veil.astype(np.float32)
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(rng.uniform(1.5, 9.0))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def render(class_name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one random scene of ``class_name``.

    Args:
        class_name: One of :data:`CLASSES`.
        size: Side length of the square output image in pixels (at least :data:`MIN_SIZE`).
        rng: Source of all randomness; the same generator state gives the same image.

    Returns:
        A ``size`` x ``size`` x 3 ``uint8`` RGB array.

    Raises:
        ValueError: unknown class name or size below :data:`MIN_SIZE`.
        TypeError: ``rng`` is not a ``numpy.random.Generator``.
    """
    renderer = _RENDERERS[CLASSES[_check_class(class_name)]]
    _check_size(size)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, but got {type(rng).__name__}")
    ss = 2 if size <= _SUPERSAMPLE_UP_TO else 1
    view = size * ss
    n = math.ceil(view * math.sqrt(2)) + 2
    angle = rng.uniform(0, 2 * math.pi)
    scene = _Scene(rng, n, view / 64 * rng.uniform(0.7, 1.4), view, angle)
    renderer(scene)
    ca, sa = math.cos(angle), math.sin(angle)
    c = n / 2
    offset = view / 2
    matrix = (ca, -sa, c - ca * offset + sa * offset, sa, ca, c - sa * offset - ca * offset)
    if ss > 1:
        img = scene.img.transform(
            (view, view), Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST
        ).reduce(ss)
    else:
        img = scene.img.transform(
            (view, view), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR
        )
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8) * size / 64))
    return _photometric(np.asarray(img), rng)


def _normalise_format(image_format: str) -> str:
    """The extension for ``image_format`` (case and aliases folded), or ``ValueError``."""
    fmt = str(image_format).lower().lstrip(".")
    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(
            f"image_format must be one of {', '.join(FORMATS)}, but got {image_format!r}"
            f"{close_matches(fmt, list(FORMATS))}"
        )
    return fmt


def _read_marker(root: Path) -> dict | None:
    """Parameters recorded by the last completed :func:`generate` in ``root``, if any."""
    try:
        return json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _save(arr: np.ndarray, path: Path, fmt: str) -> None:
    """Write ``arr`` to ``path`` via a temporary file, so a file is either whole or absent."""
    tmp = path.with_name(f".{path.name}.part")
    options = {"quality": 95} if fmt == "jpg" else {}
    Image.fromarray(arr, "RGB").save(tmp, format=FORMATS[fmt], **options)
    os.replace(tmp, path)


def _remove_stale(root: Path, keep: set[Path]) -> None:
    """Delete generated images (and partial writes) of earlier runs that ``keep`` lacks."""
    suffixes = "|".join(FORMATS)
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name not in _RENDERERS:
            continue
        pattern = re.compile(rf"^(\..+\.part|{folder.name}_\d{{4,}}\.({suffixes}))$")
        for f in folder.iterdir():
            if f not in keep and pattern.match(f.name):
                f.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()


def generate(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    per_class: int = 60,
    size: int = 64,
    seed: int = 0,
    image_format: str = "png",
) -> Path:
    """Write a folder-per-class tree ``<root>/<class>/<class>_<NNNN>.<ext>`` of scenes.

    Image ``i`` of class ``c`` is ``render(c, size, default_rng([seed, CLASSES.index(c), i]))``.
    A ``.complete`` marker written last records the parameters: a call whose parameters match
    it returns at once, and an interrupted run (no marker) is redone. Calls from several
    processes are serialised by a file lock on ``<root>/.lock``. Generated images of other
    parameters (fewer images, other classes) are removed, so the tree matches the marker.

    Args:
        root: Output folder (created if missing).
        classes: Class names to generate (default: all of :data:`CLASSES`).
        per_class: Images per class (> 0).
        size: Image side length in pixels (>= :data:`MIN_SIZE`).
        seed: Non-negative base seed.
        image_format: ``png``, ``jpg`` or ``tif`` (``jpeg``/``tiff`` are accepted aliases).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: an unknown class (with close matches), duplicate classes,
            ``per_class <= 0``, ``size`` below the minimum, a negative seed or an
            unsupported format.
    """
    names = list(CLASSES if classes is None else classes)
    if isinstance(classes, str):
        raise ValueError(f"classes must be a list of class names, but got the string {classes!r}")
    for name in names:
        _check_class(name)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"classes must be distinct and non-empty, but got {names}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class <= 0:
        raise ValueError(f"per_class must be a positive integer, but got per_class={per_class!r}")
    _check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, but got seed={seed!r}")
    fmt = _normalise_format(image_format)

    root = Path(root)
    params = {
        "generator_version": GENERATOR_VERSION,
        "classes": names,
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "image_format": fmt,
    }
    if _read_marker(root) == params:
        return root
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        if _read_marker(root) == params:
            return root
        (root / _MARKER).unlink(missing_ok=True)
        paths = {
            name: [root / name / f"{name}_{i:04d}.{fmt}" for i in range(per_class)]
            for name in names
        }
        _remove_stale(root, {p for ps in paths.values() for p in ps})
        for name, files in paths.items():
            k = CLASSES.index(name)
            (root / name).mkdir(exist_ok=True)
            for i, path in enumerate(files):
                _save(render(name, size, np.random.default_rng([seed, k, i])), path, fmt)
        tmp = root / f"{_MARKER}.part"
        tmp.write_text(json.dumps(params, indent=1))
        os.replace(tmp, root / _MARKER)
    return root
